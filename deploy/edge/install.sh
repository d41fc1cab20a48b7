#!/usr/bin/env bash
# Install nonsite on an edge box (Debian/Ubuntu, systemd), from a checkout of the repository:
#
#   sudo deploy/edge/install.sh                      # user nonsite, venv /opt/nonsite, config /etc/nonsite,
#                                                    # data /var/lib/nonsite, unit nonsite-edge.service enabled
#   sudo deploy/edge/install.sh --config my-box.yaml # this box's cameras instead of the template
#   deploy/edge/install.sh --root /tmp/x --no-systemctl --no-venv   # dry install into a folder (no root needed)
#
# It never overwrites a config or an environment file that exists (re-running it upgrades the software and
# the unit only); with --config and an existing config it refuses and changes nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [--root DIR] [--no-systemctl] [--no-venv] [--config FILE] [--source DIR]
                  [--python PYTHON] [--torch-index URL]
  --root DIR         install under DIR instead of / (no user is created, nothing is chown'ed)
  --no-systemctl     do not run systemctl (daemon-reload, enable, start)
  --no-venv          do not create the virtual environment in /opt/nonsite (files and unit only)
  --config FILE      this box's config (default: deploy/config/edge.yaml as a template to edit)
  --source DIR       the nonsite checkout to install (default: the one this script is in)
  --python PYTHON    Python 3.11+ interpreter for the venv (default: python3)
  --torch-index URL  where the pinned torch comes from (default: the CPU wheels,
                     https://download.pytorch.org/whl/cpu; use https://pypi.org/simple for CUDA)
EOF
}

ROOT=/
SYSTEMCTL=1
VENV=1
CONFIG=
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=python3
TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    --no-venv) VENV=0; shift ;;
    --config) CONFIG=${2:?--config needs a file}; shift 2 ;;
    --source) SOURCE=${2:?--source needs a folder}; shift 2 ;;
    --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
    --torch-index) TORCH_INDEX=${2:?--torch-index needs a URL}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[ -f "$SOURCE/pyproject.toml" ] || die "$SOURCE is not a nonsite checkout (no pyproject.toml); pass --source"
UNIT_SRC="$SOURCE/deploy/edge/nonsite-edge.service"
TEMPLATE="$SOURCE/deploy/config/edge.yaml"
[ -f "$UNIT_SRC" ] || die "missing $UNIT_SRC"
if [ -n "$CONFIG" ]; then
  [ -f "$CONFIG" ] || die "--config $CONFIG: no such file"
fi

ROOT=${ROOT%/}
REAL_ROOT=0
if [ -z "$ROOT" ]; then
  REAL_ROOT=1
else
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" = / ] && { REAL_ROOT=1; ROOT=; }
fi
if [ "$REAL_ROOT" = 1 ] && [ "$(id -u)" != 0 ]; then
  die "installing into / needs root (sudo); for a dry install into a folder use --root DIR"
fi

ETC="$ROOT/etc/nonsite"
DATA="$ROOT/var/lib/nonsite"
OPT="$ROOT/opt/nonsite"
UNIT_DIR="$ROOT/etc/systemd/system"
CONF_DST="$ETC/nonsite.yaml"
ENV_DST="$ETC/nonsite.env"

# Refuse before changing anything.
if [ -n "$CONFIG" ] && [ -e "$CONF_DST" ]; then
  die "$CONF_DST exists; refusing to overwrite it (edit it, or move it away and run again)"
fi

step() { echo "==> $*"; }

# 1. the service user (only on the real system)
if [ "$REAL_ROOT" = 1 ]; then
  if ! getent passwd nonsite >/dev/null; then
    step "creating system user nonsite"
    useradd --system --user-group --home-dir /var/lib/nonsite --no-create-home --shell /usr/sbin/nologin nonsite
  fi
else
  step "--root $ROOT: no user created, ownership left to the caller"
fi

