"""Make ``import torchvision`` (and so ultralytics) work when torchvision's compiled ops cannot load.

The torchvision wheels reachable here are CUDA builds; on the CPU build of torch 2.13 their ``_C``
extension fails to load, and ``import torchvision`` then dies with
``RuntimeError: operator torchvision::nms does not exist`` (its meta registrations assume the op).
ultralytics imports torchvision, so nothing ultralytics can run.

:func:`ensure_torchvision_ops` defines the two operators torchvision's import needs
(``torchvision::nms`` and ``torchvision::qnms``) in pure torch *before* torchvision is imported, then
lets ``torchvision.ops.nms`` call them. It does nothing when torchvision's own ops load (a matching
install) or when torchvision is not installed. Every code path that imports ultralytics calls it first.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_done = False
_shimmed = False
_lib: Any = None  # the torch.library.Library holding our definitions; must stay referenced


def _op_exists(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _load_real_ops() -> bool | None:
    """Try to load torchvision's compiled ``_C`` library without importing torchvision.

    Returns True when it loaded, False when it exists but cannot load, None when torchvision is not
    installed (or has no compiled library)."""
    import torch

    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    lib_dir = next(iter(spec.submodule_search_locations))
    finder = importlib.machinery.FileFinder(
        lib_dir, (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    )
    ext = finder.find_spec("_C")
    if ext is None or ext.origin is None or not Path(ext.origin).is_file():
        return None
    try:
        torch.ops.load_library(ext.origin)
    except (OSError, RuntimeError) as e:
        log.debug("torchvision's compiled ops do not load (%s); using the pure-torch nms", e)
        return False
    return True


def nms_reference(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression in plain torch, same contract as ``torchvision.ops.nms``:
    ``boxes`` (N, 4) xyxy, ``scores`` (N,); returns int64 indices of kept boxes by decreasing score."""
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.float().argsort(descending=True, stable=True)
    keep: list[Any] = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if rest.numel() == 0:
            break
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=torch.finfo(torch.float32).tiny), 0.0)
        order = rest[iou <= iou_threshold]
    return torch.stack(keep).to(torch.int64)


def _define_ops() -> None:
    global _lib
    import torch

    lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
    for name in ("nms", "qnms"):
        if _op_exists(name):
            continue
        lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl(name, nms_reference, "CompositeExplicitAutograd")
    _lib = lib


def _let_torchvision_call_it() -> None:
    """``torchvision.ops.nms`` refuses to run when torchvision's extension did not load; its box ops only
    need the two operators defined above, so lift that check for ``torchvision.ops.boxes`` alone."""
    import torchvision.extension
    import torchvision.ops.boxes as boxes

    if not torchvision.extension._has_ops():
        boxes._assert_has_ops = lambda: None  # type: ignore[attr-defined]


def ensure_torchvision_ops() -> bool:
    """Make ``import torchvision`` work; idempotent and thread-safe.

    Returns True when the pure-torch operators are in use, False when torchvision's own ops are (or
    torchvision is not installed)."""
    global _done, _shimmed
    if _done:
        return _shimmed
    with _lock:
        if _done:
            return _shimmed
        import torch  # noqa: F401  (the operators live in torch's dispatcher)

        if "torchvision" in sys.modules:
            # Imported already (so it imported fine): only lift the check if its ops are ours/missing.
            if _op_exists("nms") and not sys.modules["torchvision.extension"]._has_ops():
                _let_torchvision_call_it()
                _shimmed = True
        elif not _op_exists("nms"):
            loaded = _load_real_ops()
            if loaded is False:
                _define_ops()
                _shimmed = True
                import torchvision  # noqa: F401  (now imports cleanly)

                _let_torchvision_call_it()
                log.info("torchvision's compiled ops are missing: registered a pure-torch torchvision::nms")
        _done = True
        return _shimmed
