"""Fine-tune a YOLO detector on custom classes (ultralytics, CPU) and register the result.

``nonsite models train --data DATASET.yaml --base yolo11n-coco --epochs N`` -> :func:`train`.

The dataset is a YOLO dataset yaml (``path``, ``train``, ``val``, ``names``). Three things differ from
handing it to ultralytics as it is:

- relative paths are resolved against the yaml's own folder (ultralytics resolves them against its
  datasets folder or the working directory);
- the dataset is *staged* into a private work folder: images are symlinked and label files copied, so
  ultralytics' label caches (written next to the labels) never touch the dataset, which may be a
  read-only share;
- a base checkpoint with its batch norms folded into the convolutions (the shipped ``yolo11n-coco.pt``)
  is unfolded first (:func:`unfuse_checkpoint`); otherwise ultralytics would keep 79 of its 499 tensors.

Training runs offline: ``YOLO_OFFLINE`` is set, ultralytics' usage events are off, and its font lookup
(which downloads Arial.ttf when missing) is pointed at a font that ships with matplotlib. Everything
ultralytics writes goes to ``<weights cache>/trained/<name>/`` (never the repository or the working
directory); the best weights are copied to ``<weights cache>/trained/<name>/<name>.pt`` and registered
under ``name`` with their sha256, class names and version, so a camera can use ``detector.model: <name>``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from nonsite.models.registry import RegistryEntry, WeightsError, builtin_names, cache_dir, register, resolve

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TrainError(WeightsError):
    """Training cannot start or failed; the message names the thing and the fix."""


# --------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class StagedDataset:
    """A dataset yaml resolved into a private folder ultralytics may write into."""

    yaml_path: Path
    """The staged ``data.yaml`` (absolute paths) to hand to ultralytics."""
    source: Path
    names: list[str]
    images: dict[str, int]
    """Images per split."""
    labels: dict[str, int]
    """Label files per split (images without one are background images)."""
    boxes: dict[str, int] = field(default_factory=dict)
    """Boxes per split."""


def _names(raw: Any, nc: Any, where: Path) -> list[str]:
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise TrainError(f"{where}: names: the keys must be class numbers 0..N-1; fix the names map.") from None
        if keys != list(range(len(keys))):
            raise TrainError(f"{where}: names: the class numbers must run 0..{len(keys) - 1} without gaps.")
        names = [str(raw[k] if k in raw else raw[str(k)]) for k in keys]
    elif isinstance(raw, list) and raw:
        names = [str(n) for n in raw]
    elif raw is None and isinstance(nc, int) and nc > 0:
        names = [f"class{i}" for i in range(nc)]
    else:
        raise TrainError(f"{where}: names: list the class names (names: [a, b, ...]); none were found.")
    if nc is not None and nc != len(names):
        raise TrainError(f"{where}: nc is {nc} but names lists {len(names)} classes; make them agree.")
    if len(set(names)) != len(names):
        raise TrainError(f"{where}: names: every class needs its own name; {names} repeats one.")
    return names


def _label_for(image: Path) -> Path:
    """ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s).with_suffix(".txt")


