"""deploy/: what an integrator runs, checked with the real tools where they exist offline.

promtool (Debian's prometheus package) checks the Prometheus configs and rules and runs the rules' unit
tests; the compose file is validated against the Compose Specification schema; the Kubernetes manifests
against the Kubernetes 1.30 OpenAPI schemas (kubernetes-validate, strict); install.sh with shellcheck and a
dry install into a temp dir; the systemd unit with systemd-analyze. Every metric the alerts and the
dashboard read must be defined in the code. No Docker engine or cluster is needed (nor used).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "nonsite.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "nonsite.json"
K8S = DEPLOY / "k8s"
ROLES = {"edge", "pool", "sealer", "drafter", "console"}
K8S_VERSION = "1.30.0"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian: prometheus, shellcheck, systemd)")
    return path


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


# --- Prometheus ------------------------------------------------------------------------------------------


def _with_token_files(cfg: dict[str, Any], folder: Path) -> None:
    """Point every scrape job's bearer-token file at a real file under ``folder`` (promtool opens it; the real
    one is mounted into the Prometheus container from a secret)."""
    for job in cfg["scrape_configs"]:
        if "authorization" in job:
            token = folder / f"{job['job_name']}.token"
            token.write_text("a-token-for-promtool-0123456789\n")
            job["authorization"]["credentials_file"] = str(token)


def test_promtool_checks_the_compose_config_and_its_rules(tmp_path: Path) -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    _with_token_files(cfg, tmp_path)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    r = run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "rules found" in r.stdout  # the rule files were found and checked too


def test_promtool_checks_the_kubernetes_config(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes service discovery, so the pod discovery block is swapped
    for a static target; everything else (relabelling, rule files) is checked as written."""
    cfg = yaml.safe_load((PROM / "prometheus-k8s.yml").read_text())
    for job in cfg["scrape_configs"]:
        assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["nonsite"]}}]
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["pod:9104"]}]
    console = next(j for j in cfg["scrape_configs"] if j["job_name"] == "nonsite-console")
    assert console["authorization"]["credentials_file"]  # the console's /metrics needs its token
    _with_token_files(cfg, tmp_path)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    r = run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_checks_the_rules() -> None:
    r = run([tool("promtool"), "check", "rules", str(RULES)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    tests = sorted(str(p) for p in (PROM / "tests").glob("*.yml"))
    assert tests
    r = run([tool("promtool"), "test", "rules", *tests])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(tests)


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for p in (PROM / "tests").glob("*.yml"):
        for t in yaml.safe_load(p.read_text())["tests"]:
            for a in t.get("alert_rule_test", []):
                (firing if a.get("exp_alerts") else silent).add(a["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


def test_alerts_of_the_issue_exist_with_severity_and_plain_words() -> None:
    alerts = {a["alert"]: a for a in _alerts()}
    for needed in ("NonsiteCameraDown", "NonsiteConsumerLagGrowing", "NonsiteSpoolAbove80Percent",
                   "NonsiteClockDrift", "NonsiteEvidenceVerifyFailed", "NonsiteBrokerDown",
                   "NonsiteEvidenceStoreDown", "NonsiteSpoolRejecting", "NonsiteDeadLetters", "NonsiteTargetDown"):
        assert needed in alerts
    assert alerts["NonsiteCameraDown"]["for"] == "5m"
    for name, a in alerts.items():
        assert a["labels"]["severity"] in {"critical", "warning"}, name
        for key in ("summary", "description", "runbook"):
            assert a["annotations"].get(key, "").strip(), f"{name}: no {key}"
        assert "docs/deploy.md#" in a["annotations"]["runbook"], name


def test_every_runbook_hint_points_at_a_section_of_the_deploy_guide() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for a in _alerts():
        anchor = re.search(r"docs/deploy\.md#([a-z0-9-]+)", a["annotations"]["runbook"]).group(1)
        assert f'<a id="{anchor}"></a>' in doc, f"{a['alert']}: docs/deploy.md has no #{anchor}"


# --- metric names: everything the alerts and the dashboard read is defined in the code ----------------------

_DEFINE = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|CounterMetricFamily|GaugeMetricFamily|HistogramMetricFamily|"
    r"SummaryMetricFamily|InfoMetricFamily)\(\s*[\"'](nonsite_[a-z0-9_]+)[\"']"
)
_SKIP_DIRS = {"tests", "deploy", ".venv", "node_modules", "build", ".git"}


def defined_metrics() -> set[str]:
    """Series names the code exposes, from its Counter/Gauge/Histogram/... definitions (with the suffixes
    prometheus-client adds)."""
    out: set[str] = set()
    for path in ROOT.rglob("*.py"):
        if _SKIP_DIRS & set(path.relative_to(ROOT).parts[:-1]):
            continue
        for kind, name in _DEFINE.findall(path.read_text(encoding="utf-8", errors="replace")):
            if kind.startswith("Counter"):
                base = name.removesuffix("_total")
                out |= {base + "_total", base + "_created"}
            elif kind.startswith("Histogram"):
                out |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
            elif kind.startswith("Summary"):
                out |= {name, name + "_sum", name + "_count"}
            elif kind.startswith("Info"):
                out.add(name + "_info")
            else:
                out.add(name)
    return out


def referenced_metrics() -> dict[str, set[str]]:
    exprs: dict[str, list[str]] = {"rules": [], "dashboard": []}
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        exprs["rules"] += [r["expr"] for r in g["rules"]]
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        exprs["dashboard"] += [t["expr"] for t in p.get("targets", [])]
    return {k: {m for e in v for m in re.findall(r"\bnonsite_[a-z0-9_]+", e)} for k, v in exprs.items()}


def test_the_code_scan_finds_the_metrics_that_exist() -> None:
    found = defined_metrics()
    for name in ("nonsite_camera_up", "nonsite_frames_processed_total", "nonsite_detector_latency_seconds_bucket",
                 "nonsite_bus_consumer_lag", "nonsite_bus_dead_letters_total", "nonsite_evidence_spool_bytes"):
        assert name in found


def test_every_metric_in_the_alerts_and_the_dashboard_is_defined_in_the_code() -> None:
    defined = defined_metrics()
    refs = referenced_metrics()
    assert refs["rules"] and refs["dashboard"]
    missing = {where: sorted(names - defined) for where, names in refs.items() if names - defined}
    assert not missing, f"metrics read by deploy/ but defined nowhere in the code: {missing}"


# --- Grafana --------------------------------------------------------------------------------------------


def test_dashboard_has_the_panels_an_operator_looks_for() -> None:
    d = json.loads(DASHBOARD.read_text())
    panels = [p for p in d["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in panels)
    for words in ("cameras up", "per second, per camera", "detector latency", "events per type", "consumer lag",
                  "spool", "evidence write latency", "cases by status", "clock offset", "cameras per worker"):
        assert words in titles, words
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert "histogram_quantile(0.95" in exprs and "histogram_quantile(0.5" in exprs
    assert "rate(nonsite_frames_processed_total" in exprs
    assert "nonsite_evidence_spool_bytes / nonsite_evidence_spool_max_bytes" in exprs


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/nonsite.yml").read_text())
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[prov["providers"][0]["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


# --- compose --------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def role_ports(config: Path) -> dict[str, int]:
    cfg = yaml.safe_load(config.read_text())
    ports = {r: cfg[r]["metrics"]["port"] for r in ("edge", "sealer", "drafter", "pool")}
    ports["console"] = cfg["console"]["port"]
    return ports


def test_compose_files_validate_against_the_compose_specification() -> None:
    import importlib.resources

    import jsonschema

    schema = json.loads(
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    for name in ("compose.yaml", "compose.gpu.yaml"):
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(
            (DEPLOY / name).read_text()))]
        assert errors == [], name


def test_compose_runs_every_role_with_a_readiness_healthcheck() -> None:
    c = compose()
    services = c["services"]
    for infra in ("kafka", "minio", "minio-init", "postgres", "prometheus", "grafana"):
        assert infra in services
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "--with-lock" in services["minio-init"]["command"][0]
    roles: dict[str, str] = {}
    for name, s in services.items():
        assert "image" in s or "build" in s, name
        if name != "minio-init":
            assert "healthcheck" in s, f"{name} has no healthcheck"
        for dep in s.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        if s.get("image", "").startswith("${NONSITE_IMAGE"):
            cmd = s["command"]
            assert cmd[0] in ROLES, f"{name}: {cmd[0]} is not a nonsite role"
            assert cmd[1] == "--config" and cmd[2].startswith("/etc/nonsite/")
            config = DEPLOY / "config" / Path(cmd[2]).name
            assert config.is_file(), cmd[2]
            port = role_ports(config)[cmd[0]]
            assert f"http://127.0.0.1:{port}/readyz" in " ".join(s["healthcheck"]["test"]), name
            roles[cmd[0]] = name
    assert set(roles) == ROLES
    assert services["pool"]["deploy"]["replicas"] == 2
    assert services["sealer"]["environment"]["NONSITE_SIGNING_KEY"].startswith("/var/lib/nonsite/")


def test_prometheus_scrapes_every_compose_role_on_its_metrics_port() -> None:
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets: dict[str, str] = {}
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                targets[job["job_name"]] = t
        for sd in job.get("dns_sd_configs", []):
            targets[job["job_name"]] = f"{sd['names'][0]}:{sd['port']}"
    ports = role_ports(DEPLOY / "config" / "nonsite.yaml")
    services = compose()["services"]
    for role in ROLES:
        host, port = targets[f"nonsite-{role}"].split(":")
        assert host in services and int(port) == ports[role], role
    # the console's /metrics answers its metrics token only: Prometheus reads it from the compose secret that
    # carries the console's NONSITE_METRICS_TOKEN
    console_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "nonsite-console")
    secret_file = console_job["authorization"]["credentials_file"]
    (secret,) = services["prometheus"]["secrets"]
    assert secret_file == f"/run/secrets/{secret}"
    env_name = compose()["secrets"][secret]["environment"]
    cfg = yaml.safe_load((DEPLOY / "config" / "nonsite.yaml").read_text())
    assert cfg["console"]["metrics_token_env"] == env_name and env_name in services["console"]["environment"]


def test_env_example_names_every_required_secret_with_placeholders_only() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    env = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    assert required and required <= set(env)
    for key, value in env.items():
        if any(w in key for w in ("PASSWORD", "SECRET")):
            assert value == "CHANGE-ME", f"{key} must be a placeholder in .env.example"
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()



def commented_integration(path: Path) -> dict[str, Any]:
    """The ``integration:`` example a deploy config carries commented out, as YAML."""
    m = re.search(r"^# integration:\n(?:#.*\n?)+", path.read_text(encoding="utf-8"), re.M)
    assert m, f"no commented integration example in {path}"
    return yaml.safe_load("\n".join(line[2:] for line in m.group(0).splitlines()))["integration"]


def env_example() -> dict[str, str]:
    """deploy/.env.example's variables, the commented-out optional ones included."""
    return dict(m.groups() for m in re.finditer(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$",
                                               (DEPLOY / ".env.example").read_text(), re.M))


@pytest.mark.parametrize("config", ["deploy/config/nonsite.yaml", "deploy/k8s/config/nonsite.yaml"])
def test_the_integration_secrets_come_from_the_env_file_and_the_k8s_secret(config: str) -> None:
    """The platform's HMAC secrets, the evidence-link secret and the channels' webhook URLs, DingTalk secret and
    SMS credential: the config example names variables only; .env.example and the Kubernetes Secret example
    provide each, with placeholders; compose hands the console the env file, Kubernetes the Secret."""
    from nonsite.config.integration import IntegrationConfig

    integration = IntegrationConfig.model_validate(commented_integration(ROOT / config))
    p, n = integration.platform, integration.notifications
    assert p.enabled and n.enabled and {c.kind for c in n.channels} == {"wecom", "dingtalk", "sms"}
    names = {p.secret_env, p.callback_secret_env, p.link_secret_env}
    names |= {v for c in n.channels for v in (c.url_env, c.secret_env, c.auth_env) if v}
    assert {"NONSITE_PLATFORM_SECRET", "NONSITE_PLATFORM_CALLBACK_SECRET", "NONSITE_EVIDENCE_LINK_SECRET"} <= names
    env = env_example()
    secret = next(o for o in load_yaml_docs(K8S / "secret.example.yaml")
                  if o["metadata"]["name"] == "nonsite-secrets")["stringData"]
    for name in names:
        assert name in env and name in secret, name
        if name != "NONSITE_SMS_GATEWAY_URL":  # the gateway's address is no secret; its credential is
            assert "CHANGE-ME" in env[name] and "PLACEHOLDER" in secret[name], name
    console = compose()["services"]["console"]
    assert ".env" in console["env_file"]
    (k8s_console,) = next(o for o in k8s_objects() if o["metadata"]["name"] == "console")["spec"]["template"][
        "spec"]["containers"]
    assert {"secretRef": {"name": "nonsite-secrets"}} in k8s_console["envFrom"]


# --- the config files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["deploy/config/nonsite.yaml", "deploy/config/edge.yaml",
                                    "deploy/k8s/config/nonsite.yaml"])
def test_nonsite_config_check_passes(config: str, media_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NONSITE_KAFKA_BOOTSTRAP": "kafka:9092", "NONSITE_S3_ENDPOINT": "minio:9000",
           "NONSITE_DATABASE_URL": "postgresql+psycopg://nonsite:pw@postgres:5432/nonsite",
           "NONSITE_MEDIA_DIR": str(media_dir), "NONSITE_DATA_DIR": str(tmp_path / "data"),
           "CAM_CARPARK_01_PASSWORD": "pw", "CAM_JUNCTION_03_PASSWORD": "pw"}
    r = run([sys.executable, "-m", "nonsite", "config", "check", config], cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


# --- Kubernetes ------------------------------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/k8s` applies: the listed resources and the generated ConfigMaps."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objs = [d for f in kust["resources"] for d in load_yaml_docs(K8S / f)]
    for gen in kust["configMapGenerator"]:
        data: dict[str, str] = {}
        for f in gen.get("files", []):
            key, _, src = f.partition("=")
            data[key] = (K8S / src).read_text(encoding="utf-8")
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return objs


def test_k8s_manifests_validate_against_the_kubernetes_schema() -> None:
    import kubernetes_validate

    objs = k8s_objects() + load_yaml_docs(K8S / "secret.example.yaml") + load_yaml_docs(
        K8S / "optional" / "edge-daemonset.yaml")
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Secret", "DaemonSet"} <= kinds
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_k8s_schema_validation_catches_a_mistake() -> None:
    import kubernetes_validate

    hpa = next(o for o in k8s_objects() if o["kind"] == "HorizontalPodAutoscaler")
    hpa["spec"]["maxReplica"] = hpa["spec"].pop("maxReplicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_kubectl_kustomize_builds_the_same_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # not packaged for current Debian; k8s_objects() assembles what it would
        pytest.skip("kubectl is not installed")
    r = run([kubectl, "kustomize", str(K8S)])
    assert r.returncode == 0, r.stderr
    built = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"])
             for d in yaml.safe_load_all(r.stdout) if d}
    assert built == {(o["kind"], o["metadata"]["name"]) for o in k8s_objects()}


def test_k8s_workloads_have_probes_resources_config_and_secrets() -> None:
    objs = k8s_objects()
    workloads = {o["metadata"]["name"]: o for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    assert set(workloads) == {"console", "sealer", "drafter", "pool"}
    assert workloads["pool"]["spec"]["replicas"] == 3
    ports = role_ports(K8S / "config" / "nonsite.yaml")
    for name, w in workloads.items():
        pod = w["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["args"][:3] == [name, "--config", "/etc/nonsite/nonsite.yaml"]
        (port,) = c["ports"]
        assert port["containerPort"] == ports[name]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
        assert {"secretRef": {"name": "nonsite-secrets"}} in c["envFrom"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["config"]["configMap"]["name"] == "nonsite-config"
    sealer_vols = {v["name"]: v for v in workloads["sealer"]["spec"]["template"]["spec"]["volumes"]}
    assert sealer_vols["signing-key"]["secret"]["secretName"] == "nonsite-signing-key"
    cfg = yaml.safe_load((K8S / "config" / "nonsite.yaml").read_text())
    assert cfg["evidence"]["signing_key"] == "/run/secrets/nonsite/signing.pem"
    pdbs = {o["metadata"]["name"] for o in objs if o["kind"] == "PodDisruptionBudget"}
    assert {"sealer", "drafter", "pool"} <= pdbs


def test_k8s_every_variable_of_the_config_is_provided() -> None:
    text = (K8S / "config" / "nonsite.yaml").read_text()
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))  # those without a default
    endpoints = next(o for o in k8s_objects() if o["metadata"]["name"] == "nonsite-endpoints")["data"]
    secret = next(o for o in load_yaml_docs(K8S / "secret.example.yaml")
                  if o["metadata"]["name"] == "nonsite-secrets")["stringData"]
    assert needed and needed <= set(endpoints) | set(secret)


def test_k8s_sealer_and_drafter_scale_on_consumer_lag_served_by_the_adapter() -> None:
    objs = k8s_objects()
    workloads = {(o["kind"], o["metadata"]["name"]) for o in objs}
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["external"]
    assert rule["seriesQuery"].startswith("nonsite_bus_consumer_lag{")
    partitions = yaml.safe_load((K8S / "config" / "nonsite.yaml").read_text())["bus"]["kafka"]["partitions"]
    hpas = {o["metadata"]["name"]: o for o in objs if o["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"sealer", "drafter"}
    for name, h in hpas.items():
        ref = h["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in workloads
        (m,) = h["spec"]["metrics"]
        assert m["type"] == "External"
        assert m["external"]["metric"]["name"] == rule["name"]["as"]
        assert m["external"]["metric"]["selector"]["matchLabels"] == {"group": f"nonsite-{name}"}
        assert h["spec"]["maxReplicas"] <= partitions  # more members than partitions would sit idle


# --- images ---------------------------------------------------------------------------------------------


def test_images_pin_torch_run_as_a_user_and_have_a_healthcheck() -> None:
    cpu = (DEPLOY / "docker" / "Dockerfile").read_text()
    gpu = (DEPLOY / "docker" / "Dockerfile.gpu").read_text()
    assert "python:3.11-slim" in cpu
    assert re.search(r"--index-url https://download.pytorch.org/whl/cpu torch==2\.13\.0", cpu)
    assert "nvidia/cuda:" in gpu and "torch==2.13.0" in gpu and "onnxruntime-gpu" in gpu and "tensorrt" in gpu
    for text in (cpu, gpu):
        assert re.search(r"^USER nonsite", text, re.M)
        assert re.search(r"^HEALTHCHECK ", text, re.M)
        assert 'ENTRYPOINT ["nonsite"]' in text
        assert "-c /src/constraints.txt" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "node_modules", "deploy/.env"} <= set(ignored)


# --- edge box -------------------------------------------------------------------------------------------

INSTALL = DEPLOY / "edge" / "install.sh"
UNIT = DEPLOY / "edge" / "nonsite-edge.service"


def test_install_script_passes_shellcheck() -> None:
    r = run([tool("shellcheck"), str(INSTALL)])
    assert r.returncode == 0, r.stdout


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(INSTALL), "--root", str(root), "--no-systemctl", "--no-venv", *args])


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_dry_install_lays_out_the_box_and_never_overwrites_a_config(tmp_path: Path) -> None:
    root = tmp_path / "box"
    r = _install(root)
    assert r.returncode == 0, r.stdout + r.stderr
    conf = root / "etc/nonsite/nonsite.yaml"
    env = root / "etc/nonsite/nonsite.env"
    unit = root / "etc/systemd/system/nonsite-edge.service"
    assert conf.read_text() == (DEPLOY / "config" / "edge.yaml").read_text()
    assert unit.read_text() == UNIT.read_text()
    assert _mode(conf) == 0o640 and _mode(env) == 0o600 and _mode(root / "var/lib/nonsite") == 0o750
    assert (root / "opt/nonsite").is_dir() and (root / "var/lib/nonsite/models").is_dir()
    assert "NONSITE_S3_SECRET_KEY=CHANGE-ME" in env.read_text()

    conf.write_text("# this box's own cameras\n")
    env.write_text("NONSITE_S3_SECRET_KEY=real\n")
    r = _install(root, "--config", str(DEPLOY / "config" / "nonsite.yaml"))
    assert r.returncode != 0 and "refusing to overwrite" in r.stderr
    assert conf.read_text() == "# this box's own cameras\n"
    r = _install(root)  # a re-run (upgrade) keeps both files
    assert r.returncode == 0, r.stderr
    assert conf.read_text() == "# this box's own cameras\n" and env.read_text() == "NONSITE_S3_SECRET_KEY=real\n"


def test_install_rejects_bad_arguments_before_changing_anything(tmp_path: Path) -> None:
    r = run(["bash", str(INSTALL), "--bogus"])
    assert r.returncode != 0 and "unknown argument: --bogus" in r.stderr
    r = _install(tmp_path / "x", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode != 0 and "no such file" in r.stderr
    assert not (tmp_path / "x" / "etc").exists()


def test_systemd_unit_verifies_and_is_hardened() -> None:
    r = run([tool("systemd-analyze"), "verify", str(UNIT)])
    # The only complaint allowed: the venv that install.sh creates is not on this machine.
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "/opt/nonsite/bin/nonsite is not executable" not in line]
    assert problems == []
    text = UNIT.read_text()
    for line in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/nonsite",
                 "EnvironmentFile=/etc/nonsite/nonsite.env", "After=network-online.target time-sync.target",
                 "ExecStart=/opt/nonsite/bin/nonsite edge --config /etc/nonsite/nonsite.yaml", "User=nonsite"):
        assert line in text.splitlines(), line
