"""The packages point one way (docs/architecture.md, "Packages and the one-way rule").

Every ``nonsite.*`` import in the package's source (top-level and inside functions, absolute and relative) is
checked against the layer table below; a new top-level package must be placed in it. And the central roles
(sealer, drafter, console), imported in a fresh interpreter, load no detection code at all.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NEUTRAL = frozenset({"config", "bus", "ops"})
ALLOWED: dict[str, frozenset[str]] = {
    # the neutral bottom: the config models, the event contracts and the bus, operations (health, clock)
    "config": frozenset(),
    "bus": frozenset({"config"}),
    "ops": frozenset({"config", "bus"}),
    # the edge's building blocks
    "streams": NEUTRAL,
    "models": NEUTRAL,
    # the central side: never the edge's packages (they would load a model or open a camera)
    "evidence": NEUTRAL,
    "cases": NEUTRAL | {"evidence"},
    "console": NEUTRAL | {"evidence", "cases"},
    # the edge path
    "pipeline": NEUTRAL | {"streams", "models", "evidence"},
}
COMPOSITION_ROOT = frozenset({"app", "cli", "__main__", "__init__", "bench"})
"""Modules at the top (``app.py``, ``cli.py``) and the benchmarks wire everything together: they may import all."""
NOT_SOURCE = frozenset({"tests", "deploy", "docs", "examples", "data", ".venv", "node_modules"})

CENTRAL_ROLES = ("nonsite.evidence.sealer", "nonsite.cases.drafter", "nonsite.console.app", "nonsite.cli")
DETECTION_MODULES = ("nonsite.pipeline", "nonsite.streams", "nonsite.models",
                     "cv2", "torch", "supervision", "openvino", "onnxruntime", "ultralytics")


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _targets(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """The top-level nonsite packages an import statement reaches (``nonsite.X...`` -> ``X``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level:  # relative: resolve against the module's own package
        base = ["nonsite", *path.relative_to(ROOT).parent.parts]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join([*base, node.module] if node.module else base)
        names = [module] if node.module or len(base) > 1 else [f"{module}.{a.name}" for a in node.names]
    elif node.module == "nonsite":  # from nonsite import pipeline
        names = [f"nonsite.{a.name}" for a in node.names]
    else:
        names = [node.module or ""]
    return [n.split(".")[1] for n in names if n.startswith("nonsite.")]


def import_violations(path: Path, source: str | None = None) -> list[str]:
    """Each import in ``path`` that points the wrong way, as ``file:line: a -> b``."""
    package = _package_of(path)
    if package in COMPOSITION_ROOT:
        return []
    allowed = ALLOWED.get(package)
    if allowed is None:
        return [f"{path.relative_to(ROOT)}: package '{package}' is not in the layer table (tests/test_architecture.py)"]
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(node, path):
                if target != package and target not in allowed:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {package} -> {target}")
    return out


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not NOT_SOURCE & set(p.relative_to(ROOT).parts))


def test_every_package_is_placed_and_every_import_points_down() -> None:
    sources = _sources()
    assert len(sources) > 100 and {_package_of(p) for p in sources} >= set(ALLOWED)
    assert [v for p in sources for v in import_violations(p)] == []


@pytest.mark.parametrize(("where", "statement", "wrong"), [
    ("pipeline/control.py", "from nonsite.console.cameras import CameraStatus", "pipeline -> console"),
    ("console/views.py", "def f():\n    from nonsite.pipeline.edge import EdgeRunner", "console -> pipeline"),
    ("evidence/sealer.py", "import nonsite.models.base", "evidence -> models"),
    ("cases/drafter.py", "from nonsite import streams", "cases -> streams"),
    ("cases/drafter.py", "from ..pipeline import rules", "cases -> pipeline"),
    ("config/detector.py", "from nonsite.models import create_detector", "config -> models"),
    ("bus/events.py", "from nonsite.evidence.store import Store", "bus -> evidence"),
    ("streams/base.py", "from nonsite.pipeline.detections import merge_class_group", "streams -> pipeline"),
])
def test_a_wrong_import_is_caught(where: str, statement: str, wrong: str) -> None:
    path = ROOT / where
    assert import_violations(path) == []
    found = import_violations(path, path.read_text(encoding="utf-8") + "\n" + statement + "\n")
    assert len(found) == 1 and found[0].endswith(wrong)


def test_the_composition_root_and_allowed_arrows_pass() -> None:
    assert import_violations(ROOT / "app.py", "from nonsite.pipeline.edge import EdgeRunner\n") == []
    assert import_violations(ROOT / "pipeline/edge.py", "from nonsite.evidence.store import Store\n") == []
    assert import_violations(ROOT / "console/views.py", "from ..cases import queries\n") == []


@pytest.mark.parametrize("module", CENTRAL_ROLES)
def test_central_roles_load_no_detection_code(module: str) -> None:
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert module in loaded
    below = tuple(d + "." for d in DETECTION_MODULES)
    assert [m for m in loaded if m in DETECTION_MODULES or m.startswith(below)] == []
