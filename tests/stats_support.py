"""A seeded November 2026 for the statistics tests: cases drafted from four cameras of the example organisation
(examples/organisation.yaml) and walked through the workflow at injected times, the console's clock fixed at
28 November 10:00 in Shanghai, and a base map picture for the hotspot view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from bureau_support import local
from sqlalchemy.orm import Session, sessionmaker
from test_cases_drafter import make_sealed

from nonsite.cases import draft_case
from nonsite.cases.legal_basis import default_catalogue
from nonsite.cases.organisation import Organisation, load_organisation
from nonsite.cases.workflow import apply_action

ROOT = Path(__file__).resolve().parents[1]
ORG_FILE = ROOT / "examples" / "organisation.yaml"
#: The console's clock in these tests: Saturday 28 November 2026, 10:00 in Shanghai.
NOW = local(2026, 11, 28, 10)
#: A camera name that a spreadsheet would run as a formula (the CSV/Excel injection attack).
EVIL_NAME = '=HYPERLINK("http://evil.example/x","新城路口")'
#: camera id -> (name, lat, lon): carpark is listed in grid yanshi-east, fence lies in its polygon, junction in
#: shifan-jie's, xincheng in xincheng-1's.
CAMERAS: dict[str, tuple[str, float, float]] = {
    "cam-carpark-01": ("停车场入口", 31.2305, 121.4740),
    "cam-fence-02": ("围栏东侧", 31.2311, 121.4750),
    "cam-junction-03": ("示范街路口", 31.2320, 121.4761),
    "cam-xincheng-04": (EVIL_NAME, 31.2425, 121.4825),
}
# (camera, type, day of November, hour in Shanghai, what happens to it)
PLAN: list[tuple[str, str, int, int, str]] = [
    ("cam-carpark-01", "sidewalk_parking", 2, 9, "closed_fast"),
    ("cam-carpark-01", "sidewalk_parking", 3, 10, "closed_fast"),
    ("cam-carpark-01", "sidewalk_parking", 4, 11, "fp"),
    ("cam-carpark-01", "sidewalk_parking", 9, 9, "closed_late"),
    ("cam-carpark-01", "street_vending", 10, 15, "penalty"),
    ("cam-carpark-01", "sidewalk_parking", 12, 8, "confirmed"),
    ("cam-carpark-01", "sidewalk_parking", 20, 9, "rectified"),
    ("cam-fence-02", "sidewalk_parking", 5, 14, "fp"),
    ("cam-fence-02", "sidewalk_parking", 6, 14, "fp"),
    ("cam-fence-02", "street_vending", 16, 10, "closed_fast"),
    ("cam-fence-02", "sidewalk_parking", 26, 16, "draft"),
    ("cam-junction-03", "sidewalk_parking", 2, 16, "closed_fast"),
    ("cam-junction-03", "sidewalk_parking", 11, 9, "dup"),
    ("cam-junction-03", "sidewalk_parking", 13, 9, "confirmed"),
    ("cam-junction-03", "street_vending", 23, 9, "dispatched"),
    ("cam-junction-03", "stray_dog", 17, 7, "closed_fast"),
    ("cam-junction-03", "stray_dog", 24, 7, "confirmed"),
    ("cam-xincheng-04", "sidewalk_parking", 3, 9, "closed_fast"),
    ("cam-xincheng-04", "sidewalk_parking", 4, 9, "transfer"),
    ("cam-xincheng-04", "street_vending", 18, 9, "fp"),
    ("cam-xincheng-04", "sidewalk_parking", 27, 9, "confirmed"),
    ("cam-carpark-01", "sidewalk_parking", 30, 20, "draft"),  # after NOW: still November
]
#: Alerts of October (outside the default period) so the period filter is seen to work.
OCTOBER: list[tuple[str, str, int, int, str]] = [
    ("cam-carpark-01", "sidewalk_parking", 20, 9, "closed_fast"),
    ("cam-xincheng-04", "street_vending", 21, 9, "confirmed"),
]


@dataclass
class Seeded:
    org: Organisation
    numbers: list[str]


def _walk(sf: sessionmaker[Session], case_id: int, start: datetime, how: str) -> None:
    limits = default_catalogue().time_limit_table()
    h = timedelta(hours=1)

    def act(action: str, at: datetime, **kw: Any) -> None:
        actor = {"approve": "rev", "close": "rev", "rectify": "field"}.get(action, "op")
        apply_action(sf, case_id, action, actor, time_limits=limits, now=at, **kw)

    if how == "draft":
        return
    if how in ("fp", "dup"):
        act("dismiss", start + h / 2, reason="false_positive" if how == "fp" else "duplicate")
        return
    act("confirm", start + h / 4)
    if how == "confirmed":
        return
    decision: dict[str, Any] = {"kind": "warning"}
    if how == "penalty":
        decision = {"kind": "penalty", "amount_yuan": 50}
    elif how == "transfer":
        decision = {"kind": "transfer"}
    act("approve", start + 2 * h, decision=decision)
    act("dispatch", start + 3 * h)
    if how == "dispatched":
        return
    late = how == "closed_late"
    act("rectify", start + (timedelta(days=12) if late else 20 * h), note="已整改")
    if how == "rectified":
        return
    act("close", start + (timedelta(days=13) if late else 26 * h))


def seed_november(sf: sessionmaker[Session], *, october: bool = True) -> Seeded:
    """Draft and walk :data:`PLAN` (and :data:`OCTOBER`) into the case database behind ``sf``."""
    org = load_organisation(ORG_FILE)
    numbers = []
    for month, plan in ((11, PLAN), *(((10, OCTOBER),) if october else ())):
        for cam, type_, day, hour, how in plan:
            at = local(2026, month, day, hour)
            sealed = make_sealed(type_=type_, camera_id=cam, confirmed_at=at)
            name, lat, lon = CAMERAS[cam]
            v = sealed.violation
            v = v.model_copy(update={"camera_name": name,
                                     "location": v.location.model_copy(update={"lat": lat, "lon": lon})})
            sealed = sealed.model_copy(update={"violation": v})
            case, created = draft_case(sf, sealed, "NS", now=at + timedelta(seconds=5), organisation=org)
            assert created
            numbers.append(case.number)
            _walk(sf, case.id, at, how)
    return Seeded(org, numbers)


def base_map(folder: Path) -> Path:
    """An organisation file like the example's with a base map: a 800x600 picture covering the example's grids
    (west 121.4720, south 31.2290, east 121.4860, north 31.2460)."""
    img = np.full((600, 800, 3), 235, np.uint8)
    cv2.rectangle(img, (40, 40), (760, 560), (200, 200, 200), 2)
    cv2.imwrite(str(folder / "map.png"), img)
    text = ORG_FILE.read_text(encoding="utf-8")
    text += ("\nbase_map:\n  image: map.png\n  size: [800, 600]\n"
             "  bounds: [121.4720, 31.2290, 121.4860, 31.2460]\n  points:\n    shifan-jie: [300, 420]\n")
    path = folder / "organisation.yaml"
    path.write_text(text, encoding="utf-8")
    return path
