"""A case as the city platform's JSON: the case report snapshot, the per-platform template, the rendering.

The mapping is a Jinja2 template rendered in a **sandbox** (:class:`jinja2.sandbox.SandboxedEnvironment`,
strict undefined): the template is the integrator's, the values are the case's and are only ever data —
every value goes through the ``json`` filter (quoted, escaped) and nothing from a case is parsed as a
template. The output must be a JSON object; it is re-serialised compactly and that is the body that is
signed and sent.

What the template sees (:func:`render_context`): ``case`` (the :class:`CaseReport` fields), ``revision``,
``idempotency_key``, ``event_code`` (事件类型编码 from ``event_codes``), ``type_name``, ``title``,
``description``, ``location`` (``address``, ``lat``/``lon``/``system`` in the platform's datum, and ``wgs84``
/ ``gcj02``), ``times`` (``occurred``, ``confirmed``, ``reported`` as ``YYYY-MM-DD HH:MM:SS`` in the city's
zone, ``*_iso`` with the offset, ``zone``), ``images`` (``role``, ``url``, ``expires``) and ``video``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from nonsite.config.integration import PlatformConfig
from nonsite.config.manifest import CONSOLE_LOCALES, locale_strings
from nonsite.integration.geo import wgs84_to_gcj02

__all__ = ["BUILTIN_TEMPLATES", "CaseReport", "ReportError", "load_template", "render_context", "render_report",
           "report_from_case"]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
BUILTIN_TEMPLATES: tuple[str, ...] = tuple(sorted(p.name.removesuffix(".json.j2")
                                                  for p in TEMPLATES_DIR.glob("*.json.j2")))
#: Evidence roles sent as images, in this order (originals after the annotated copies).
IMAGE_ROLES: tuple[str, ...] = ("confirm_annotated", "onset_annotated", "closeup", "plate", "confirm", "onset")
LinkMaker = Callable[[str, int], "str | None"]


class ReportError(ValueError):
    """A case that cannot become a report for this platform (no event code, a template error, not a JSON
    object). Retrying does not help: the report goes to the dead-letter list with this message."""


class EvidenceRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    key: str
    content_type: str = ""


class CaseReport(BaseModel):
    """What the outbox keeps of a case to report it (a snapshot: links and times are made at each attempt)."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(description="Case number.")
    type: str = Field(description="Violation type id.")
    type_name: str = Field("", description="Chinese name of the type (catalogue or console label).")
    status: str = Field(description="Case status when reported.")
    camera_id: str
    camera_name: str = ""
    zone_id: str = ""
    zone_name: str = ""
    address: str = ""
    lat: float | None = None
    lon: float | None = None
    started_at: datetime
    confirmed_at: datetime
    dwell_s: float = 0.0
    plate: str | None = None
    dispatched_to: str = ""
    evidence: list[EvidenceRef] = Field(default_factory=list)


def _type_name(case: Any) -> str:
    basis = getattr(case, "legal_basis", None) or {}
    name = basis.get("name") if isinstance(basis, Mapping) else None
    if isinstance(name, Mapping) and name.get("zh"):
        return str(name["zh"])
    return locale_strings(CONSOLE_LOCALES, "zh").get(f"type.{case.type}", "")


