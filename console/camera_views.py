"""Cameras: health, the latest snapshot, and the zone editor that saves through :class:`CameraControl`.

Zones are checked here before they reach the cameras (at least three points, coordinates in 0..1, a
known kind, unique ids), each problem named with the zone and the fix; the camera control checks again
and persists them into the live configuration.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from nonsite.config.cameras import ZoneConfig, scrub
from nonsite.config.manifest import zone_kinds
from nonsite.console.api import err
from nonsite.console.auth import authorize
from nonsite.console.cameras import CameraControl, CameraStatus
from nonsite.console.i18n import local_time
from nonsite.console.render import error_page, render, translator
from nonsite.console.view_guard import view_of
from nonsite.console.views import root_path, state_of

log = logging.getLogger(__name__)

pages = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])
api = APIRouter(prefix="/api", tags=["cameras"], dependencies=[Depends(authorize)])

MAX_ZONES = 64
MAX_POINTS = 200
_ZONE_FIELDS = {"id", "name", "kind", "polygon", "dwell_s", "schedule", "rules"}


@dataclass(frozen=True)
class ZoneProblem:
    zone: int | None
    """Index of the zone in the list (None: the list itself)."""
    zone_id: str
    code: str
    message: str
    """English, for the API."""
    fields: dict[str, Any]


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def validate_zones(value: Any) -> tuple[list[dict[str, Any]], list[ZoneProblem]]:
    """Zones as the camera configuration takes them, or every problem found (``code`` per problem)."""
    problems: list[ZoneProblem] = []

    def bad(i: int | None, zid: str, code: str, message: str, **fields: Any) -> None:
        problems.append(ZoneProblem(i, zid, code, message, {"n": (i + 1) if i is not None else 0, "id": zid,
                                                              **fields}))

    if not isinstance(value, list):
        bad(None, "", "not_a_list", "zones must be a list of {id, name, kind, polygon, dwell_s, schedule, rules}")
        return [], problems
    if len(value) > MAX_ZONES:
        bad(None, "", "too_many_zones", f"{len(value)} zones; at most {MAX_ZONES} per camera", max=MAX_ZONES)
        return [], problems
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, zone in enumerate(value):
        if not isinstance(zone, dict):
            bad(i, "", "not_an_object", f"zone {i + 1} is not an object")
            continue
        zid = zone.get("id")
        zid_text = zid if isinstance(zid, str) else ""
        extra = sorted(set(zone) - _ZONE_FIELDS)
        if extra:
            bad(i, zid_text, "unknown_field", f"zone {i + 1}: unknown field(s) {', '.join(extra)}; use "
                f"{', '.join(sorted(_ZONE_FIELDS))}", names=", ".join(extra))
        try:
            ZoneConfig.model_validate({"id": zid, "kind": "sidewalk", "polygon": [(0, 0), (1, 0), (1, 1)]})
            id_ok = True
        except ValidationError:
            id_ok = False
        if not id_ok:
            bad(i, zid_text, "bad_id", f"zone {i + 1}: id {zid!r} must be 1-64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit")
        elif zid_text in seen:
            bad(i, zid_text, "duplicate_id", f"zone {i + 1}: id {zid_text!r} is used twice; ids must be unique")
        seen.add(zid_text)
        name = zone.get("name", "")
        if not isinstance(name, str) or len(name) > 128:
            bad(i, zid_text, "bad_name", f"zone {i + 1}: name must be text of at most 128 characters")
            name = ""
        kind = zone.get("kind")
        kinds = zone_kinds()
        if kind not in kinds:
            bad(i, zid_text, "unknown_kind", f"zone {i + 1}: kind {kind!r} is not one of {', '.join(kinds)}",
                kinds=", ".join(kinds))
        polygon = zone.get("polygon")
        points: list[list[float]] = []
        if not isinstance(polygon, list):
            bad(i, zid_text, "bad_polygon", f"zone {i + 1}: polygon must be a list of [x, y] points")
        elif len(polygon) < 3:
            bad(i, zid_text, "too_few_points", f"zone {i + 1}: a polygon needs at least 3 points, it has "
                f"{len(polygon)}", count=len(polygon))
        elif len(polygon) > MAX_POINTS:
            bad(i, zid_text, "too_many_points", f"zone {i + 1}: at most {MAX_POINTS} points", max=MAX_POINTS)
        else:
            for p in polygon:
                xy = [_number(c) for c in p] if isinstance(p, list) and len(p) == 2 else None
                if xy is None or xy[0] is None or xy[1] is None:
                    bad(i, zid_text, "bad_point", f"zone {i + 1}: point {p!r} is not [x, y] numbers")
                    break
                x, y = xy[0], xy[1]
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    bad(i, zid_text, "out_of_range", f"zone {i + 1}: point [{x}, {y}] is outside 0..1 "
                        "(coordinates are fractions of the image width and height)", x=x, y=y)
                    break
                points.append([round(x, 5), round(y, 5)])
        dwell = zone.get("dwell_s")
        if dwell is not None and ((d := _number(dwell)) is None or d <= 0 or d > 86_400):
            bad(i, zid_text, "bad_dwell", f"zone {i + 1}: dwell_s must be a number of seconds above 0 (at most "
                "86400), or null for the rule's default")
        if not any(p.zone == i for p in problems):
            item: dict[str, Any] = {"id": zid_text, "name": name.strip(), "kind": kind, "polygon": points}
            if dwell is not None:
                item["dwell_s"] = float(dwell)
            extra_problem = _schedule_and_rules(item, zone.get("schedule"), zone.get("rules"))
            if extra_problem is not None:
                code, message = extra_problem
                bad(i, zid_text, code, f"zone {i + 1}: {message}", detail=message)
            else:
                out.append(item)
    return (out if not problems else []), problems


def _schedule_and_rules(item: dict[str, Any], schedule: Any, rules: Any) -> tuple[str, str] | None:
    """Check a zone's ``schedule`` and ``rules`` (kept as the editor got them: the editor does not drop what it
    does not edit) and put them into ``item`` in their short form; (code, message) when they are invalid."""
    try:
        zone = ZoneConfig.model_validate({**item, "schedule": schedule or [], "rules": rules})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        code = "bad_schedule" if where.startswith("schedule") else "bad_rules"
        return code, f"{where or 'rules'}: {str(first.get('msg', '')).removeprefix('Value error, ')}"
    if zone.schedule:
        item["schedule"] = [w.model_dump(mode="json", exclude_defaults=True) for w in zone.schedule]
    if zone.rules is not None and zone.rules.named():
        item["rules"] = _set_only(zone.rules.model_dump(mode="json", exclude_none=True))
    return None


def _set_only(value: Any) -> Any:
    """``value`` without the keys whose value is None (None = inherit; a typed camera config lists every key)."""
    if isinstance(value, dict):
        return {k: _set_only(v) for k, v in value.items() if v is not None}
    return value


def _control(request: Request) -> CameraControl | None:
    control: CameraControl | None = state_of(request).cameras
    return control


def _camera(control: CameraControl, camera_id: str) -> CameraStatus | None:
    return next((c for c in control.cameras() if c.id == camera_id), None)


def _health(request: Request, cam: CameraStatus) -> dict[str, Any]:
    state = state_of(request)
    last = datetime.fromtimestamp(cam.last_frame_ts, UTC) if cam.last_frame_ts else None
    return {
        "id": cam.id, "name": cam.name or cam.id, "address": cam.address, "state": cam.state,
        "up": cam.state == "up", "fps": cam.fps, "last_frame": local_time(last, state.zone) if last else "",
        "age_s": max(0, int(datetime.now(UTC).timestamp() - cam.last_frame_ts)) if cam.last_frame_ts else None,
        "reconnects": cam.reconnects, "last_error": scrub(cam.last_error or ""), "zones": cam.zones,
        "snapshot_url": f"{root_path(request)}/cameras/{cam.id}/snapshot.jpg",
        "editor_url": f"{root_path(request)}/cameras/{cam.id}/zones",
        "view": view_of(request, cam),
        "worker": cam.worker,
        "reported_s": max(0, int(datetime.now(UTC).timestamp() - cam.reported_at)) if cam.reported_at else None,
        "zones_pending": cam.zones_pending,
        "zones_error": scrub(cam.zones_error or ""),
        "svg_zones": [
            {"points": " ".join(f"{float(x):.4f},{float(y):.4f}" for x, y in z.get("polygon", [])),
             "kind": z.get("kind", ""), "label": z.get("name") or z.get("id", "")}
            for z in cam.zones if isinstance(z, dict)
        ],
    }


@pages.get("/cameras", response_class=HTMLResponse, name="cameras")
def cameras_page(request: Request) -> Response:
    """Every camera: up or down, frames per second, the last frame's time, the snapshot with its zones."""
    control = _control(request)
    cams = [_health(request, c) for c in control.cameras()] if control is not None else []
    return render(request, "cameras.html", {"managed": control is not None, "cams": cams})


