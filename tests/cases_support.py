"""Helpers for the cases tests: real evidence packages from the shared media, sealed and signed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2

from nonsite.bus.events import (
    BoxRecord,
    EvidenceSealed,
    Location,
    ModelInfo,
    OffenderHint,
    ViolationEvent,
    new_event_id,
)
from nonsite.evidence.capture import CameraMeta, Still, write_package_blobs
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer
from nonsite.evidence.store import Store

DATASET = "india_road_thela_animal"
#: Real photographs with real labelled boxes: (image, YOLO class id in the dataset, detector class name).
VENDING_IMAGE = ("picture_108.jpg", 1, "thela")
DOG_IMAGE = ("img_007.jpg", 2, "dog")


def labelled_boxes(media_dir: Path, image: str, class_id: int) -> tuple[cv2.typing.MatLike, list[tuple[float, ...]]]:
    """The image (BGR) and its labelled boxes of ``class_id`` in pixels (x1, y1, x2, y2)."""
    root = media_dir / DATASET
    img = cv2.imread(str(root / "images" / "val" / image))
    assert img is not None, f"cannot read {image} from the shared media"
    h, w = img.shape[:2]
    boxes = []
    for line in (root / "labels" / "val" / (Path(image).stem + ".txt")).read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and int(parts[0]) == class_id:
            cx, cy, bw, bh = (float(x) for x in parts[1:])
            boxes.append(((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
    assert boxes, f"{image} has no label of class {class_id}"
    return img, boxes


PARKING_VIDEO = "parking_lot_cctv_timelapse_a_640x480.mp4"
#: A car parked in the parking-lot video's frame 0 (pixels), standing in for a detector box.
PARKING_BOX = (100.0, 120.0, 220.0, 200.0)


def video_frame(media_dir: Path, name: str = PARKING_VIDEO, index: int = 0) -> cv2.typing.MatLike:
    cap = cv2.VideoCapture(str(media_dir / name))
    try:
        for _ in range(index + 1):
            ok, frame = cap.read()
            assert ok, f"cannot read frame {index} of {name}"
    finally:
        cap.release()
    return frame


def real_sealed(
    store: Store,
    signer: Signer,
    media_dir: Path,
    *,
    type_: str = "street_vending",
    image: tuple[str, int, str] = VENDING_IMAGE,
    frame: cv2.typing.MatLike | None = None,
    frame_boxes: list[tuple[float, float, float, float]] | None = None,
    confirm_frame: cv2.typing.MatLike | None = None,
    class_name: str | None = None,
    camera_id: str = "cam-east-gate",
    camera_name: str = "东门路口",
    zone_id: str = "z-walk",
    zone_name: str = "人行道",
    confirmed_at: datetime | None = None,
    plate: str | None = None,
    dwell_s: float = 95.0,
) -> EvidenceSealed:
    """A violation event packaged by ``write_package_blobs`` from a real photo (a still scene) and sealed.

    By default the photo and its labelled boxes come from the shared dataset (``image``); ``frame`` and
    ``frame_boxes`` (with ``class_name``) use a given frame instead.
    """
    if frame is not None:
        img, boxes, cls = frame, list(frame_boxes or [PARKING_BOX]), class_name or "car"
    else:
        name, class_id, cls = image
        img, boxes = labelled_boxes(media_dir, name, class_id)
    confirmed = confirmed_at or datetime(2026, 11, 21, 11, 3, 12, tzinfo=UTC)
    started = confirmed - timedelta(seconds=dwell_s)
    records = [BoxRecord(xyxy=b, class_name=cls, confidence=0.81, track_id=5 + i)  # type: ignore[arg-type]
               for i, b in enumerate(boxes)]
    event_id = new_event_id()
    items = write_package_blobs(
        store, event_id=event_id, violation_type=type_,
        camera=CameraMeta(id=camera_id, name=camera_name, address="上海市黄浦区南京东路100号"),
        zone_id=zone_id, zone_polygon=[(0.05, 0.4), (0.95, 0.4), (0.95, 0.98), (0.05, 0.98)],
        onset=Still(started.timestamp(), img, records),
        confirm=Still(confirmed.timestamp(), confirm_frame if confirm_frame is not None else img, records),
        closeup_xyxy=records[0].xyxy, clip=[], sequence=1, timezone="Asia/Shanghai",
    )
    violation = ViolationEvent(
        event_id=event_id, type=type_, camera_id=camera_id, camera_name=camera_name, zone_id=zone_id,
        zone_name=zone_name, started_at=started, confirmed_at=confirmed, track_ids=[r.track_id or 0 for r in records],
        boxes={"onset": records, "confirm": records}, confidence=0.81, dwell_s=dwell_s,
        model=ModelInfo(name="yolo11n-coco", version="8.3", sha256="ab" * 32, backend="onnx"),
        rule_config_hash="cd" * 32, evidence=items,
        location=Location(address="上海市黄浦区南京东路100号", lat=31.2397, lon=121.4998),
        offender_hint=OffenderHint(plate=plate, plate_confidence=0.93, plate_format="cn_standard") if plate else None,
    )
    return seal(store, signer, violation)


def draft_in_process(url: str, events_json: list[str], prefix: str, barrier: object) -> None:
    """Child process body for the concurrency tests: open the database, wait for the others, draft them all."""
    from nonsite.cases import draft_case, open_db

    sf = open_db(url)
    barrier.wait()  # type: ignore[attr-defined]
    for raw in events_json:
        draft_case(sf, EvidenceSealed.model_validate_json(raw), prefix)
    sf.kw["bind"].dispose()
