"""Weights registry: resolution order, sha256 checks, error messages, local registration."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from nonsite.models import registry
from nonsite.models.cli import list_command
from nonsite.models.registry import (
    WeightsChecksumError,
    WeightsError,
    WeightsNotFound,
    get_entry,
    register,
    resolve,
)

PT_SHA = "ed9cf38c4a0a9ac7f6a39122661fb2d4e8efcc450d85d68ba73d688ce3e35e4b"
INT8_SHA = "5ea9b19c6c4d89041175fd2d4f9d2e1581d16f37b817021d547278fc5e2f2b58"


@pytest.fixture
def empty_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty NONSITE_MODELS_DIR and an empty cache."""
    models, cache = tmp_path / "models", tmp_path / "cache"
    models.mkdir()
    cache.mkdir()
    monkeypatch.setenv("NONSITE_MODELS_DIR", str(models))
    monkeypatch.setenv("NONSITE_WEIGHTS_CACHE", str(cache))
    return models, cache


def test_builtin_entries_match_the_shared_files(models_dir: Path) -> None:
    for name in ("yolo11n-coco", "yolo11n-coco-int8-320", "yolox-nano-coco-416"):
        e = get_entry(name)
        assert e is not None
        assert len(e.classes) == 80 and e.classes[0] == "person" and e.classes[5] == "bus" and e.classes[16] == "dog"
        digest = hashlib.sha256((models_dir / e.file).read_bytes()).hexdigest()
        assert digest == e.sha256, name


