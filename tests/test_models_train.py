"""Custom classes: fine-tune on a real labelled set (CPU, offline), register, export, load in the pipeline.

The dataset is ../shared/media/india_road_thela_animal (0 pothole, 1 thela, 2 animal, 3 barricade,
4 rickshaw). The suite trains 1 epoch at imgsz 160 on 6 of its stray-dog images and validates on 4 val
images: quality is not tested here, the path is (staging, offline training, registry, export, backends).
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
import torch
import yaml

from nonsite.cli import main as cli_main
from nonsite.config.detector import DetectorConfig
from nonsite.models import WeightsChecksumError, WeightsError, create_detector
from nonsite.models.cli import export_command, train_command
from nonsite.models.export import export_model
from nonsite.models.registry import get_entry, register, resolve, sha256_file
from nonsite.models.train import TrainError, offline_ultralytics, stage_dataset, train, unfuse_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["pothole", "thela", "animal", "barricade", "rickshaw"]
DOGS = ["img_004", "img_014", "img_021", "img_033", "img_037", "img_040"]
VAL = ["img_028", "img_125", "img_012", "img_043"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def thela(media_dir: Path) -> Path:
    d = media_dir / "india_road_thela_animal"
    assert (d / "data.yaml").is_file()
    return d


@pytest.fixture(scope="module")
def mini_yaml(thela: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset yaml in a temp folder: relative path '.', image lists pointing at the shared images."""
    d = tmp_path_factory.mktemp("mini")
    (d / "train.txt").write_text("".join(f"{thela}/images/train_dog_subset/{n}.jpg\n" for n in DOGS))
    (d / "val.txt").write_text("".join(f"{thela}/images/val/{n}.jpg\n" for n in VAL))
    (d / "data.yaml").write_text(f"path: .\ntrain: train.txt\nval: val.txt\nnames: {NAMES}\n")
    return d / "data.yaml"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, models_dir: Path):  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    c = tmp_path_factory.mktemp("weights-cache")
    mp.setenv("NONSITE_WEIGHTS_CACHE", str(c))
    yield c
    mp.undo()


