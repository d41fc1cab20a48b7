# nonsite — the two commands a newcomer needs: `make run` (the demo, end to end) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SHARED := $(abspath ../shared)
# Weights and media are resolved by path, never committed: ../shared beside the repo when present.
export NONSITE_MODELS_DIR ?= $(if $(wildcard $(SHARED)/models),$(SHARED)/models,)
export NONSITE_MEDIA_DIR ?= $(if $(wildcard $(SHARED)/media),$(SHARED)/media,)
# Extra pip arguments for torch (e.g. a CPU wheel index on machines with internet).
TORCH_PIP_ARGS ?=
CONFIG ?= examples/demo.yaml
DEBIAN_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
# The console's browser tests drive Debian's headless Chromium (never `playwright install`); the CJK font
# makes the Chinese pages legible in their screenshots.
DEBIAN_PACKAGES += chromium fonts-noto-cjk
# Cases: a TrueType CJK font embedded in case PDFs, poppler (PDF to image/text in tests), PostgreSQL.
DEBIAN_PACKAGES += fonts-wqy-zenhei poppler-utils postgresql
# Deploy checks (tests/test_deploy.py): promtool (Prometheus config, rules and their unit tests), shellcheck
# (deploy/edge/install.sh), systemd-analyze (deploy/edge/nonsite-edge.service).
DEBIAN_PACKAGES += prometheus shellcheck systemd

.PHONY: setup run run-once run-distributed test lint fmt bench schema services system-deps clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt $(TORCH_PIP_ARGS) torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[torch,dev]'
	@touch $@

# Browser libraries the console serves from its own origin (ECharts for /stats; no CDN), installed from
# console/vendor/package-lock.json and copied to console/static/vendor/ (gitignored). Without them /stats shows
# its tables only.
CONSOLE_VENDOR := console/static/vendor/echarts.min.js
setup: $(CONSOLE_VENDOR)

$(CONSOLE_VENDOR): console/vendor/package.json console/vendor/package-lock.json
	cd console/vendor && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $@) && cp console/vendor/node_modules/echarts/dist/echarts.min.js $@

run: setup
	$(PY) -m nonsite run --config $(CONFIG)

run-once: setup
	$(PY) -m nonsite run --config $(CONFIG) --exit-when-done

test: setup services
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# npm servers the tests start (s3rver: an S3 server that keeps its data on disk), from package-lock.json.
services: tests/services/node_modules/.install-done

tests/services/node_modules/.install-done: tests/services/package.json tests/services/package-lock.json
	cd tests/services && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The demo in distributed mode: a Kafka-protocol broker and an S3 server on loopback, then the edge, the
# sealer and the drafter as separate processes (examples/distributed.yaml); same cases as `make run`.
run-distributed: setup
	$(PY) tests/services/run_distributed.py --config examples/distributed.yaml

lint: setup
	$(PY) -m ruff check .

fmt: setup
	$(PY) -m ruff check --fix .

# Speed, measured side by side on this machine: writes bench/results/latest.json and latest.md (~10 min on 2 cores).
bench: setup
	$(PY) bench/run.py

schema: setup
	$(PY) -m nonsite config schema --out docs/config.schema.json
	$(PY) -m nonsite bus schemas --out docs/schemas

# Debian packages the integration tests use (a real RTSP server; a CJK font for the plate tests). Needs root; CI runs it.
system-deps:
	@if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" 2>/dev/null \
	   || ! command -v gst-inspect-1.0 >/dev/null || ! gst-inspect-1.0 x264enc >/dev/null 2>&1 \
	   || ! command -v chromium >/dev/null || ! fc-list :lang=zh | grep -q . \
	   || ! test -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc || ! command -v pdftoppm >/dev/null \
	   || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
	   || ! test -f /usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc \
	   || ! command -v promtool >/dev/null || ! command -v shellcheck >/dev/null \
	   || ! command -v systemd-analyze >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_PACKAGES); \
	fi

clean:
	rm -rf data build *.egg-info .pytest_cache .ruff_cache
