"""Export dismissed false positives as a hard-negative dataset for retraining (``nonsite cases export-negatives``).

A case dismissed with reason ``false_positive`` means the detector saw something that was not there. Its
original stills (the untouched frames the detector ran on) become background images: an **empty** YOLO
label file each (nothing to find here), plus a JSON sidecar listing the boxes and classes the detector
got wrong, so a trainer can also mine them (e.g. as ignore regions). Layout::

    OUT/data.yaml                 ultralytics dataset file (train and val: images/; no ``path``: relative
                                  to this file)
    OUT/images/<case>_<role>.jpg  the original still, byte for byte as stored (sha256 checked)
    OUT/labels/<case>_<role>.txt  empty: a hard negative
    OUT/false_detections/<case>_<role>.json   the wrong boxes (pixels and YOLO-normalised) and the case
    OUT/negatives.json            index of everything exported

Identical stills (onset and confirm of a still scene) are exported once. Re-running overwrites.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases.db import AuditEntry, Case, CaseStatus

__all__ = ["NEGATIVE_ROLES", "NegativesExport", "export_negatives", "false_positive_cases"]

log = logging.getLogger(__name__)

#: Stills whose boxes the event records, in the pixels of the original (untouched) frame.
NEGATIVE_ROLES: tuple[str, ...] = ("onset", "confirm")


@dataclass
class NegativesExport:
    out_dir: Path
    cases: int = 0
    images: int = 0
    boxes: int = 0
    classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what could not be exported, and why

    def summary(self) -> str:
        text = (f"exported {self.images} hard-negative image(s) with {self.boxes} false box(es) from "
                f"{self.cases} case(s) to {self.out_dir}")
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(self.skipped)
        return text


def false_positive_cases(
    session: Session, since: datetime | None = None, until: datetime | None = None,
) -> list[tuple[Case, datetime, str]]:
    """Cases dismissed as false positives (dismissed at or after ``since``, before ``until``), oldest
    dismissal first, with when and by whom."""
    dismissed = (
        select(AuditEntry.case_id, func.max(AuditEntry.id).label("entry"))
        .where(AuditEntry.action == "dismiss").group_by(AuditEntry.case_id).subquery()
    )
    stmt = (
        select(Case, AuditEntry.at, AuditEntry.actor)
        .join(dismissed, dismissed.c.case_id == Case.id)
        .join(AuditEntry, AuditEntry.id == dismissed.c.entry)
        .where(Case.status == CaseStatus.DISMISSED, Case.dismiss_reason == "false_positive")
        .order_by(AuditEntry.at, Case.id)
    )
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    return [(c, at, actor) for c, at, actor in session.execute(stmt).all()]


def _yolo(xyxy: list[float], w: int, h: int) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
    y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
    return [round((x1 + x2) / 2 / w, 6), round((y1 + y2) / 2 / h, 6), round((x2 - x1) / w, 6),
            round((y2 - y1) / h, 6)]


def export_negatives(
    session_factory: sessionmaker[Session],
    store: Any,
    out_dir: str | Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> NegativesExport:
    """Write the hard-negative dataset of every false-positive dismissal in ``[since, until)`` to ``out_dir``."""
    out = Path(out_dir)
    result = NegativesExport(out_dir=out)
    with session_factory() as session:
        rows = false_positive_cases(session, since, until)
    for sub in ("images", "labels", "false_detections"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    pending: list[dict[str, Any]] = []
    class_names: set[str] = set()
    for case, dismissed_at, actor in rows:
        violation = case.violation if isinstance(case.violation, dict) else {}
        boxes_by_role = violation.get("boxes") or {}
        by_role = {str(e.get("role")): e for e in case.evidence if isinstance(e, dict)}
        seen: set[str] = set()
        exported_any = False
        for role in NEGATIVE_ROLES:
            item = by_role.get(role)
            if item is None:
                continue
            sha = str(item.get("sha256", ""))
            if sha in seen:  # onset and confirm are the same frame
                continue
            try:
                data = store.get(str(item["key"]))
            except Exception as exc:  # missing blob or store down: report, keep going
                result.skipped.append(f"{case.number} {role}: cannot read {item.get('key')} ({exc})")
                continue
            if hashlib.sha256(data).hexdigest() != sha:
                result.skipped.append(f"{case.number} {role}: sha256 differs from the evidence list (not exported)")
                continue
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                result.skipped.append(f"{case.number} {role}: not a decodable image")
                continue
            seen.add(sha)
            h, w = img.shape[:2]
            boxes = [b for b in boxes_by_role.get(role, []) if isinstance(b, dict) and "xyxy" in b]
            class_names.update(str(b.get("class_name", "")) for b in boxes)
            pending.append({"case": case, "role": role, "data": data, "sha256": sha, "width": w, "height": h,
                            "boxes": boxes, "dismissed_at": dismissed_at, "actor": actor})
            exported_any = True
        result.cases += exported_any

    names = sorted(n for n in class_names if n)
    ids = {n: i for i, n in enumerate(names)}
    index = []
    for entry in pending:
        case: Case = entry["case"]
        stem = f"{case.number}_{entry['role']}"
        (out / "images" / f"{stem}.jpg").write_bytes(entry["data"])
        (out / "labels" / f"{stem}.txt").write_text("", encoding="utf-8")
        false_boxes = [
            {"class_name": b.get("class_name"), "class_id": ids.get(str(b.get("class_name"))),
             "confidence": b.get("confidence"), "track_id": b.get("track_id"), "xyxy": list(b["xyxy"]),
             "yolo": _yolo(b["xyxy"], entry["width"], entry["height"])}
            for b in entry["boxes"]
        ]
        violation = case.violation if isinstance(case.violation, dict) else {}
        sidecar = {
            "image": f"images/{stem}.jpg", "label": f"labels/{stem}.txt", "sha256": entry["sha256"],
            "width": entry["width"], "height": entry["height"], "case_number": case.number,
            "event_id": case.event_id, "violation_type": case.type, "camera_id": case.camera_id,
            "zone_id": case.zone_id, "role": entry["role"], "confirmed_at": case.confirmed_at.isoformat(),
            "dismissed_at": entry["dismissed_at"].isoformat(), "dismissed_by": entry["actor"],
            "dismiss_note": case.dismiss_note, "model": violation.get("model"),
            "false_detections": false_boxes,
        }
        (out / "false_detections" / f"{stem}.json").write_text(
            json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        index.append({k: sidecar[k] for k in ("image", "case_number", "event_id", "violation_type", "role",
                                               "sha256", "dismissed_at")} | {"false_detections": len(false_boxes)})
        result.images += 1
        result.boxes += len(false_boxes)
    result.classes = names

    data_yaml = {
        "train": "images",
        "val": "images",
        "nc": len(names),
        "names": dict(enumerate(names)),
    }
    header = ("# Hard negatives exported by `nonsite cases export-negatives`: stills of alerts dismissed as false\n"
              "# positives. Every label file is empty (background: nothing to detect); the boxes the detector got\n"
              "# wrong are in false_detections/*.json with class ids from `names` below. Merge into a training\n"
              "# set whose own data.yaml defines the real classes.\n")
    (out / "data.yaml").write_text(header + yaml.safe_dump(data_yaml, allow_unicode=True, sort_keys=False),
                                   encoding="utf-8")
    (out / "negatives.json").write_text(json.dumps(
        {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
         "images": index, "skipped": result.skipped}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    log.info("%s", result.summary())
    return result