def test_name_resolves_from_models_dir(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NONSITE_MODELS_DIR", str(models_dir))
    r = resolve("yolo11n-coco", download=False)
    assert r.path == models_dir / "yolo11n-coco.pt"
    assert (r.sha256, r.format, r.source, r.name) == (PT_SHA, "pt", "NONSITE_MODELS_DIR", "yolo11n-coco")
    info = r.info()
    assert info.sha256 == PT_SHA and info.version == get_entry("yolo11n-coco").version and len(info.classes) == 80


def test_bare_file_name_resolves_to_its_entry(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NONSITE_MODELS_DIR", str(models_dir))
    r = resolve("yolo11n-coco-int8-320.onnx", download=False)
    assert r.name == "yolo11n-coco-int8-320" and r.sha256 == INT8_SHA and r.imgsz == 320


def test_cache_is_used_after_models_dir(empty_places: tuple[Path, Path], models_dir: Path) -> None:
    _, cache = empty_places
    (cache / "yolo11n-coco-int8-320.onnx").symlink_to(models_dir / "yolo11n-coco-int8-320.onnx")
    r = resolve("yolo11n-coco-int8-320", download=False)
    assert r.source == "cache" and r.path == cache / "yolo11n-coco-int8-320.onnx"


def test_explicit_path_is_matched_to_the_registry_by_sha(tmp_path: Path, models_dir: Path) -> None:
    copy = tmp_path / "renamed.onnx"
    shutil.copyfile(models_dir / "yolo11n-coco-int8-320.onnx", copy)
    r = resolve(str(copy))
    assert (r.name, r.sha256, r.source, r.path) == ("yolo11n-coco-int8-320", INT8_SHA, "path", copy)


def test_explicit_unregistered_path(tmp_path: Path, models_dir: Path) -> None:
    data = (models_dir / "yolo11n-coco-int8-320.onnx").read_bytes()[:-1]  # a different model, as far as hashes go
    p = tmp_path / "my-model.onnx"
    p.write_bytes(data)
    r = resolve(p)
    sha = hashlib.sha256(data).hexdigest()
    assert (r.name, r.sha256, r.format, r.version) == ("my-model", sha, "onnx", f"unregistered-{sha[:12]}")


def test_not_found_names_every_place_and_the_fix(empty_places: tuple[Path, Path]) -> None:
    models, cache = empty_places
    with pytest.raises(WeightsNotFound) as ei:
        resolve("yolo11n-coco-int8-320", download=False)
    msg = str(ei.value)
    assert str(models / "yolo11n-coco-int8-320.onnx") in msg
    assert str(cache / "yolo11n-coco-int8-320.onnx") in msg
    assert "download" in msg and "set NONSITE_MODELS_DIR" in msg
    assert len(ei.value.looked) == 3


def test_not_found_says_when_models_dir_is_unset(empty_places: tuple[Path, Path], monkeypatch) -> None:
    monkeypatch.delenv("NONSITE_MODELS_DIR")
    with pytest.raises(WeightsNotFound, match=r"\$NONSITE_MODELS_DIR: not set"):
        resolve("yolo11n-coco", download=False)


def test_unknown_name_lists_known_names(empty_places: tuple[Path, Path]) -> None:
    known = "known: street-yolo11n, yolo11n-coco, yolo11n-coco-int8-320, yolox-nano-coco-416"
    with pytest.raises(WeightsNotFound, match=known):
        resolve("yolo99-coco")


def test_sha256_mismatch_is_an_error(empty_places: tuple[Path, Path], models_dir: Path) -> None:
    models, _ = empty_places
    bad = models / "yolo11n-coco-int8-320.onnx"
    bad.write_bytes((models_dir / "yolo11n-coco-int8-320.onnx").read_bytes()[:100_000])  # truncated copy
    with pytest.raises(WeightsChecksumError) as ei:
        resolve("yolo11n-coco-int8-320", download=False)
    msg = str(ei.value)
    assert str(bad) in msg and INT8_SHA in msg and hashlib.sha256(bad.read_bytes()).hexdigest() in msg


def test_earlier_official_download_is_used_with_its_recorded_hash(
    empty_places: tuple[Path, Path], models_dir: Path
) -> None:
    _, cache = empty_places
    official = cache / "yolo11n.pt"
    official.symlink_to(models_dir / "yolo11n-coco.pt")
    rec = cache / "yolo11n.pt.json"
    rec.write_text(json.dumps({"sha256": PT_SHA, "version": "yolo11n-official"}))
    r = resolve("yolo11n-coco", download=False)
    assert (r.path, r.source, r.version, r.sha256) == (official, "download", "yolo11n-official", PT_SHA)
    rec.write_text(json.dumps({"sha256": "0" * 64, "version": "yolo11n-official"}))
    with pytest.raises(WeightsChecksumError, match="delete both files"):
        resolve("yolo11n-coco", download=False)


def test_register_a_trained_model(empty_places: tuple[Path, Path], tmp_path: Path, models_dir: Path) -> None:
    _, cache = empty_places
    trained = tmp_path / "runs" / "best.onnx"
    trained.parent.mkdir()
    shutil.copyfile(models_dir / "yolo11n-coco-int8-320.onnx", trained)
    e = register("street-dogs-v1", trained, ["dog", "thela"], "2025.1", imgsz=320)
    assert e.origin == "local" and e.classes == ("dog", "thela")
    on_disk = yaml.safe_load((cache / "registry.local.yaml").read_text())
    assert on_disk["street-dogs-v1"]["sha256"] == INT8_SHA and on_disk["street-dogs-v1"]["path"] == str(trained)
    r = resolve("street-dogs-v1", download=False)
    assert (r.path, r.classes, r.version, r.source) == (trained, ["dog", "thela"], "2025.1", "registered")
    # Listed, and re-registering replaces the entry.
    out = io.StringIO()
    assert list_command(out) == 0 and "street-dogs-v1" in out.getvalue() and "(local)" in out.getvalue()
    register("street-dogs-v1", trained, ["dog"], "2025.2")
    assert resolve("street-dogs-v1", download=False).version == "2025.2"
    # The file changing under the registry is caught.
    trained.write_bytes(b"retrained but not re-registered")
    with pytest.raises(WeightsChecksumError):
        resolve("street-dogs-v1", download=False)


def test_register_refuses_builtin_names_and_missing_files(empty_places: tuple[Path, Path], models_dir: Path) -> None:
    with pytest.raises(WeightsError, match="built-in"):
        register("yolo11n-coco", models_dir / "yolo11n-coco.pt", ["person"], "x")
    with pytest.raises(WeightsNotFound, match="does not exist"):
        register("x", "/nonexistent/best.pt", ["person"], "1")


def test_broken_local_registry_names_the_file(empty_places: tuple[Path, Path]) -> None:
    _, cache = empty_places
    (cache / "registry.local.yaml").write_text("mine:\n  file: a.pt\n  format: tflite\n")
    with pytest.raises(WeightsError, match=r"registry.local.yaml: entry 'mine' field 'format'"):
        registry.load_registry()


def test_importing_the_package_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nonsite.models, nonsite.models.cli; "
        "print(sorted(m for m in ('torch', 'torchvision', 'ultralytics', 'onnxruntime') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