@pytest.fixture(scope="module")
def trained(cache: Path, mini_yaml: Path, thela: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real training run through the command's function (``nonsite models train``), with the network
    cut (any connection attempt is recorded and refused) and the working directory in a temp folder
    (ultralytics must not write runs/ there). Returns (printed output, train.json record)."""
    attempts: list[str] = []

    def refuse(*a: object, **k: object) -> None:
        attempts.append(repr(a[1:] or k)[:120])
        raise OSError("network is off in this test")

    cwd = tmp_path_factory.mktemp("cwd")
    before_shared, before_repo = _snapshot(thela), sorted(p.name for p in ROOT.iterdir())
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "getaddrinfo", refuse)
    mp.chdir(cwd)
    buf = io.StringIO()
    try:
        rc = train_command(str(mini_yaml), "yolo11n-coco", 1, imgsz=160, batch=4, name="thela-mini", out=buf)
    finally:
        mp.undo()
    assert rc == 0
    assert attempts == [], f"training tried to reach the network: {attempts}"
    assert _snapshot(thela) == before_shared, "training wrote into the dataset folder"
    assert sorted(p.name for p in ROOT.iterdir()) == before_repo, "training wrote into the repository"
    assert list(cwd.iterdir()) == [], "training wrote into the working directory"
    record = json.loads((cache / "trained" / "thela-mini" / "train.json").read_text())
    return buf.getvalue(), record


# --------------------------------------------------------------------------------------------- staging


def test_stage_dataset_resolves_paths_against_the_yaml_and_leaves_the_source_alone(
    thela: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ultralytics would resolve `path: .` against this; the yaml's folder is meant
    before = _snapshot(thela)
    s = stage_dataset(thela / "data.yaml", tmp_path / "staged")
    assert s.names == NAMES
    assert s.images == {"train": 24, "val": 40} and s.labels == {"train": 24, "val": 40}
    assert s.boxes["val"] == 88 and s.boxes["train"] > 0
    data = yaml.safe_load(s.yaml_path.read_text())
    assert Path(data["path"]) == (tmp_path / "staged").resolve() and data["names"] == dict(enumerate(NAMES))
    images = sorted((tmp_path / "staged" / data["train"]).iterdir())
    assert len(images) == 24 and all(p.is_symlink() and p.resolve().is_relative_to(thela.resolve()) for p in images)
    label = tmp_path / "staged" / "labels" / "train" / f"{images[0].stem}.txt"
    assert not label.is_symlink()
    assert label.read_text() == (thela / "labels" / "train_dog_subset" / f"{images[0].stem}.txt").read_text()
    assert _snapshot(thela) == before


def _bad(tmp_path: Path, text: str, labels: dict[str, str] | None = None) -> Path:
    (tmp_path / "images" / "train").mkdir(parents=True, exist_ok=True)
    (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
    img = np.full((64, 64, 3), 127, np.uint8)
    for n in ("a", "b"):
        cv2.imwrite(str(tmp_path / "images" / "train" / f"{n}.jpg"), img)
    for n, body in (labels or {}).items():
        (tmp_path / "labels" / "train" / f"{n}.txt").write_text(body)
    y = tmp_path / "data.yaml"
    y.write_text(text)
    return y


@pytest.mark.parametrize(
    ("text", "labels", "message"),
    [
        ("path: .\ntrain: images/train\nval: images/train\nnames: [a, b]\nnc: 3\n", None, "nc is 3 but names"),
        ("path: .\ntrain: images/train\nnames: [a, b]\n", None, "'val:' is missing"),
        ("path: nowhere\ntrain: images/train\nval: images/train\nnames: [a]\n", None, "which is not a folder"),
        ("path: .\ntrain: images/nope\nval: images/train\nnames: [a]\n", None, "neither a folder of images"),
        ("path: .\ntrain: images/train\nval: images/train\nnames: [a]\n", None, "has a label file"),
        ("path: .\ntrain: images/train\nval: images/train\nnames: [a, b]\n",
         {"a": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 .1 .1"}, "a.txt:2: class 7 is outside 0..1"),
        ("path: .\ntrain: images/train\nval: images/train\nnames: [a]\n", {"a": "0 0.5 x 0.2 0.2"},
         "a.txt:1: '0 0.5 x 0.2 0.2' is not"),
        ("path: .\ntrain: list.txt\nval: images/train\nnames: [a]\n", None, "list.txt:2: image images/train/zz.jpg"),
        ("[1, 2]\n", None, "must be a mapping"),
        ("names: {0: a, 2: b}\ntrain: x\nval: x\n", None, "without gaps"),
    ],
)
def test_stage_dataset_reports_bad_datasets_by_file(
    tmp_path: Path, text: str, labels: dict[str, str] | None, message: str
) -> None:
    (tmp_path / "list.txt").write_text("images/train/a.jpg\nimages/train/zz.jpg\n")
    y = _bad(tmp_path, text, labels)
    with pytest.raises(TrainError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        stage_dataset(y, tmp_path / "staged")
    assert "\n" not in str(e.value)
    with pytest.raises(TrainError, match="not found"):
        stage_dataset(tmp_path / "missing.yaml", tmp_path / "staged2")


def test_bad_train_arguments_fail_before_any_work(mini_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TrainError, match="built-in model name"):
        train(mini_yaml, epochs=1, name="yolo11n-coco")
    with pytest.raises(TrainError, match="multiple of 32"):
        train(mini_yaml, epochs=1, imgsz=100)
    with pytest.raises(TrainError, match="not usable"):
        train(mini_yaml, epochs=1, name="../evil")
    assert cli_main(["models", "train", "--data", "/no/such/data.yaml", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/no/such/data.yaml not found" in err


# --------------------------------------------------------------------------------------------- unfusing


def test_unfused_base_computes_what_the_fused_one_did(
    models_dir: Path, media_dir: Path, thela: Path, tmp_path: Path
) -> None:
    """yolo11n-coco.pt has its batch norms folded in; the trainable copy must compute the same function."""
    src = models_dir / "yolo11n-coco.pt"
    imgs = sorted((thela / "images" / "train_dog_subset").glob("*.jpg"))
    with offline_ultralytics():
        n = unfuse_checkpoint(src, tmp_path / "unfused.pt", imgs, 320)
        assert n == 81
        fused = torch.load(str(src), map_location="cpu", weights_only=False)["model"].float().eval()
        unfused = torch.load(str(tmp_path / "unfused.pt"), map_location="cpu", weights_only=False)["model"].eval()
        assert sum(1 for m in unfused.modules() if isinstance(m, torch.nn.BatchNorm2d)) == 81
        bus = cv2.imread(str(media_dir / "generic_bus_ultralytics.jpg"))
        x = torch.from_numpy(cv2.resize(bus, (320, 320))[:, :, ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
        with torch.no_grad():
            a, b = fused(x)[0], unfused(x)[0]
        assert torch.allclose(a, b, atol=0.02, rtol=1e-3), (a - b).abs().max()
        # An unfused checkpoint needs nothing: it is left as it is.
        assert unfuse_checkpoint(tmp_path / "unfused.pt", tmp_path / "again.pt", imgs, 320) == 0
        assert not (tmp_path / "again.pt").exists()


# --------------------------------------------------------------------------------------------- training


def test_training_registers_a_model_a_camera_can_use(trained, cache: Path, media_dir: Path) -> None:  # type: ignore[no-untyped-def]
    out, record = trained
    weights = cache / "trained" / "thela-mini" / "thela-mini.pt"
    assert "trained thela-mini from yolo11n-coco" in out and "6 train / 4 val images, 1 epochs at imgsz 160" in out
    assert f"registered thela-mini: {weights}" in out and "use it: detector.model: thela-mini" in out
    assert record["classes"] == NAMES and record["epochs"] == 1 and record["imgsz"] == 160
    assert record["images"] == {"train": 6, "val": 4} and record["weights"] == str(weights) and weights.is_file()
    assert set(record["val"]) == {"precision", "recall", "mAP50", "mAP50-95"}
    assert all(0.0 <= v <= 1.0 for v in record["val"].values())
    assert f"mAP50 {record['val']['mAP50']:.3f}" in out
    entry = get_entry("thela-mini")
    assert entry is not None and entry.origin == "local" and Path(entry.path) == weights
    assert entry.sha256 == sha256_file(weights) == record["sha256"] and list(entry.classes) == NAMES
    assert entry.version == record["version"] and entry.version.startswith("thela-mini-") and entry.imgsz == 160
    assert record["base"]["name"] == "yolo11n-coco"
    assert (cache / "trained" / "thela-mini" / "run" / "results.csv").is_file()

    # A camera config names it: both backends load it by name, with its classes, and detect on a real image.
    img = cv2.imread(str(media_dir / "india_road_thela_animal" / "images" / "val" / "img_125.jpg"))
    outs = []
    for backend in ("ultralytics", "onnx"):
        det = create_detector(DetectorConfig(backend=backend, model="thela-mini", imgsz=160, confidence=0.01))
        assert det.class_names == NAMES
        assert (det.weights.name, det.weights.sha256, det.weights.version) == ("thela-mini", entry.sha256,
                                                                                 entry.version)
        d = det.detect([img])[0]
        assert set(d.data["class_name"]) <= set(NAMES)
        outs.append(d)
    # The ONNX export computes what the checkpoint does (same boxes, up to float rounding).
    a, b = outs
    assert len(a) == len(b)
    if len(a):
        order_a, order_b = np.argsort(-a.confidence), np.argsort(-b.confidence)
        assert np.allclose(a.xyxy[order_a], b.xyxy[order_b], atol=2.0)


def test_export_onnx_and_openvino_register_and_load(trained, cache: Path, media_dir: Path) -> None:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    assert export_command("thela-mini", "openvino", out=buf) == 0
    assert "registered thela-mini-openvino" in buf.getvalue() and "detector.backend: openvino" in buf.getvalue()
    ov = get_entry("thela-mini-openvino")
    xml = cache / "exports" / "thela-mini-openvino" / "thela-mini-openvino.xml"
    assert ov is not None and ov.format == "openvino" and Path(ov.path) == xml and list(ov.classes) == NAMES
    assert dict(ov.companions) == {"thela-mini-openvino.bin": sha256_file(xml.with_suffix(".bin"))}
    assert ov.imgsz == 160  # the trained model's size is the default

    onnx = export_model("thela-mini", "onnx", imgsz=160)
    assert onnx.path == cache / "exports" / "thela-mini-onnx" / "thela-mini-onnx.onnx"
    assert onnx.files["thela-mini-onnx.onnx"] == onnx.path.stat().st_size > 1_000_000

    img = cv2.imread(str(media_dir / "india_road_thela_animal" / "images" / "val" / "img_028.jpg"))
    dets = {}
    runs = (("openvino", "thela-mini-openvino"), ("onnx", "thela-mini-onnx"), ("openvino", "thela-mini"))
    for backend, model in runs:
        det = create_detector(DetectorConfig(backend=backend, model=model, imgsz=160, confidence=0.01))
        assert det.backend == backend and det.class_names == NAMES
        dets[(backend, model)] = det.detect([img, img])
    ref = dets[("onnx", "thela-mini-onnx")][0]
    assert len(ref) > 0
    for d in [*dets.values()]:
        assert len(d) == 2 and same_boxes(d[0], d[1], floor=0.0)  # one model, one picture twice: identical
        # Across backends the numerics differ (OpenVINO keeps fp16 weights; this one-epoch model is sensitive to them:
        # 0.274 against 0.254 seen): boxes scored near the 0.01 threshold come and go (21 against 19 seen under load),
        # so each box clearly above it must have its counterpart, same class, same place, score within 0.05.
        assert same_boxes(d[0], ref, floor=0.1, tol=0.05) and same_boxes(ref, d[0], floor=0.1, tol=0.05)

    # The registry checks the OpenVINO weights file too.
    xml.with_suffix(".bin").write_bytes(xml.with_suffix(".bin").read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsChecksumError, match=r"thela-mini-openvino\.bin"):
        resolve("thela-mini-openvino")


def same_boxes(a, b, *, floor: float, tol: float = 0.01) -> bool:  # type: ignore[no-untyped-def]
    """Every box of ``a`` scored at least ``floor`` has a box of ``b`` of the same class, IoU >= 0.9 and a score
    within ``tol`` (``floor`` 0: also the same number of boxes)."""
    if floor == 0.0 and len(a) != len(b):
        return False
    iou = sv.box_iou_batch(a.xyxy, b.xyxy)
    for i, (cls, conf) in enumerate(zip(a.class_id, a.confidence, strict=True)):
        if conf >= floor and not ((iou[i] >= 0.9) & (b.class_id == cls) & (np.abs(b.confidence - conf) <= tol)).any():
            return False
    return True


def test_export_errors(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert cli_main(["models", "export", "--model", "no-such-model", "--format", "onnx"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="not supported"):
        export_model("thela-mini", "tflite")
    with pytest.raises(WeightsError, match="starts from an ultralytics .pt|exports start from"):
        export_model("yolo11n-coco-int8-320", "onnx")
    with pytest.raises(WeightsError, match="built-in model name"):
        export_model("thela-mini", "onnx", name="yolo11n-coco")
    # An OpenVINO IR is registered with its .bin; without it, registering is refused.
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(WeightsError, match=r"without its weights file m\.bin"):
        register("lonely", tmp_path / "m.xml", NAMES, "1")