@pages.get("/cameras/{camera_id}/zones", response_class=HTMLResponse, name="zone_editor")
def zone_editor(request: Request, camera_id: str) -> Response:
    """Draw the camera's zones on its latest snapshot and save them into the live configuration."""
    control = _control(request)
    if control is None:
        return error_page(request, 404, "cameras_unmanaged", "the cameras are not managed by this console")
    cam = _camera(control, camera_id)
    if cam is None:
        return error_page(request, 404, "camera_not_found", f"no camera {camera_id}", camera=camera_id)
    t = translator(request)
    data = {
        "camera": cam.id,
        "zones": cam.zones,
        "kinds": [{"value": k, "label": t.label("zone_kind", k)} for k in zone_kinds()],
        "save_url": f"{root_path(request)}/api/cameras/{cam.id}/zones",
    }
    return render(request, "zones.html", {"cam": _health(request, cam), "editor_data": data,
                                          "kinds": zone_kinds()})


def _snapshot(request: Request, camera_id: str, json_errors: bool, reference: bool = False) -> Response:
    control = _control(request)

    def fail(status: int, code: str, message: str, **fields: Any) -> Response:
        if json_errors:
            return err(request, status, code, message, f"error.{code}", fields)
        return error_page(request, status, code, message, **fields)

    if control is None:
        return fail(404, "cameras_unmanaged", "the cameras are not managed by this console")
    try:
        frame = control.reference(camera_id) if reference else control.snapshot(camera_id)
    except KeyError:
        return fail(404, "camera_not_found", f"no camera {camera_id}", camera=camera_id)
    if frame is None and reference:
        return fail(404, "no_reference", f"camera {camera_id} has no reference snapshot (its view is not checked)",
                    camera=camera_id)
    if frame is None:
        return fail(404, "no_frame", f"camera {camera_id} has not delivered a frame yet", camera=camera_id)
    return Response(frame, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@pages.get("/cameras/{camera_id}/snapshot.jpg", name="camera_snapshot")
def camera_snapshot(request: Request, camera_id: str) -> Response:
    return _snapshot(request, camera_id, json_errors=False)


@pages.get("/cameras/{camera_id}/reference.jpg", name="camera_reference")
def camera_reference(request: Request, camera_id: str) -> Response:
    """The reference snapshot the camera's zones were drawn on (view guard), JPEG."""
    return _snapshot(request, camera_id, json_errors=False, reference=True)


@api.get("/cameras", name="api_cameras")
def api_cameras(request: Request) -> Any:
    """Every camera with its health and zones."""
    control = _control(request)
    if control is None:
        return err(request, 404, "cameras_unmanaged", "the cameras are not managed by this console",
                   "error.cameras_unmanaged")
    return {"items": [{**asdict(c), "last_error": scrub(c.last_error) if c.last_error else c.last_error,
                       "snapshot_url": f"{root_path(request)}/api/cameras/{c.id}/snapshot"}
                      for c in control.cameras()]}


@api.get("/cameras/{camera_id}/snapshot", name="api_camera_snapshot",
         responses={200: {"content": {"image/jpeg": {}}}})
def api_camera_snapshot(request: Request, camera_id: str) -> Response:
    """The camera's latest frame (JPEG)."""
    return _snapshot(request, camera_id, json_errors=True)


@api.put("/cameras/{camera_id}/zones", name="api_camera_zones")
def api_camera_zones(request: Request, camera_id: str, body: Any = Body(
        ..., description='{"zones": [{"id", "name", "kind", "polygon": [[x, y], ...], "dwell_s", "schedule", '
        '"rules"}]} (schedule and rules as in the config file; send back what GET /api/cameras gave to keep them)'
        )) -> Any:
    """Replace the camera's zones (checked, then persisted and applied live by the camera control)."""
    control = _control(request)
    if control is None:
        return err(request, 404, "cameras_unmanaged", "the cameras are not managed by this console",
                   "error.cameras_unmanaged")
    if _camera(control, camera_id) is None:
        return err(request, 404, "camera_not_found", f"no camera {camera_id}", "error.camera_not_found",
                   {"camera": camera_id})
    if not isinstance(body, dict) or set(body) != {"zones"}:
        return err(request, 422, "bad_request", 'send {"zones": [...]} (and nothing else)', "error.zones_body")
    zones, problems = validate_zones(body["zones"])
    if problems:
        t = translator(request)
        return err(
            request, 422, "invalid_zones", "; ".join(p.message for p in problems), "error.invalid_zones", {},
            problems=[{"zone": p.zone, "id": p.zone_id, "code": p.code, "message": p.message,
                       "text": t(f"zone_error.{p.code}", **p.fields)} for p in problems],
        )
    try:
        control.set_zones(camera_id, zones)
    except KeyError:
        return err(request, 404, "camera_not_found", f"no camera {camera_id}", "error.camera_not_found",
                   {"camera": camera_id})
    except ValueError as exc:
        return err(request, 422, "rejected_by_camera", str(exc), "error.rejected_by_camera", {"message": str(exc)})
    except OSError as exc:
        log.warning("zones of camera %s could not be saved: %s", camera_id, exc)
        return err(request, 503, "save_failed", f"the zones could not be saved ({exc.strerror or exc}); "
                   "check that the configuration file is writable", "error.save_failed")
    cam = _camera(control, camera_id)
    log.info("zones of camera %s replaced (%d zones)", camera_id, len(zones))
    return JSONResponse({"camera": camera_id, "zones": cam.zones if cam else zones,
                         "pending": bool(cam and cam.zones_pending)})
