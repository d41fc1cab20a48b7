"""`nonsite cases export-negatives`: alerts dismissed as false positives, on real sealed evidence, become a
YOLO dataset of hard negatives (original stills, empty labels, the wrong boxes in a JSON sidecar)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import pytest
import yaml
from cases_support import DOG_IMAGE, real_sealed, video_frame

from nonsite.cases import AuditEntry, Case, Role, confirm, dismiss, draft_case, open_db
from nonsite.cases.negatives import export_negatives
from nonsite.cli import main
from nonsite.evidence import LocalStore
from nonsite.evidence.signing import Signer


def test_false_positives_become_hard_negatives(tmp_path: Path, media_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    store = LocalStore(data / "evidence")
    signer = Signer.load_or_create(data / "keys" / "signing.pem")
    sf = open_db(f"sqlite:///{data / 'cases.db'}")

    def draft(**kw: object) -> Case:
        return draft_case(sf, real_sealed(store, signer, media_dir, **kw), "SH")[0]  # type: ignore[arg-type]

    vending = draft()  # a still photo: onset and confirm are the same frame
    dog = draft(type_="stray_dog", image=DOG_IMAGE)
    parking = draft(type_="sidewalk_parking", frame=video_frame(media_dir, index=0),
                    confirm_frame=video_frame(media_dir, index=40), frame_boxes=[(100, 120, 220, 200),
                                                                                  (300, 50, 380, 110)])
    duplicate = draft(type_="sidewalk_parking", frame=video_frame(media_dir, index=80))
    kept = draft()

    dismiss(sf, vending.id, "li", "false_positive", "umbrella, not a cart", role=Role.OPERATOR)
    dismiss(sf, dog.id, "li", "false_positive", role=Role.OPERATOR)
    confirm(sf, parking.id, "li", role=Role.OPERATOR)
    dismiss(sf, parking.id, "wang", "false_positive", "legal parking bay", role=Role.REVIEWER)
    dismiss(sf, duplicate.id, "li", "duplicate", role=Role.OPERATOR)  # not a false detection
    confirm(sf, kept.id, "li", role=Role.OPERATOR)  # still open

    out = tmp_path / "negatives"
    assert main(["cases", "export-negatives", "--data-dir", str(data), "--out", str(out)]) == 0
    n_boxes = sum(len(c.violation["boxes"]["onset"]) for c in (vending, dog)) + 2 * 2
    summary = capsys.readouterr().out
    assert f"exported 4 hard-negative image(s) with {n_boxes} false box(es) from 3 case(s)" in summary, summary

    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == sorted([f"{vending.number}_onset.jpg", f"{dog.number}_onset.jpg",
                             f"{parking.number}_onset.jpg", f"{parking.number}_confirm.jpg"])
    cases = {c.number: c for c in (vending, dog, parking)}
    for name in images:
        stem = name[:-4]
        label = out / "labels" / f"{stem}.txt"
        assert label.is_file() and label.read_text() == ""  # background: nothing to detect here
        side = json.loads((out / "false_detections" / f"{stem}.json").read_text(encoding="utf-8"))
        assert side["image"] == f"images/{name}" and side["label"] == f"labels/{stem}.txt"
        case = cases[side["case_number"]]
        evidence = {e["role"]: e for e in case.evidence}
        # The untouched original the detector saw, byte for byte.
        assert hashlib.sha256((out / "images" / name).read_bytes()).hexdigest() == evidence[side["role"]]["sha256"]
        img = cv2.imread(str(out / "images" / name))
        assert img is not None and (img.shape[1], img.shape[0]) == (side["width"], side["height"])
        boxes = case.violation["boxes"][side["role"]]
        assert [b["xyxy"] for b in side["false_detections"]] == [b["xyxy"] for b in boxes]
        w, h = side["width"], side["height"]
        for fd in side["false_detections"]:
            x1, y1, x2, y2 = fd["xyxy"]
            assert fd["yolo"] == pytest.approx(
                [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], abs=1e-5)
    parking_side = json.loads((out / "false_detections" / f"{parking.number}_confirm.json").read_text())
    assert (parking_side["dismissed_by"], parking_side["dismiss_note"]) == ("wang", "legal parking bay")
    assert parking_side["model"]["name"] == "yolo11n-coco" and len(parking_side["false_detections"]) == 2

    spec = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    assert spec == {"train": "images", "val": "images", "nc": 3, "names": {0: "car", 1: "dog", 2: "thela"}}
    assert {fd["class_id"] for fd in parking_side["false_detections"]} == {0}
    index = json.loads((out / "negatives.json").read_text(encoding="utf-8"))
    assert len(index["images"]) == 4 and index["skipped"] == []
    # The trainer the project uses reads it: four background images, nothing corrupt.
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    spec_u = check_det_dataset(str(out / "data.yaml"))
    ds = YOLODataset(img_path=spec_u["train"], data=spec_u, task="detect", augment=False)
    assert len(ds) == 4 and all(len(lb["cls"]) == 0 for lb in ds.labels)

    # --since: only what was dismissed from then on (the vending alert was dismissed before the dog).
    with sf() as s:
        dog_dismissed = s.query(AuditEntry).filter_by(case_id=dog.id, action="dismiss").one().at
    later = export_negatives(sf, store, tmp_path / "later", since=dog_dismissed)
    assert (later.cases, later.images) == (2, 3)
    assert main(["cases", "export-negatives", "--data-dir", str(data), "--out", str(tmp_path / "d"),
                                "--since", "2100-01-01"]) == 0
    assert "exported 0 hard-negative image(s)" in capsys.readouterr().out

    # A still that no longer matches its sha256 is reported, not exported (its intact twin, the confirm
    # still of the same frame, is exported instead).
    key = next(e["key"] for e in vending.evidence if e["role"] == "onset")
    store.put(key, store.get(key)[:-10] + bytes(10), "image/jpeg")
    again = export_negatives(sf, store, tmp_path / "again")
    assert again.skipped == [f"{vending.number} onset: sha256 differs from the evidence list (not exported)"]
    assert again.images == 4 and (tmp_path / "again" / "images" / f"{vending.number}_confirm.jpg").is_file()
    assert not (tmp_path / "again" / "images" / f"{vending.number}_onset.jpg").exists()
    assert main(["cases", "export-negatives", "--data-dir", str(data), "--out", str(out), "--since", "21/11"]) == 2
    assert "--since '21/11' is not a date" in capsys.readouterr().err
    sf.kw["bind"].dispose()
