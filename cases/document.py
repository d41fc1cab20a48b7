"""The case document for the file: an HTML view and a PDF (reportlab) with the evidence stills.

Both show the facts (number, type, status, times on the city's clock, place, offender hint, repeats), the
legal basis the case was drafted under (the catalogue snapshot stored on the case), the suggested
disposition, the stills, the evidence list with sha256, the manifest hash with the signature
verification status, and the audit trail. Labels come from ``cases/locales/<lang>.json`` (Simplified
Chinese by default, English on request). The PDF embeds a TrueType CJK font (Debian ``fonts-wqy-zenhei``,
found by path; :class:`FontMissing` says how to install it) so Chinese never renders as boxes.

Verification is passed in (a result object with ``ok`` / ``problems`` / ``error``, or a callable that
returns one for the case), so this module does not depend on how the console verifies packages.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nonsite.cases.db import AuditEntry, Case, utcnow
from nonsite.cases.legal_basis import Catalogue, default_catalogue
from nonsite.config.loader import ConfigError
from nonsite.config.manifest import locale_strings

__all__ = [
    "CJK_FONT_CANDIDATES",
    "LANGUAGES",
    "FontMissing",
    "VerificationLike",
    "document_context",
    "find_cjk_font",
    "local_time",
    "render_case_html",
    "render_case_pdf",
]

log = logging.getLogger(__name__)

LANGUAGES: tuple[str, ...] = ("zh", "en")
_HERE = Path(__file__).resolve().parent
#: TrueType CJK fonts reportlab can embed (it cannot embed CFF-outlined fonts such as Noto CJK):
#: (path, subfont index of the regular face, subfont index of a monospaced face or None).
CJK_FONT_CANDIDATES: tuple[tuple[str, int, int | None], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0, 1),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0, 1),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0, None),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0, None),
)
#: Still roles shown in the document, in order (annotated first; originals when an annotated one is missing;
#: a role the package lacks is left out): the clean zone before the object came (left-object types), onset, ...
STILL_ROLES: tuple[tuple[str, str], ...] = (
    ("reference_annotated", "reference"), ("onset_annotated", "onset"), ("confirm_annotated", "confirm"),
    ("closeup", "closeup"),
)


class FontMissing(ConfigError):
    """No CJK font to embed in the PDF; the message says what to install or configure (the command line
    prints it as one line)."""


class VerificationLike(Protocol):
    """What the document needs of a verification result (evidence ``VerifyResult``, console ``SealStatus``)."""

    ok: bool | None
    problems: Sequence[str]


Verification = VerificationLike | Callable[[Case], VerificationLike | None] | None


# --- text ---------------------------------------------------------------------------------------------------


def messages(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown document language {lang!r}; use one of {', '.join(LANGUAGES)}")
    return locale_strings(_HERE / "locales", lang)  # with the NONSITE_LOCALES overlays


class _T:
    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.m = messages(lang)

    def __call__(self, key: str, **fields: object) -> str:
        text = self.m.get(key)
        if text is None:
            log.warning("document text %r missing from the %s catalogue", key, self.lang)
            return key
        return text.format(**fields) if fields else text

    def label(self, group: str, value: str | None) -> str:
        if not value:
            return ""
        return self.m.get(f"{group}.{value}", value)


def _offset(dt: datetime) -> str:
    off = dt.utcoffset()
    total = int(off.total_seconds()) if off is not None else 0
    sign = "+" if total >= 0 else "-"
    hours, rest = divmod(abs(total), 3600)
    return f"UTC{sign}{hours:02d}:{rest // 60:02d}"


def local_time(dt: datetime | None, tz: str = "Asia/Shanghai") -> str:
    """``2026-11-21 19:03:12 (UTC+08:00)``: a stored UTC instant on the city's clock."""
    from zoneinfo import ZoneInfo

    if dt is None:
        return ""
    local = dt.astimezone(ZoneInfo(tz))
    return f"{local:%Y-%m-%d %H:%M:%S} ({_offset(local)})"


