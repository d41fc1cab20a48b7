"""torchvision on the CPU torch build: the pure-torch nms registration makes it importable and correct."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nonsite.models.torch_compat import ensure_torchvision_ops, nms_reference  # noqa: E402


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS, one box at a time."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            xx1, yy1 = max(boxes[i, 0], boxes[k, 0]), max(boxes[i, 1], boxes[k, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[k, 2]), min(boxes[i, 3], boxes[k, 3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            b = (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])
            if inter / (a + b - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(int(i))
    return keep


def test_reference_nms_matches_greedy_definition() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(5, 60, (300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for thr in (0.3, 0.5, 0.7):
        got = nms_reference(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
        assert got == _greedy_nms(boxes, scores, thr)
    assert nms_reference(torch.zeros((0, 4)), torch.zeros(0), 0.5).shape == (0,)


def test_torchvision_imports_and_nms_runs_in_a_fresh_process() -> None:
    code = textwrap.dedent(
        """
        from nonsite.models.torch_compat import ensure_torchvision_ops
        first = ensure_torchvision_ops()
        assert ensure_torchvision_ops() == first  # idempotent
        import torch, torchvision
        from torchvision.extension import _has_ops
        assert first == (not _has_ops()), (first, _has_ops())
        b = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
        s = torch.tensor([0.9, 0.8, 0.7, 0.6])
        idx = torch.tensor([0, 1, 0, 1])
        print(torchvision.ops.nms(b, s, 0.5).tolist(), torchvision.ops.batched_nms(b, s, idx, 0.5).tolist())
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[0, 2] [0, 1, 2]"


def test_idempotent_in_process() -> None:
    a = ensure_torchvision_ops()
    assert ensure_torchvision_ops() is a


def test_reference_nms_matches_greedy_across_blocks() -> None:
    """More boxes than one block (and class-offset boxes, as ultralytics passes them): still exact greedy."""
    from nonsite.models.torch_compat import NMS_BLOCK

    rng = np.random.default_rng(11)
    n = 2 * NMS_BLOCK + 137
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(10, 120, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    boxes[n // 2 :] += 4096.0  # a second "class", far away, like ultralytics' class offsets
    scores = rng.uniform(0, 1, n).astype(np.float32)
    scores[:20] = 0.5  # ties keep the order of the input
    for thr in (0.45, 0.7):
        got = nms_reference(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
        assert got == _greedy_nms(boxes, scores, thr)
