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


NMS_BLOCK = 512
"""Boxes resolved together by :func:`nms_reference` (a BLOCK x BLOCK IoU matrix at a time)."""


def _iou(a: Any, b: Any) -> Any:
    """IoU matrix (len(a), len(b)) of xyxy boxes; 0 where the union is empty."""
    import torch

    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    w = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(torch.float32).tiny), 0.0)


def nms_reference(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression in plain torch, same contract as ``torchvision.ops.nms``:
    ``boxes`` (N, 4) xyxy, ``scores`` (N,); returns int64 indices of kept boxes by decreasing score.

    Exact greedy NMS, vectorised by blocks of :data:`NMS_BLOCK` boxes in score order: a block first loses
    the boxes that overlap a box kept in earlier blocks, then is resolved inside itself by iterating
    ``keep[j] = alive[j] and no kept i < j overlaps j`` to its fixed point (the greedy answer: each pass
    settles at least one more box in order, and it usually takes a handful). A box-by-box loop is far
    slower on the thousands of low-confidence boxes ultralytics' validation produces (conf 0.001)."""
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = scores.float().argsort(descending=True, stable=True)
    ordered = boxes.float()[order]
    kept_boxes = ordered[:0]
    kept: list[Any] = []
    for start in range(0, ordered.shape[0], NMS_BLOCK):
        blk = ordered[start : start + NMS_BLOCK]
        alive = torch.ones(blk.shape[0], dtype=torch.bool, device=boxes.device)
        if kept_boxes.shape[0]:
            alive &= ~(_iou(kept_boxes, blk) > iou_threshold).any(dim=0)
        over = torch.triu(_iou(blk, blk) > iou_threshold, diagonal=1)  # over[i, j]: earlier i overlaps j
        keep = alive
        for _ in range(blk.shape[0] + 1):
            nxt = alive & ~(over & keep[:, None]).any(dim=0)
            if torch.equal(nxt, keep):
                break
            keep = nxt
        idx = torch.nonzero(keep).flatten()
        kept.append(order[start + idx])
        kept_boxes = torch.cat([kept_boxes, blk[idx]])
    return torch.cat(kept).to(torch.int64)


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
