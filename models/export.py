"""Export an ultralytics ``.pt`` to ONNX once and cache it in the weights cache; and the ``nonsite models
export`` command (:func:`export_model`), which writes a standalone ONNX or OpenVINO export and registers it.

The export lives at ``<cache>/<name>-<imgsz>.onnx`` with ``<same>.json`` beside it recording the source
sha256 and imgsz; it is re-exported when either changes (or the files are missing). The export has a
dynamic batch and input size, so one file serves batches of any size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nonsite.models.registry import RegistryEntry, ResolvedWeights, WeightsError, cache_dir

log = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1
"""Bumped when the export settings change, so old cached exports are redone."""


def export_paths(weights: ResolvedWeights, imgsz: int) -> tuple[Path, Path]:
    base = cache_dir() / f"{weights.name}-{imgsz}"
    return base.with_suffix(".onnx"), base.with_suffix(".onnx.json")


def cached_export(weights: ResolvedWeights, imgsz: int) -> Path | None:
    """The cached ONNX for these weights and imgsz, or None when it is missing or stale."""
    onnx_path, meta_path = export_paths(weights, imgsz)
    if not (onnx_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (
        meta.get("source_sha256") == weights.sha256
        and meta.get("imgsz") == imgsz
        and meta.get("format_version") == EXPORT_FORMAT_VERSION
        and meta.get("onnx_bytes") == onnx_path.stat().st_size
    )
    return onnx_path if ok else None


@contextlib.contextmanager
def _lock(path: Path):  # type: ignore[no-untyped-def]
    """Exclusive lock across processes (two workers starting at once export only once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no cross-process lock
            pass
        yield


def ensure_onnx(weights: ResolvedWeights, imgsz: int) -> Path:
    """Path of an ONNX export of ``weights`` (a ``.pt``) at ``imgsz``, exporting it when not cached."""
    if weights.format != "pt":
        raise WeightsError(f"{weights.path} is not an ultralytics .pt checkpoint, so it cannot be exported to ONNX.")
    found = cached_export(weights, imgsz)
    if found:
        return found
    onnx_path, meta_path = export_paths(weights, imgsz)
    try:
        with _lock(onnx_path.with_suffix(".lock")):
            found = cached_export(weights, imgsz)  # another process may have finished meanwhile
            if found:
                return found
            return _export(weights, imgsz, onnx_path, meta_path)
    except PermissionError as e:
        raise WeightsError(
            f"Cannot write the ONNX export to {onnx_path.parent} ({e.strerror}); set NONSITE_WEIGHTS_CACHE to a "
            f"writable folder."
        ) from e


def _export(weights: ResolvedWeights, imgsz: int, onnx_path: Path, meta_path: Path) -> Path:
    from nonsite.models.torch_compat import ensure_torchvision_ops

    try:
        ensure_torchvision_ops()
        from ultralytics import YOLO
        from ultralytics import __version__ as ul_version
    except ImportError as e:
        raise WeightsError(
            f"Exporting {weights.path} to ONNX needs torch and ultralytics ({e}); install the 'torch' extra "
            f"(pip install 'nonsite[torch]') or set detector.model to a ready .onnx file."
        ) from e

    log.info("exporting %s (%s) to ONNX at imgsz %d; this is done once", weights.name, weights.path, imgsz)
    tmp = Path(tempfile.mkdtemp(dir=onnx_path.parent, prefix=".export-"))
    try:
        # Export from a private copy: ultralytics writes next to the .pt, which may be read-only/shared.
        src = tmp / f"{weights.name}.pt"
        shutil.copyfile(weights.path, src)
        try:
            with warnings.catch_warnings():  # torch's notices about its legacy ONNX exporter
                warnings.simplefilter("ignore", DeprecationWarning)
                out = YOLO(str(src), task="detect").export(
                    format="onnx", imgsz=imgsz, dynamic=True, simplify=True, device="cpu", verbose=False
                )
        except Exception as e:
            raise WeightsError(
                f"Exporting {weights.path} to ONNX failed ({type(e).__name__}: {e}); check that the onnx and "
                f"onnxslim packages are installed, or use detector.backend: ultralytics."
            ) from e
        os.replace(out, onnx_path)
        meta = {
            "source": weights.name,
            "source_path": str(weights.path),
            "source_sha256": weights.sha256,
            "source_version": weights.version,
            "imgsz": imgsz,
            "dynamic": True,
            "format_version": EXPORT_FORMAT_VERSION,
            "ultralytics": ul_version,
            "onnx_bytes": onnx_path.stat().st_size,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp_meta = tmp / "meta.json"
        tmp_meta.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(tmp_meta, meta_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s", onnx_path)
    return onnx_path


# --------------------------------------------------------------------------------------------- export command

EXPORT_FORMATS = ("onnx", "openvino")


@dataclass(frozen=True)
class ExportResult:
    name: str
    format: str
    path: Path
    """The registered file (``.onnx``, or the OpenVINO ``.xml`` with its ``.bin`` beside it)."""
    files: dict[str, int]
    """Every file written, with its size in bytes."""
    entry: RegistryEntry
    source: ResolvedWeights
    imgsz: int
    seconds: float


def export_model(model: str, fmt: str, *, imgsz: int | None = None, name: str | None = None) -> ExportResult:
    """Export the ultralytics ``.pt`` named ``model`` (a registry name or a path) to ``fmt`` (``onnx`` or
    ``openvino``) with a dynamic batch and input size, keep it in ``<cache>/exports/<name>/`` and register it
    under ``name`` (default ``<model>-<fmt>``) with its sha256 (and its ``.bin``'s for OpenVINO), classes and
    version, so a camera can use ``detector.model: <name>`` with ``detector.backend: onnx`` / ``openvino``."""
    from nonsite.models.registry import register, resolve
    from nonsite.models.train import TrainError, check_name, offline_ultralytics

    if fmt not in EXPORT_FORMATS:
        raise WeightsError(f"--format {fmt} is not supported; use {' or '.join(EXPORT_FORMATS)}.")
    src = resolve(model)
    if src.format != "pt":
        raise WeightsError(
            f"{model} is {src.path.name}; exports start from an ultralytics .pt checkpoint (a trained model or "
            f"yolo11n-coco)."
        )
    imgsz = int(imgsz or src.imgsz or 640)
    if imgsz < 32 or imgsz % 32:
        raise WeightsError(f"--imgsz must be a multiple of 32 (e.g. 320 or 640), got {imgsz}.")
    name = name or f"{src.name}-{fmt}"
    check_name(name)
    dest = cache_dir() / "exports" / name
    t0 = time.perf_counter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{name}-"))
    try:
        copy = tmp / f"{name}.pt"  # ultralytics writes its export next to the checkpoint it loads
        shutil.copyfile(src.path, copy)
        with offline_ultralytics() as YOLO:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    out = Path(
                        YOLO(str(copy), task="detect").export(
                            format=fmt, imgsz=imgsz, dynamic=True, simplify=True, device="cpu", verbose=False
                        )
                    )
            except TrainError:
                raise
            except Exception as e:  # noqa: BLE001 (ultralytics/torch/openvino raise many types)
                pkgs = "onnx and onnxslim" if fmt == "onnx" else "openvino"
                raise WeightsError(
                    f"Exporting {src.path} to {fmt} failed ({type(e).__name__}: {e}); check that the {pkgs} "
                    f"package(s) are installed."
                ) from e
        copy.unlink()
        staged = tmp / "out"
        staged.mkdir()
        if fmt == "onnx":
            os.replace(out, staged / f"{name}.onnx")
            main = f"{name}.onnx"
        else:  # a folder: <name>.xml, <name>.bin, metadata.yaml
            for f in Path(out).iterdir():
                os.replace(f, staged / f.name)
            main = f"{name}.xml"
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staged, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    files = {f.name: f.stat().st_size for f in sorted(dest.iterdir()) if f.is_file()}
    entry = register(
        name,
        dest / main,
        list(src.classes) or _model_names(dest / main),
        f"{src.version}-{fmt}{imgsz}",
        description=f"{fmt} export (dynamic batch and size, imgsz {imgsz}) of {src.name} (sha256 {src.sha256[:12]})",
        imgsz=imgsz,
    )
    meta = {
        "name": name,
        "format": fmt,
        "source": src.name,
        "source_path": str(src.path),
        "source_sha256": src.sha256,
        "source_version": src.version,
        "imgsz": imgsz,
        "files": files,
        "sha256": entry.sha256,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (dest / "export.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return ExportResult(name, fmt, dest / main, files, entry, src, imgsz, seconds)


def _model_names(path: Path) -> list[str]:
    """Class names from ultralytics' metadata of an export (for an unregistered source .pt)."""
    import ast

    import yaml

    side = path.with_name("metadata.yaml")
    try:
        if side.is_file():
            names = (yaml.safe_load(side.read_text(encoding="utf-8")) or {}).get("names")
        else:
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            names = ast.literal_eval(meta["names"]) if "names" in meta else None
    except Exception:  # noqa: BLE001 (no metadata: the caller reports missing class names)
        names = None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in names] if isinstance(names, list) else []