# 2. folders
step "folders: $OPT $ETC $DATA"
install -d -m 0755 "$OPT" "$UNIT_DIR"
install -d -m 0750 "$ETC" "$DATA" "$DATA/models" "$DATA/weights"
if [ "$REAL_ROOT" = 1 ]; then
  chown root:nonsite "$ETC"
  chown nonsite:nonsite "$DATA" "$DATA/models" "$DATA/weights"
fi

# 3. the virtual environment: torch pinned first (CPU wheels unless told otherwise), then nonsite
if [ "$VENV" = 1 ]; then
  step "virtual environment in $OPT (torch $TORCH_VERSION from $TORCH_INDEX)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than Python 3.11"
  "$PYTHON" -m venv "$OPT"
  "$OPT/bin/pip" install -q --upgrade pip setuptools wheel
  "$OPT/bin/pip" install -q --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  "$OPT/bin/pip" install -q -c "$SOURCE/constraints.txt" "${SOURCE}[torch]"
  "$OPT/bin/nonsite" --help >/dev/null
else
  step "--no-venv: $OPT/bin/nonsite not installed"
fi

# 4. config (never overwritten)
if [ -e "$CONF_DST" ]; then
  step "$CONF_DST exists: kept as it is"
else
  src=${CONFIG:-$TEMPLATE}
  step "config $CONF_DST (from $src)"
  install -m 0640 "$src" "$CONF_DST"
  [ "$REAL_ROOT" = 1 ] && chown root:nonsite "$CONF_DST"
fi

# 5. secrets and endpoints for the unit (never overwritten; root only, 0600)
if [ -e "$ENV_DST" ]; then
  step "$ENV_DST exists: kept as it is"
else
  step "environment file $ENV_DST (mode 0600): fill in every CHANGE-ME"
  (umask 077 && cat >"$ENV_DST" <<'EOF'
# nonsite edge: endpoints and secrets, read by systemd for nonsite-edge.service (root, mode 0600).
NONSITE_KAFKA_BOOTSTRAP=CHANGE-ME-kafka-1.city.local:9092,kafka-2.city.local:9092
NONSITE_S3_ENDPOINT=CHANGE-ME-minio.city.local:9000
NONSITE_S3_ACCESS_KEY=CHANGE-ME
NONSITE_S3_SECRET_KEY=CHANGE-ME
NONSITE_NTP_SERVER=ntp.example.city
NONSITE_MEDIA_DIR=/var/lib/nonsite/media
# Kafka SASL (bus.kafka.security_protocol SASL_*):
# NONSITE_KAFKA_USERNAME=
# NONSITE_KAFKA_PASSWORD=
# Camera passwords referenced as ${CAM_xxx_PASSWORD} in the config's source URLs:
# CAM_FENCE_02_PASSWORD=
EOF
  )
  chmod 0600 "$ENV_DST"
fi

# 6. the unit (always the current one)
step "unit $UNIT_DIR/nonsite-edge.service"
install -m 0644 "$UNIT_SRC" "$UNIT_DIR/nonsite-edge.service"

# 7. systemd
if [ "$SYSTEMCTL" = 1 ] && [ "$REAL_ROOT" = 1 ]; then
  systemctl daemon-reload
  systemctl enable nonsite-edge.service
  if grep -q CHANGE-ME "$ENV_DST"; then
    step "not started: fill in $ENV_DST, then: systemctl start nonsite-edge"
  else
    systemctl restart nonsite-edge.service
    step "started: systemctl status nonsite-edge; journalctl -u nonsite-edge -f"
  fi
else
  step "systemctl skipped"
fi

cat <<EOF
Done. Next:
  1. edit $CONF_DST (this box's cameras) and $ENV_DST (endpoints, secrets)
  2. put the detector weights in $DATA/models (e.g. yolo11n-coco.pt)
  3. check: set -a; . $ENV_DST; set +a; $OPT/bin/nonsite config check $CONF_DST
  4. systemctl restart nonsite-edge && curl -s localhost:9101/readyz
EOF