def _split_images(entry: str, root: Path, where: Path, key: str) -> list[Path]:
    p = Path(entry).expanduser()
    p = p if p.is_absolute() else root / p
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    elif p.is_file() and p.suffix.lower() == ".txt":
        files = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            f = Path(line).expanduser()
            if not f.is_absolute():
                f = (p.parent / line) if line.startswith("./") else (root / line)
            if not f.is_file():
                raise TrainError(f"{p}:{n}: image {line} not found (looked at {f}); fix or remove the line.")
            files.append(f)
    elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        files = [p]
    else:
        raise TrainError(
            f"{where}: {key}: {entry} resolves to {p}, which is neither a folder of images nor a .txt list of "
            f"images; fix the path (relative paths are relative to the dataset's 'path', itself relative to "
            f"the yaml's folder)."
        )
    if not files:
        raise TrainError(f"{where}: {key}: {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return files


def _check_labels(label: Path, nc: int) -> int:
    boxes = 0
    for n, line in enumerate(label.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(float(parts[0]))
            coords = [float(v) for v in parts[1:]]
        except ValueError:
            raise TrainError(f"{label}:{n}: '{line.strip()}' is not 'class x y w h' numbers; fix the line.") from None
        if not 0 <= cls < nc:
            raise TrainError(f"{label}:{n}: class {cls} is outside 0..{nc - 1} (the yaml names {nc} classes).")
        if len(coords) < 4:
            raise TrainError(f"{label}:{n}: a box needs 'class x y w h'; fix the line.")
        boxes += 1
    return boxes


def stage_dataset(data: str | Path, workdir: str | Path) -> StagedDataset:
    """Resolve the dataset yaml ``data`` and stage it into ``workdir`` (images symlinked, labels copied,
    a ``data.yaml`` with absolute paths). Raises :class:`TrainError` naming the file and the fix."""
    src = Path(data).expanduser().resolve()
    if not src.is_file():
        raise TrainError(f"dataset yaml {data} not found; pass --data PATH/TO/data.yaml.")
    try:
        raw = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise TrainError(f"{src} is not valid YAML ({e}); fix it.") from e
    if not isinstance(raw, dict):
        raise TrainError(f"{src} must be a mapping with path, train, val and names; fix it.")
    names = _names(raw.get("names"), raw.get("nc"), src)
    root = Path(str(raw.get("path") or ".")).expanduser()
    root = (root if root.is_absolute() else src.parent / root).resolve()
    if not root.is_dir():
        raise TrainError(f"{src}: path: {raw.get('path')} resolves to {root}, which is not a folder; fix the path.")
    for key in ("train", "val"):
        if not raw.get(key):
            raise TrainError(f"{src}: '{key}:' is missing; a dataset needs train and val images.")

    work = Path(workdir).resolve()
    out: dict[str, Any] = {"path": str(work), "names": dict(enumerate(names)), "nc": len(names)}
    counts: dict[str, int] = {}
    labelled: dict[str, int] = {}
    boxes: dict[str, int] = {}
    for key in SPLITS:
        entries = raw.get(key)
        if not entries:
            continue
        entries = entries if isinstance(entries, list) else [entries]
        dirs = []
        counts[key] = labelled[key] = boxes[key] = 0
        for i, entry in enumerate(entries):
            sub = f"{key}{i}" if len(entries) > 1 else key
            img_dir, lbl_dir = work / "images" / sub, work / "labels" / sub
            img_dir.mkdir(parents=True, exist_ok=True)
            lbl_dir.mkdir(parents=True, exist_ok=True)
            used: set[str] = set()
            for n, img in enumerate(_split_images(str(entry), root, src, key)):
                stem = img.stem if img.stem not in used else f"{img.stem}_{n}"
                used.add(stem)
                (img_dir / f"{stem}{img.suffix}").symlink_to(img.resolve())
                label = _label_for(img)
                if label.is_file():
                    boxes[key] += _check_labels(label, len(names))
                    shutil.copyfile(label, lbl_dir / f"{stem}.txt")
                    labelled[key] += 1
                counts[key] += 1
            dirs.append(f"images/{sub}")
        out[key] = dirs if len(dirs) > 1 else dirs[0]
    if not labelled["train"]:
        raise TrainError(
            f"{src}: none of the {counts['train']} train images has a label file; put YOLO labels where "
            f"ultralytics looks for them (.../images/x.jpg -> .../labels/x.txt)."
        )
    staged = work / "data.yaml"
    staged.write_text(yaml.safe_dump(out, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return StagedDataset(staged, src, names, counts, labelled, boxes)


# --------------------------------------------------------------------------------------------- offline


def _local_font() -> str | None:
    """A TrueType font that ships with matplotlib (DejaVu Sans), so ultralytics never downloads Arial."""
    try:
        import matplotlib

        f = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return str(f) if f.is_file() else None
    except ImportError:
        return None


@contextlib.contextmanager
def offline_ultralytics() -> Iterator[Any]:
    """Import ultralytics with everything that could reach the network switched off; yields ``YOLO``.

    ``YOLO_OFFLINE=1`` (no connectivity probe, no pip auto-update), usage events off, and its
    ``check_font`` (which downloads Arial.ttf / Arial.Unicode.ttf to its config folder when missing)
    answers with a local font, for the duration (all three are restored afterwards)."""
    from nonsite.models.torch_compat import ensure_torchvision_ops

    offline_was = os.environ.get("YOLO_OFFLINE")
    os.environ["YOLO_OFFLINE"] = "1"
    try:
        ensure_torchvision_ops()
        import ultralytics.data.utils as data_utils
        import ultralytics.utils.checks as checks
        import ultralytics.utils.plotting as plotting
        from ultralytics import YOLO
        from ultralytics.utils import events as events_mod
    except ImportError as e:
        _restore_env("YOLO_OFFLINE", offline_was)
        raise TrainError(
            f"Training and exporting need torch and ultralytics ({e}); install the 'torch' extra "
            f"(pip install -c constraints.txt 'nonsite[torch]')."
        ) from e
    font = _local_font()

    def check_font(font_name: str = "Arial.ttf") -> str | None:
        return font

    saved = [(m, getattr(m, "check_font", None)) for m in (checks, data_utils, plotting)]
    events = getattr(events_mod, "events", None)
    was_enabled = getattr(events, "enabled", None)
    for m, _ in saved:
        if hasattr(m, "check_font"):
            m.check_font = check_font
    if events is not None:
        events.enabled = False
    try:
        yield YOLO
    finally:
        for m, orig in saved:
            if orig is not None:
                m.check_font = orig
        if events is not None and was_enabled is not None:
            events.enabled = was_enabled
        _restore_env("YOLO_OFFLINE", offline_was)


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


# --------------------------------------------------------------------------------------------- base weights


def unfuse_checkpoint(src: Path, dst: Path, images: list[Path], imgsz: int = 320) -> int:
    """Write to ``dst`` an unfused, trainable copy of a YOLO checkpoint whose convolutions had their batch
    norms folded in (``model.fuse()``, as in the shipped ``yolo11n-coco.pt``); return how many layers were
    unfused (0: the checkpoint is not fused, nothing written).

    ultralytics builds an unfused network for training and copies over only tensors of the same name and
    shape, so from a fused checkpoint it keeps 79 of 499 tensors: most of the pretrained weights would be
    lost. Here each fused convolution gets its BatchNorm back, with statistics measured on ``images``
    (running mean/var = the convolution's per-channel output mean/var; weight and bias chosen so that
    the layer computes exactly what the fused one did). In eval mode the result equals the fused network;
    in training mode the batch statistics start close to the measured ones, so fine-tuning starts from the
    pretrained function rather than from scratch."""
    import cv2
    import numpy as np
    import torch
    from ultralytics.nn.modules.conv import Conv
    from ultralytics.nn.tasks import DetectionModel

    ck = torch.load(str(src), map_location="cpu", weights_only=False)
    fused = (ck.get("ema") or ck["model"]).float().eval()
    convs = {n: m for n, m in fused.named_modules() if isinstance(m, Conv)}
    if not convs or all(hasattr(m, "bn") for m in convs.values()):
        return 0
    fresh = DetectionModel(cfg=dict(fused.yaml), nc=len(fused.names), verbose=False)
    fresh.names = dict(fused.names)
    fresh.args = getattr(fused, "args", {})
    fsd, nsd = fused.state_dict(), fresh.state_dict()
    done: set[str] = set()
    for k, v in nsd.items():
        if k in fsd and fsd[k].shape == v.shape:
            v.copy_(fsd[k])
            done.add(k)
    fresh_convs = {n: m for n, m in fresh.named_modules() if isinstance(m, Conv)}
    if set(fresh_convs) != set(convs):
        raise TrainError(f"{src}: its layers do not match its own yaml; train from an unfused checkpoint instead.")
    for n, m in fresh_convs.items():
        fc = convs[n].conv
        m.conv.weight.data.copy_(fc.weight.data)
        bias = fc.bias.data if fc.bias is not None else torch.zeros(m.conv.out_channels)
        m.bn.weight.data.fill_(1.0)
        m.bn.bias.data.copy_(bias)
        m.bn.running_mean.zero_()
        m.bn.running_var.fill_(1.0 - m.bn.eps)
        done.update(f"{n}.{s}" for s in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                           "bn.num_batches_tracked"))
    missing = [k for k in nsd if k not in done]
    if missing:
        raise TrainError(f"{src}: cannot unfuse it ({len(missing)} tensors have no source, e.g. {missing[0]}); "
                         f"train from an unfused checkpoint instead.")

    # Measure each convolution's output statistics on real images (one eval pass: identical to the fused net).
    batch = []
    for f in images[:8]:
        im = cv2.imread(str(f))
        if im is not None:
            batch.append(cv2.resize(im, (imgsz, imgsz))[:, :, ::-1].transpose(2, 0, 1) / 255.0)
    if not batch:
        raise TrainError(f"none of the calibration images could be read (first: {images[0] if images else '-'}).")
    x = torch.from_numpy(np.ascontiguousarray(np.stack(batch))).float()
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def fn(_m, _inp, out):  # type: ignore[no-untyped-def]
            stats[name] = (out.mean(dim=(0, 2, 3)), out.var(dim=(0, 2, 3), unbiased=False))

        return fn

    handles = [m.conv.register_forward_hook(hook(n)) for n, m in fresh_convs.items()]
    fresh.eval()
    with torch.no_grad():
        fresh(x)
    for h in handles:
        h.remove()
    for n, m in fresh_convs.items():
        if n not in stats:  # a layer the forward pass does not reach: keep the exact identity BatchNorm
            continue
        mu, var = stats[n]
        m.bn.running_mean.copy_(mu)
        m.bn.running_var.copy_(var.clamp(min=1e-6))
        m.bn.weight.data.copy_(torch.sqrt(m.bn.running_var + m.bn.eps))
        m.bn.bias.data.add_(mu)
    out = {k: v for k, v in ck.items() if k not in {"model", "ema", "optimizer"}}
    out["model"] = fresh
    out["unfused_from"] = str(src)
    torch.save(out, str(dst))
    return len(fresh_convs)


def extend_head(ckpt: Path, names: list[str]) -> int:
    """Widen the classification head of the checkpoint ``ckpt`` (in place) to the dataset's ``names`` when these
    start with the checkpoint's own classes (e.g. COCO 80 + ``vendor_cart``); return how many classes were
    added (0: nothing to do, file untouched).

    ultralytics builds a fresh head for a dataset with another class count and keeps only tensors of the same
    shape; a YOLO11's class branch is as wide as its class count, so all of it would start from random weights
    and every COCO class would have to be learnt again. Here every old channel keeps its weights (and ignores
    the added input channels) and the added hidden channels start from ultralytics' own initialisation: the
    widened model gives the base model's scores for the old classes. A new class's output starts at its prior
    (ultralytics' bias, a score of about 1e-4) with zero weights, not random ones: until it is trained it finds
    nothing, on any image, whatever the random state (random weights gave it scores up to 0.3 and over on
    some images: untrained boxes, different from one build to the next); the zero weights still get their
    gradient from the first step (the features they multiply are not zero)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    ck = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    old = (ck.get("ema") or ck["model"]).float()
    old_names = [str(old.names[i]) for i in range(len(old.names))]
    if len(names) <= len(old_names) or names[: len(old_names)] != old_names:
        return 0
    nc_old = len(old_names)
    new = DetectionModel(cfg=dict(old.yaml), nc=len(names), verbose=False)
    new.names = dict(enumerate(names))
    new.args = getattr(old, "args", {})
    osd, nsd = old.state_dict(), new.state_dict()
    widened = 0
    with torch.no_grad():
        for k, v in nsd.items():
            o = osd.get(k)
            if o is None:
                continue
            if o.shape == v.shape:
                v.copy_(o)
            elif o.dim() == v.dim() and all(a <= b for a, b in zip(o.shape, v.shape, strict=True)):
                # The class branch is wider (YOLO11 sizes it by nc): old channels keep their weights and ignore
                # the new input channels, so every old class computes exactly what it did.
                v[tuple(slice(0, n) for n in o.shape)].copy_(o)
                if o.dim() > 1 and v.shape[1] > o.shape[1]:
                    v[: o.shape[0], o.shape[1] :].zero_()
                widened += 1
    if not widened:
        raise TrainError(f"{ckpt}: found no class layer with {nc_old} outputs to widen to {len(names)} classes.")
    head = new.model[-1]
    with torch.no_grad():
        for branches in (getattr(head, "cv3", None), getattr(head, "one2one_cv3", None)):
            for branch in branches or []:
                final = branch[-1]  # the 1x1 convolution that gives one logit per class
                if isinstance(final, torch.nn.Conv2d) and final.out_channels == len(names):
                    final.weight[nc_old:].zero_()
    ck = {k: v for k, v in ck.items() if k not in {"model", "ema", "optimizer"}}
    ck["model"] = new
    torch.save(ck, str(ckpt))
    return len(names) - nc_old


# --------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainResult:
    name: str
    weights: Path
    entry: RegistryEntry
    classes: list[str]
    base: str
    epochs: int
    imgsz: int
    seconds: float
    metrics: dict[str, float]
    """Validation metrics of the final weights: precision, recall, mAP50, mAP50-95 (0..1)."""
    run_dir: Path
    dataset: StagedDataset


def default_name(data: str | Path, base: str) -> str:
    p = Path(data)
    stem = p.parent.name if p.stem in {"data", "dataset"} else p.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{stem}-{Path(base).stem}").strip("-")[:64]


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise TrainError(
            f"model name '{name}' is not usable; use letters, digits, '.', '_' or '-' (at most 64, starting "
            f"with a letter or digit)."
        )
    if name in builtin_names():
        raise TrainError(f"'{name}' is a built-in model name; pass --name with another name for the trained model.")


def _metrics(trainer: Any) -> dict[str, float]:
    m = dict(getattr(trainer, "metrics", None) or {})
    keys = {
        "precision": "metrics/precision(B)",
        "recall": "metrics/recall(B)",
        "mAP50": "metrics/mAP50(B)",
        "mAP50-95": "metrics/mAP50-95(B)",
    }
    return {k: round(float(m[v]), 4) for k, v in keys.items() if v in m}


def train(
    data: str | Path,
    base: str = "yolo11n-coco",
    epochs: int = 30,
    *,
    imgsz: int = 640,
    name: str | None = None,
    batch: int = 8,
    workers: int = 0,
    device: str = "cpu",
    seed: int = 0,
    patience: int = 50,
    freeze: int | None = None,
    hours: float | None = None,
    cache: bool = False,
    lr0: float | None = None,
) -> TrainResult:
    """Fine-tune ``base`` (a registry name or a .pt path) on the dataset yaml ``data`` and register the
    best weights under ``name`` (default ``<dataset>-<base>``). ``freeze`` keeps the first N layers fixed (10:
    the backbone of a YOLO11), ``hours`` caps the training time (ultralytics' ``time``: it then fits the epochs
    into it, ``epochs`` only sets the schedule's first guess), ``cache`` keeps decoded images in RAM, ``lr0``
    sets AdamW's learning rate (default: ultralytics' automatic choice). The biases warm up from 0 like the
    weights, not from ultralytics' 0.1 (a warm-up meant for SGD from scratch: with AdamW on pretrained weights
    it throws the biases around for the first epochs and undoes the base model). When the
    dataset's class names start with the base model's, the head is widened rather than rebuilt
    (:func:`extend_head`). Raises :class:`TrainError`/``WeightsError``
    with a one-sentence fix on bad input; ultralytics' own failures are wrapped the same way."""
    if epochs < 1:
        raise TrainError(f"--epochs must be 1 or more, got {epochs}.")
    if freeze is not None and freeze < 0:
        raise TrainError(f"--freeze must be 0 or more layers, got {freeze}.")
    if lr0 is not None and not 0 < lr0 < 1:
        raise TrainError(f"--lr0 must be between 0 and 1 (e.g. 0.0003), got {lr0}.")
    if hours is not None and hours <= 0:
        raise TrainError(f"--hours must be more than 0, got {hours}.")
    if imgsz < 32 or imgsz % 32:
        raise TrainError(f"--imgsz must be a multiple of 32 (e.g. 320 or 640), got {imgsz}.")
    name = name or default_name(data, base)
    check_name(name)

    with tempfile.TemporaryDirectory(prefix="nonsite-train-") as tmp:
        staged = stage_dataset(data, Path(tmp) / "dataset")
        src = resolve(base)
        if src.format != "pt":
            raise TrainError(
                f"--base {base} is {src.path.name}; training starts from an ultralytics .pt checkpoint such as "
                f"yolo11n-coco."
            )
        out_dir = cache_dir() / "trained" / name
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out_dir / "run", ignore_errors=True)
        log.info(
            "training %s from %s on %s: %s images, %d epochs at imgsz %d on %s",
            name, src.name, staged.source, staged.images, epochs, imgsz, device,
        )
        base_copy = Path(tmp) / f"{src.name}.pt"  # ultralytics may write next to the checkpoint
        t0 = time.perf_counter()
        with offline_ultralytics() as YOLO:
            train_images = sorted((Path(tmp) / "dataset" / "images").glob("train*/*"))
            unfused = unfuse_checkpoint(src.path, base_copy, train_images, imgsz)
            if unfused:
                log.info("%s has its batch norms folded in: unfused %d layers for training", src.name, unfused)
            else:
                shutil.copyfile(src.path, base_copy)
            added = extend_head(base_copy, staged.names)
            if added:
                log.info("%s: kept its %d classes' head and added %d", src.name, len(staged.names) - added, added)
            extra: dict[str, Any] = {"warmup_bias_lr": 0.0, "warmup_epochs": 1.0}
            if lr0:
                extra.update(optimizer="AdamW", lr0=lr0)
            if freeze:
                extra["freeze"] = freeze
            if hours:
                extra["time"] = hours
            try:
                model = YOLO(str(base_copy), task="detect")
                model.train(
                    data=str(staged.yaml_path),
                    epochs=epochs,
                    imgsz=imgsz,
                    batch=batch,
                    workers=workers,
                    device=device,
                    seed=seed,
                    patience=patience,
                    project=str(out_dir),
                    name="run",
                    exist_ok=True,
                    plots=False,
                    amp=False,
                    cache="ram" if cache else False,
                    verbose=False,
                    **extra,
                )
            except TrainError:
                raise
            except Exception as e:  # noqa: BLE001 (ultralytics/torch raise many types)
                raise TrainError(f"ultralytics training failed ({type(e).__name__}: {e}); see the log above.") from e
        seconds = time.perf_counter() - t0
        trainer = model.trainer
        best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
        if not best.is_file():
            raise TrainError(f"training finished without a weights file in {trainer.save_dir}; see the log above.")
        metrics = _metrics(trainer)
        epochs_run = int(getattr(trainer, "epoch", epochs - 1)) + 1
        weights = out_dir / f"{name}.pt"
        shutil.copyfile(best, weights)
        run_dir = Path(trainer.save_dir)
        shutil.rmtree(run_dir / "weights", ignore_errors=True)  # the registered copy is the one kept

    stamp = datetime.now(UTC)
    version = f"{name}-{stamp:%Y%m%dT%H%M%SZ}"
    entry = register(
        name,
        weights,
        staged.names,
        version,
        description=f"fine-tuned from {src.name} ({src.version}) on {staged.source}, {epochs} epochs at imgsz "
        f"{imgsz}; val mAP50 {metrics.get('mAP50', float('nan')):.3f}",
        imgsz=imgsz,
    )
    record = {
        "name": name,
        "version": version,
        "weights": str(weights),
        "sha256": entry.sha256,
        "classes": staged.names,
        "base": {"name": src.name, "version": src.version, "sha256": src.sha256},
        "data": str(staged.source),
        "images": staged.images,
        "labelled_images": staged.labels,
        "boxes": staged.boxes,
        "epochs": epochs_run,
        "imgsz": imgsz,
        "batch": batch,
        "freeze": freeze,
        "hours_cap": hours,
        "lr0": lr0,
        "device": device,
        "seconds": round(seconds, 1),
        "val": metrics,
        "trained_at": stamp.isoformat(timespec="seconds"),
    }
    (out_dir / "train.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    return TrainResult(
        name=name, weights=weights, entry=entry, classes=staged.names, base=src.name, epochs=epochs_run, imgsz=imgsz,
        seconds=seconds, metrics=metrics, run_dir=run_dir, dataset=staged,
    )


# --------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    images: int
    boxes: int
    precision: float
    recall: float
    mAP50: float
    mAP50_95: float


def validate(model: str | Path, data: str | Path, *, imgsz: int = 640, batch: int = 8) -> list[ClassMetrics]:
    """Validate ``model`` (a registry name or a .pt/.onnx path) on the val split of the dataset yaml ``data``
    with ultralytics' metrics; one row per class that has val boxes, then ``all``. The dataset is staged the
    same way as for training (the share is never written to)."""
    if imgsz < 32 or imgsz % 32:
        raise TrainError(f"--imgsz must be a multiple of 32 (e.g. 320 or 640), got {imgsz}.")
    weights = resolve(model)
    if weights.format not in {"pt", "onnx"}:
        raise TrainError(f"{weights.path}: validation runs on a .pt or .onnx model, not {weights.format}.")
    with tempfile.TemporaryDirectory(prefix="nonsite-val-") as tmp:
        staged = stage_dataset(data, Path(tmp) / "dataset")
        with offline_ultralytics() as YOLO:
            try:
                m = YOLO(str(weights.path), task="detect")
                r = m.val(data=str(staged.yaml_path), imgsz=imgsz, batch=batch, device="cpu", plots=False,
                          verbose=False, project=tmp, name="val", workers=0)
            except Exception as e:  # noqa: BLE001 (ultralytics/torch raise many types)
                raise TrainError(f"ultralytics validation failed ({type(e).__name__}: {e}).") from e
        box = r.box
        rows = []
        for i, c in enumerate(box.ap_class_index):
            p, rec, ap50, ap = box.class_result(i)
            rows.append(ClassMetrics(staged.names[int(c)], int(r.nt_per_image[c]), int(r.nt_per_class[c]),
                                     float(p), float(rec), float(ap50), float(ap)))
        rows.append(ClassMetrics("all", staged.images.get("val", 0), int(r.nt_per_class.sum()), float(box.mp),
                                 float(box.mr), float(box.map50), float(box.map)))
        return rows
