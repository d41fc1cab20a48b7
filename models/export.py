"""Export an ultralytics ``.pt`` to ONNX once and cache it in the weights cache.

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
import warnings
from datetime import UTC, datetime
from pathlib import Path

from nonsite.models.registry import ResolvedWeights, WeightsError, cache_dir

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