def report_from_case(case: Any) -> CaseReport:
    """The report snapshot of a :class:`nonsite.cases.db.Case` (or anything with its attributes)."""
    status = getattr(case.status, "value", case.status)
    return CaseReport(
        number=case.number, type=case.type, type_name=_type_name(case), status=str(status),
        camera_id=case.camera_id, camera_name=case.camera_name or "", zone_id=case.zone_id or "",
        zone_name=case.zone_name or "", address=case.address or "", lat=case.lat, lon=case.lon,
        started_at=case.started_at, confirmed_at=case.confirmed_at, dwell_s=float(case.dwell_s or 0),
        plate=getattr(case, "offender_plate", None), dispatched_to=getattr(case, "dispatched_to", "") or "",
        evidence=[EvidenceRef.model_validate(e) for e in (case.evidence or [])],
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@lru_cache(maxsize=16)
def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters["json"] = _json
    return env


def load_template(spec: str) -> jinja2.Template:
    """The template a platform config names: a built-in name (``chengyun``) or a file path."""
    if spec in BUILTIN_TEMPLATES:
        path = TEMPLATES_DIR / f"{spec}.json.j2"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ReportError(f"platform template {spec!r} is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}) "
                              "nor an existing file; set integration.platform.template")
    try:
        return _environment().from_string(path.read_text(encoding="utf-8"))
    except jinja2.TemplateSyntaxError as exc:
        raise ReportError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None


def _local(at: datetime, tz: ZoneInfo) -> tuple[str, str]:
    loc = at.astimezone(tz)
    return loc.strftime("%Y-%m-%d %H:%M:%S"), loc.isoformat(timespec="seconds")


def render_context(report: CaseReport, revision: int, cfg: PlatformConfig, *, links: LinkMaker | None,
                   timezone: str, now: datetime) -> dict[str, Any]:
    """The variables a platform template sees (see the module docstring)."""
    code = cfg.event_codes.get(report.type)
    if not code:
        raise ReportError(f"violation type {report.type!r} has no 事件类型编码 for platform {cfg.name!r}; add it to "
                          "integration.platform.event_codes, then requeue the report")
    tz = ZoneInfo(timezone)
    wgs = {"lat": report.lat, "lon": report.lon}
    gcj = dict(zip(("lat", "lon"), wgs84_to_gcj02(report.lat, report.lon), strict=True)) \
        if report.lat is not None and report.lon is not None else {"lat": None, "lon": None}
    chosen = gcj if cfg.coordinates == "gcj02" else wgs
    expires = (now + timedelta(seconds=cfg.link_expiry_s)).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    images: list[dict[str, Any]] = []
    by_role = {e.role: e for e in report.evidence}
    for role in IMAGE_ROLES:
        ref = by_role.get(role)
        url = links(ref.key, cfg.link_expiry_s) if ref is not None and links is not None else None
        if url:
            images.append({"role": role, "url": url, "expires": expires})
    clip = by_role.get("clip")
    clip_url = links(clip.key, cfg.link_expiry_s) if clip is not None and links is not None else None
    occurred, occurred_iso = _local(report.started_at, tz)
    confirmed, confirmed_iso = _local(report.confirmed_at, tz)
    reported, reported_iso = _local(now, tz)
    type_name = report.type_name or report.type
    place = report.address or report.camera_name or report.camera_id
    zone = f"（{report.zone_name}）" if report.zone_name else ""
    description = (f"{confirmed}，{place}{zone}发现{type_name}，持续约{round(report.dwell_s)}秒。"
                   f"摄像机：{report.camera_name or report.camera_id}。"
                   + (f"车牌：{report.plate}。" if report.plate else "") + f"案件编号：{report.number}。")
    return {
        "case": report.model_dump(mode="json"),
        "platform": cfg.name,
        "revision": revision,
        "idempotency_key": idempotency_key(report.number, revision),
        "event_code": code,
        "type_name": type_name,
        "title": f"{type_name} - {place}",
        "description": description,
        "location": {"address": report.address, "lat": chosen["lat"], "lon": chosen["lon"],
                     "system": cfg.coordinates.upper(), "wgs84": wgs, "gcj02": gcj},
        "times": {"occurred": occurred, "occurred_iso": occurred_iso, "confirmed": confirmed,
                  "confirmed_iso": confirmed_iso, "reported": reported, "reported_iso": reported_iso,
                  "zone": timezone},
        "images": images,
        "video": {"url": clip_url, "expires": expires} if clip_url else None,
    }


def idempotency_key(case_number: str, revision: int) -> str:
    """``<case number>:<revision>``: the same report sent twice carries the same key."""
    return f"{case_number}:{int(revision)}"


def render_report(template: jinja2.Template, report: CaseReport, revision: int, cfg: PlatformConfig, *,
                  links: LinkMaker | None = None, timezone: str = "Asia/Shanghai",
                  now: datetime | None = None) -> bytes:
    """The request body (compact UTF-8 JSON) of ``report`` at ``revision``; ReportError when it cannot be made."""
    ctx = render_context(report, revision, cfg, links=links, timezone=timezone, now=now or datetime.now(UTC))
    try:
        text = template.render(ctx)
    except jinja2.TemplateError as exc:  # undefined variable, sandbox refusal, ...
        raise ReportError(f"platform template failed for case {report.number}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"platform template did not produce JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}); check the template's quoting (use the json filter)") from None
    if not isinstance(data, dict):
        raise ReportError("platform template must produce a JSON object")
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sample_report() -> CaseReport:
    """A made-up report to check a template when the config is loaded."""
    at = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    return CaseReport(number="NS-2026-000001", type="sidewalk_parking", type_name="人行道违停", status="approved",
                      camera_id="cam-1", camera_name="示例摄像机", address="示例路1号", lat=31.23, lon=121.47,
                      started_at=at, confirmed_at=at, dwell_s=60, evidence=[EvidenceRef(role="confirm", key="k")])


def check_template(cfg: PlatformConfig, types: Sequence[str] = ()) -> None:
    """Load and render the platform's template on a sample case (ReportError names the problem); ``types``:
    violation types that must each have an event code."""
    missing = [t for t in types if t not in cfg.event_codes]
    if missing:
        raise ReportError(f"integration.platform.event_codes has no code for {', '.join(missing)}")
    sample = sample_report()
    code_type = next(iter(cfg.event_codes), sample.type)
    render_report(load_template(cfg.template), sample.model_copy(update={"type": code_type}), 1, cfg,
                  links=lambda key, s: f"https://example.invalid/{key}")