def _dwell(t: _T, seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return t("value.dwell_s", seconds=s)
    return t("value.dwell", minutes=s // 60, seconds=s % 60)


def _money(lang: str, n: int) -> str:
    return f"{n:,}" if lang == "en" else str(n)


# --- the document's content ---------------------------------------------------------------------------------


@dataclass
class Still:
    role: str
    key: str
    caption: str
    sha256: str
    data: bytes | None = None
    src: str | None = None  # for HTML
    note: str = ""


@dataclass
class DocumentContext:
    """Everything a rendering shows, already in the document's language."""

    lang: str
    title: str
    subtitle: str
    notice: str
    generated: str
    facts: list[tuple[str, str]]
    disposition: list[tuple[str, str]]
    legal: list[dict[str, Any]]
    legal_penalty: str | None
    legal_footer: str
    legal_missing: str | None
    stills: list[Still]
    evidence: list[dict[str, str]]
    seal: list[tuple[str, str]]
    seal_status: str  # ok | failed | unchecked
    seal_problems: list[str]
    audit: list[dict[str, str]]
    labels: dict[str, str] = field(default_factory=dict)
    colon: str = "："


def _verification_of(case: Case, verification: Verification) -> VerificationLike | None:
    if verification is None:
        return None
    if callable(verification) and not hasattr(verification, "ok"):
        try:
            return verification(case)
        except Exception as exc:  # the document still renders, saying why it could not verify
            log.warning("cannot verify the package of case %s: %s", case.number, exc)
            return _Failed(problems=[f"{type(exc).__name__}: {exc}"])
    return verification  # type: ignore[return-value]


@dataclass
class _Failed:
    ok: bool | None = False
    problems: list[str] = field(default_factory=list)


def _legal_snapshot(case: Case, catalogue: Catalogue | None) -> dict[str, Any]:
    snap = case.legal_basis if isinstance(case.legal_basis, dict) else {}
    if snap.get("known") or snap.get("provisions"):
        return snap
    return (catalogue or default_catalogue()).snapshot(case.type)


def _offender(t: _T, case: Case, snap: dict[str, Any]) -> str:
    hint = case.offender_hint if isinstance(case.offender_hint, dict) else None
    plate = (hint or {}).get("plate") or case.offender_plate  # as read (the normalised form is for matching)
    if plate:
        text = t("value.plate", plate=plate)
        conf = (hint or {}).get("plate_confidence")
        if isinstance(conf, int | float):
            text += t("value.plate_confidence", confidence=f"{conf:.2f}")
        return text
    by_plate = "plate" in ((snap.get("repeat") or {}).get("by") or [])  # the catalogue: offenders are vehicles
    return t("value.no_plate") if by_plate else t("value.no_offender")


def _repeats(t: _T, case: Case, snap: dict[str, Any]) -> str:
    repeat = snap.get("repeat") or {}
    days = repeat.get("window_days", 30)
    by = t("value.repeat_by_join").join(t(f"value.repeat_by.{b}") for b in repeat.get("by", ["plate", "zone"]))
    if case.repeat_count:
        return t("value.repeats", n=case.repeat_count, by=by, days=days)
    return t("value.repeats_none", by=by, days=days)


def _provision_view(t: _T, p: dict[str, Any]) -> dict[str, Any]:
    """A provision (as stored in a case's snapshot) in the document's language, with the Chinese citation."""
    law = p.get("law") or {}
    article = p.get("article") if isinstance(p.get("article"), dict) else None
    note = p.get("note") if isinstance(p.get("note"), dict) else {}
    law_zh, law_en = str(law.get("zh", "")), str(law.get("en", ""))
    original = f"{law_zh}{article['zh']}" if article else law_zh + t("legal.article_missing")
    if t.lang == "en":
        citation = f"{law_en}, {article['en']}" if article else law_en + t("legal.article_missing")
    else:
        citation, original = original, ""
    confirmed = bool(p.get("confirmed_by_legal_office"))
    return {"id": p.get("id", ""), "citation": citation, "original": original,
            "summary": str((p.get("summary") or {}).get(t.lang, "")),
            "confirmed": confirmed, "flag": t("legal.confirmed") if confirmed else t("legal.unconfirmed"),
            "note": str(note.get(t.lang, "")) if note else ""}


def _penalty_text(t: _T, penalty: dict[str, Any] | None) -> str:
    if not penalty:
        return t("legal.no_penalty")
    low, high = penalty.get("min_yuan"), penalty.get("max_yuan")
    summary = (penalty.get("summary") or {}).get(t.lang, "")
    if low is not None and high is not None:
        rng = t("legal.range", low=_money(t.lang, low), high=_money(t.lang, high))
    elif high is not None:
        rng = t("legal.range_max", high=_money(t.lang, high))
    elif low is not None:
        rng = t("legal.range_min", low=_money(t.lang, low))
    else:
        rng = ""
    return f"{rng}. {summary}" if rng and t.lang == "en" else f"{rng}。{summary}" if rng else summary


def _file_name(case: Case, key: str) -> str:
    prefix = f"events/{case.event_id}/"
    return key[len(prefix):] if key.startswith(prefix) else key


def document_context(
    case: Case,
    lang: str = "zh",
    tz: str = "Asia/Shanghai",
    *,
    verification: Verification = None,
    audit: Sequence[AuditEntry] | None = None,
    catalogue: Catalogue | None = None,
    now: datetime | None = None,
) -> DocumentContext:
    """The document's content in ``lang`` (stills without their bytes; the renderers fetch those)."""
    t = _T(lang)
    snap = _legal_snapshot(case, catalogue)
    type_name = t.label("type", case.type)
    if snap.get("name") and f"type.{case.type}" not in t.m:  # a type without its own label: the catalogue's name
        type_name = str(snap["name"].get(t.lang, type_name))
    coords = f"{case.lat:.6f}, {case.lon:.6f}" if case.lat is not None and case.lon is not None else t("value.none")
    camera = f"{case.camera_name} ({case.camera_id})" if case.camera_name else case.camera_id
    zone = f"{case.zone_name} ({case.zone_id})" if case.zone_name else case.zone_id
    violation = case.violation if isinstance(case.violation, dict) else {}
    model = violation.get("model") or {}
    facts: list[tuple[str, str]] = [
        (t("field.number"), case.number),
        (t("field.type"), type_name),
        (t("field.status"), t.label("status", case.status.value)),
        (t("field.started_at"), local_time(case.started_at, tz)),
        (t("field.confirmed_at"), local_time(case.confirmed_at, tz)),
        (t("field.dwell"), _dwell(t, case.dwell_s)),
        (t("field.address"), case.address or t("value.none")),
        (t("field.coordinates"), coords),
        (t("field.camera"), camera),
        (t("field.zone"), zone),
        (t("field.offender"), _offender(t, case, snap)),
        (t("field.repeats"), _repeats(t, case, snap)),
        (t("field.confidence"), f"{case.confidence:.2f}"),
    ]
    if model:
        facts.append((t("field.model"), f"{model.get('name', '')} {model.get('version', '')}".strip()))
    if case.dismiss_reason:
        reason = t.label("reason", case.dismiss_reason)
        facts.append((t("field.dismiss"), f"{reason}{'：' if lang == 'zh' else ': '}{case.dismiss_note}"
                      if case.dismiss_note else reason))
    if case.dispatched_to:
        facts.append((t("field.dispatched_to"), case.dispatched_to))

    disp = case.disposition if isinstance(case.disposition, dict) else {}
    disposition: list[tuple[str, str]] = [(t("section.disposition"), t.label("disposition",
                                                                             case.suggested_disposition))]
    summary = (disp.get("summary") or {}).get(lang)
    if summary:
        disposition.append(("", str(summary)))
    team = (disp.get("dispatch_to") or {}).get(lang)
    if team:
        disposition.append(("", t("disposition.team", team=team)))
    if disp.get("rule"):
        cites = "; ".join(_provision_view(t, p)["citation"] for p in disp.get("basis") or [])
        disposition.append(("", t("disposition.rule", rule=disp["rule"]) + (f" — {cites}" if cites else "")))

    legal = [_provision_view(t, p) for p in snap.get("provisions") or []]
    known = bool(snap.get("known"))
    legal_penalty = _penalty_text(t, snap.get("penalty")) if known else None
    footer = t("legal.catalogue", version=snap.get("catalogue_version", "")) if snap.get("catalogue_version") else ""

    by_role = {str(e.get("role")): e for e in case.evidence if isinstance(e, dict)}
    stills: list[Still] = []
    for preferred, fallback in STILL_ROLES:
        role = preferred if preferred in by_role else fallback if fallback in by_role else None
        if role is None:
            continue
        item = by_role[role]
        stills.append(Still(role=role, key=str(item.get("key", "")), caption=t(f"stills.{role}"),
                            sha256=str(item.get("sha256", ""))))
    evidence = [
        {"role": t.label("role", str(e.get("role", ""))), "file": _file_name(case, str(e.get("key", ""))),
         "size": t("evidence.bytes", n=e.get("bytes", "")), "sha256": str(e.get("sha256", ""))}
        for e in case.evidence if isinstance(e, dict)
    ]

    result = _verification_of(case, verification)
    problems: list[str] = []
    if result is None or getattr(result, "checked", True) is False or getattr(result, "ok", None) is None:
        status, status_text = "unchecked", t("seal.unchecked")
    elif result.ok:
        status, status_text = "ok", t("seal.ok")
    else:
        status, status_text = "failed", t("seal.failed")
        problems = [str(p) for p in (getattr(result, "problems", None) or [])]
        err = getattr(result, "error", None)
        if err:
            problems.insert(0, str(err))
    seal = [
        (t("seal.manifest"), _file_name(case, case.manifest_key)),
        (t("seal.manifest_sha256"), case.manifest_sha256),
        (t("seal.signature"), _file_name(case, case.signature_key) if case.signature_key else t("value.none")),
        (t("seal.status"), status_text),
    ]
    if case.seal_problems:
        seal.append((t("seal.problems_at_sealing"), "; ".join(case.seal_problems)))

    rows = []
    for a in audit or []:
        detail = a.detail if isinstance(a.detail, dict) else {}
        note = [t.label("reason", detail["reason"])] if detail.get("reason") else []
        if detail.get("note"):
            note.append(str(detail["note"]))
        if detail.get("assignee"):
            note.append(str(detail["assignee"]))
        if detail.get("attachments"):
            note.append(", ".join(str(x.get("name") or _file_name(case, str(x.get("key", ""))))
                                  for x in detail["attachments"]))
        change = " → ".join(t.label("status", s) for s in (a.before_status, a.after_status) if s)
        rows.append({"at": local_time(a.at, tz), "actor": a.actor, "action": t.label("action", a.action),
                     "change": change, "note": "; ".join(note)})

    return DocumentContext(
        lang=lang, title=t("doc.title"), subtitle=t("doc.subtitle", number=case.number),
        notice=t("doc.draft_notice"), generated=t("doc.generated", at=local_time(now or utcnow(), tz)),
        facts=facts, disposition=disposition, legal=legal, legal_penalty=legal_penalty, legal_footer=footer,
        legal_missing=None if known else t("legal.unknown_type"), stills=stills, evidence=evidence, seal=seal,
        seal_status=status, seal_problems=problems, audit=rows, colon="：" if lang == "zh" else ": ",
        labels={k: v for k, v in t.m.items() if k.split(".")[0] in ("section", "evidence", "audit", "legal")},
    )


def _fetch_still(store: Any, still: Still, t: _T) -> None:
    try:
        data = store.get(still.key)
    except Exception as exc:  # missing blob or store down: the document says so instead of failing
        log.warning("cannot read still %s: %s", still.key, exc)
        still.note = t("stills.unreadable")
        return
    still.data = data
    if still.sha256 and hashlib.sha256(data).hexdigest() != still.sha256:
        still.note = t("stills.hash_mismatch")


# --- HTML ---------------------------------------------------------------------------------------------------

_env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True)


def render_case_html(
    case: Case,
    lang: str = "zh",
    tz: str = "Asia/Shanghai",
    *,
    verification: Verification = None,
    audit: Sequence[AuditEntry] | None = None,
    catalogue: Catalogue | None = None,
    store: Any | None = None,
    image_src: Callable[[str, str], str | None] | None = None,
    now: datetime | None = None,
) -> str:
    """The case document as one HTML page (escaped, inline CSS, no external resources unless ``image_src``).

    Stills: ``image_src(role, key)`` gives their URL (the console's evidence route); otherwise, with a
    ``store``, they are embedded as ``data:`` URIs; with neither, only their captions and hashes show.
    """
    ctx = document_context(case, lang, tz, verification=verification, audit=audit, catalogue=catalogue, now=now)
    t = _T(lang)
    for still in ctx.stills:
        if image_src is not None:
            still.src = image_src(still.role, still.key)
        elif store is not None:
            _fetch_still(store, still, t)
            if still.data is not None:
                still.src = "data:image/jpeg;base64," + base64.b64encode(still.data).decode("ascii")
    return _env.get_template("case_document.html").render(
        doc=ctx, html_lang="zh-CN" if lang == "zh" else "en", number=case.number,
    )


# --- PDF ----------------------------------------------------------------------------------------------------


def find_cjk_font(path: str | Path | None = None) -> tuple[Path, int, int | None]:
    """The CJK font to embed: ``path`` when given, else the first installed of :data:`CJK_FONT_CANDIDATES`."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FontMissing(f"the font {p} set in cases.document_font does not exist; fix the path or remove "
                              "the setting to use fonts-wqy-zenhei")
        return p, 0, None
    for candidate, regular, mono in CJK_FONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate), regular, mono
    raise FontMissing(
        "no CJK font for case PDFs: install the Debian package fonts-wqy-zenhei (`make system-deps`) or set "
        "cases.document_font to a TrueType font file with Chinese glyphs"
    )


@cache
def _register_fonts(path: str, regular: int, mono: int | None) -> tuple[str, str]:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    tag = hashlib.sha256(path.encode()).hexdigest()[:8]
    names = (f"NonsiteCJK-{tag}", f"NonsiteCJKMono-{tag}")
    try:
        pdfmetrics.registerFont(TTFont(names[0], path, subfontIndex=regular))
        if mono is not None:
            pdfmetrics.registerFont(TTFont(names[1], path, subfontIndex=mono))
        else:
            names = (names[0], names[0])
    except TTFError as exc:
        raise FontMissing(f"the font {path} cannot be embedded ({exc}); use a TrueType (not CFF/OpenType-PS) "
                          "CJK font such as fonts-wqy-zenhei") from None
    return names


def render_case_pdf(
    case: Case,
    store: Any,
    lang: str = "zh",
    tz: str = "Asia/Shanghai",
    *,
    verification: Verification = None,
    audit: Sequence[AuditEntry] | None = None,
    catalogue: Catalogue | None = None,
    font_path: str | Path | None = None,
    now: datetime | None = None,
) -> bytes:
    """The case document as a PDF (A4) with the evidence stills from ``store`` (``store.get(key)``)."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import (
        Image,
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    font_file, regular_index, mono_index = find_cjk_font(font_path)
    font, mono = _register_fonts(str(font_file), regular_index, mono_index)
    ctx = document_context(case, lang, tz, verification=verification, audit=audit, catalogue=catalogue, now=now)
    t = _T(lang)
    for still in ctx.stills:
        _fetch_still(store, still, t)

    def style(name: str, size: float, leading: float | None = None, **kw: Any) -> ParagraphStyle:
        return ParagraphStyle(name, fontName=font, fontSize=size, leading=leading or size * 1.45,
                              alignment=TA_LEFT, wordWrap="CJK", **kw)

    title_s = style("title", 17, spaceAfter=2 * mm)
    sub_s = style("sub", 12, spaceAfter=1 * mm)
    h_s = style("h", 12.5, spaceBefore=4 * mm, spaceAfter=2 * mm, textColor=colors.HexColor("#1f3a5f"))
    body_s = style("body", 9.5)
    small_s = style("small", 8, textColor=colors.HexColor("#444444"))
    label_s = style("label", 9, textColor=colors.HexColor("#333333"))
    mono_s = ParagraphStyle("mono", fontName=mono, fontSize=7.2, leading=9, wordWrap="CJK")
    flag_s = style("flag", 8, textColor=colors.HexColor("#a03000"))

    def p(text: str, st: ParagraphStyle = body_s) -> Paragraph:
        return Paragraph(escape(text).replace("\n", "<br/>"), st)

    grid = TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#b8c2cc")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f6")),
        ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ])
    width = A4[0] - 36 * mm
    story: list[Any] = [p(ctx.title, title_s), p(ctx.subtitle, sub_s), p(ctx.notice, small_s), Spacer(1, 2 * mm)]

    story.append(p(ctx.labels["section.facts"], h_s))
    story.append(Table([[p(k, label_s), p(v)] for k, v in ctx.facts], colWidths=[32 * mm, width - 32 * mm],
                       style=grid))

    story.append(p(ctx.labels["section.legal"], h_s))
    if ctx.legal_missing:
        story.append(p(ctx.legal_missing, flag_s))
    for prov in ctx.legal:
        block = [p(prov["citation"], style("cite", 10, textColor=colors.HexColor("#111111")))]
        if prov["original"]:
            block.append(p(prov["original"], small_s))
        block.append(p(prov["summary"]))
        block.append(p(prov["flag"] + (f" — {prov['note']}" if prov["note"] else ""), flag_s))
        block.append(Spacer(1, 1.5 * mm))
        story.append(KeepTogether(block))
    if ctx.legal_penalty:
        story.append(p(f"{ctx.labels['legal.penalty']}{ctx.colon}{ctx.legal_penalty}"))
    if ctx.legal_footer:
        story.append(p(ctx.legal_footer, small_s))

    story.append(p(ctx.disposition[0][0], h_s))
    story.append(p(ctx.disposition[0][1], style("disp", 11)))
    for _, line in ctx.disposition[1:]:
        story.append(p(line))

    if ctx.stills:
        heading = p(ctx.labels["section.stills"], h_s)
        cells: list[Any] = []
        col = (width - 6 * mm) / 2
        for still in ctx.stills:
            parts: list[Any] = []
            if still.data is not None:
                try:
                    reader = ImageReader(io.BytesIO(still.data))
                    iw, ih = reader.getSize()
                    scale = min(col / iw, 70 * mm / ih)
                    parts.append(Image(io.BytesIO(still.data), width=iw * scale, height=ih * scale))
                except Exception as exc:  # not an image after all
                    log.warning("still %s does not decode: %s", still.key, exc)
                    still.note = t("stills.unreadable")
            parts.append(p(still.caption, label_s))
            parts.append(Paragraph(escape(still.sha256), mono_s))
            if still.note:
                parts.append(p(still.note, flag_s))
            cells.append(parts)
        rows = [cells[i:i + 2] + ([""] if len(cells[i:i + 2]) == 1 else []) for i in range(0, len(cells), 2)]
        still_style = TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                  ("BOTTOMPADDING", (0, 0), (-1, -1), 4 * mm)])
        tables = [Table([row], colWidths=[col + 3 * mm, col + 3 * mm], style=still_style) for row in rows]
        story.append(KeepTogether([heading, tables[0]]))  # never a heading alone at the foot of a page
        story.extend(tables[1:])

    story.append(p(ctx.labels["section.evidence"], h_s))
    ev_rows = [[p(ctx.labels["evidence.role"], label_s), p(ctx.labels["evidence.file"], label_s),
                p(ctx.labels["evidence.size"], label_s), p(ctx.labels["evidence.sha256"], label_s)]]
    ev_rows += [[p(e["role"]), p(e["file"]), p(e["size"]), Paragraph(escape(e["sha256"]), mono_s)]
                for e in ctx.evidence]
    story.append(Table(ev_rows, colWidths=[26 * mm, 42 * mm, 24 * mm, width - 92 * mm], repeatRows=1,
                       style=TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#b8c2cc")),
                                         ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                         ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6"))])))

    story.append(p(ctx.labels["section.seal"], h_s))
    seal_rows = [[p(k, label_s), Paragraph(escape(v), mono_s) if len(v) == 64 else p(v)] for k, v in ctx.seal]
    story.append(Table(seal_rows, colWidths=[32 * mm, width - 32 * mm], style=grid))
    for problem in ctx.seal_problems:
        story.append(p("• " + problem, flag_s))

    if ctx.audit:
        story.append(p(ctx.labels["section.audit"], h_s))
        au_rows = [[p(ctx.labels[f"audit.{k}"], label_s) for k in ("at", "actor", "action", "change", "note")]]
        au_rows += [[p(r["at"], small_s), p(r["actor"], small_s), p(r["action"], small_s), p(r["change"], small_s),
                     p(r["note"], small_s)] for r in ctx.audit]
        story.append(Table(au_rows, colWidths=[38 * mm, 26 * mm, 28 * mm, 34 * mm, width - 126 * mm], repeatRows=1,
                           style=TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#b8c2cc")),
                                             ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                             ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6"))])))

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(font, 7.5)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawString(18 * mm, 10 * mm, f"{case.number} · {ctx.generated}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, t("doc.page", page=doc.page))
        canvas.restoreState()

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                            bottomMargin=18 * mm, title=f"{ctx.title} {case.number}", author="nonsite",
                            subject=case.number, lang="zh-CN" if lang == "zh" else "en")
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()
