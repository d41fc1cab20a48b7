"""Enforcement documents (执法文书) of a case and their service (送达), with the deadlines the law sets.

Three kinds, each numbered in its own series per year (``X城管责改〔2026〕第0001号``)::

    rectification_order  责令改正通知书     operator, reviewer, admin   the case is approved (any decision but
                                                                         transfer)
    penalty_notice       行政处罚事先告知书   reviewer, admin             the decision is a fine
    penalty_decision     行政处罚决定书       reviewer, admin             the notice was served and the time for
                                                                         statements (and hearings) has passed

**Templates** are files the city edits (:data:`DEFAULT_TEMPLATES`, or the folder of ``cases.documents``): a
``documents.yaml`` (issuing authority, number format, rectification period, hearing threshold) and one ``.txt``
per kind. A template is plain text with ``{{ name }}`` placeholders (:data:`PLACEHOLDERS`) and five kinds of
line: ``# title``, ``## subtitle`` (centred), ``>> text`` (right-aligned), ``<< text`` (flush left, e.g. the
party) and paragraphs separated by blank lines (indented two characters). :func:`load_templates` refuses an
unknown placeholder, or any other ``{{``, ``{%`` or ``{#``, as one line ``file:line: {{ name }}: fix``. The
template's structure is read first, then each placeholder is replaced by its value in one pass: a value is only
ever text (a note reading ``{{ 7*7 }}`` prints as typed).

**Numbers** come from ``document_sequences`` (one row per series and year) advanced with
``UPDATE … RETURNING`` in the issuing transaction (a row lock until commit), so a failed issue gives its
number back: no gaps, no duplicates (and a unique constraint on series, year and sequence number besides).
Every issued document keeps its text as issued (``body``) and the values it was filled with; the PDF is
rendered from that, so a later template edit never changes an issued document.

**Service** (送达): how (:data:`SERVICE_METHODS`), when, to whom, and a photo of the signed receipt (checked
and re-encoded by :mod:`nonsite.cases.attachments`, stored under ``cases/<number>/service/``). The deadlines
of :func:`legal_deadlines` run from the first service of the case's latest penalty notice, counted in working
days (行政处罚法第八十五条): statements and defence (陈述申辩) 3 working days, a hearing request (听证, Art.
63-64, for fines from ``hearing_min_fine_yuan``) 5 working days. Issue and service are audited on the case.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from nonsite.cases.attachments import AttachmentError, PreparedPhoto, feedback_prefix
from nonsite.cases.db import AuditEntry, Base, Case, CaseStatus, UtcDateTime, utcnow, write_session
from nonsite.cases.deadlines import TimeLimit, due_at
from nonsite.cases.workflow import (
    PermissionDenied,
    Role,
    WorkflowError,
    load_for_update,
    parse_role,
    person_of,
)
from nonsite.config.loader import ConfigError, load_model

__all__ = [
    "DEFAULT_TEMPLATES",
    "ISSUE_ROLES",
    "KINDS",
    "PLACEHOLDERS",
    "SERVICE_METHODS",
    "SERVICE_ROLES",
    "DocumentService",
    "DocumentTemplates",
    "EnforcementDocument",
    "LegalDeadlines",
    "TemplateError",
    "allocate_document_number",
    "documents_of",
    "issue_document",
    "legal_deadlines",
    "load_templates",
    "record_service",
    "render_document_pdf",
    "render_text",
    "service_key",
    "yuan_upper",
]

KINDS: tuple[str, ...] = ("rectification_order", "penalty_notice", "penalty_decision")
#: 送达方式: in person (直接送达), left at the address (留置送达), by post (邮寄送达), electronic (电子送达),
#: public announcement (公告送达).
SERVICE_METHODS: tuple[str, ...] = ("direct", "left", "post", "electronic", "announcement")
R = Role
#: Who may issue each kind.
ISSUE_ROLES: Mapping[str, frozenset[Role]] = {
    "rectification_order": frozenset({R.OPERATOR, R.REVIEWER, R.ADMIN}),
    "penalty_notice": frozenset({R.REVIEWER, R.ADMIN}),
    "penalty_decision": frozenset({R.REVIEWER, R.ADMIN}),
}
#: Who may record a service (a field officer only on their teams' cases: the console checks what they see).
SERVICE_ROLES: frozenset[Role] = frozenset({R.OPERATOR, R.REVIEWER, R.ADMIN, R.FIELD_OFFICER})
#: Days of 行政处罚法 are working days (Art. 85): statements within 3, a hearing request within 5.
STATEMENT_WORKING_DAYS = 3
HEARING_WORKING_DAYS = 5
DEFAULT_TEMPLATES = Path(__file__).resolve().parent / "templates" / "documents"
MAX_PARTY = 256
MAX_NOTE = 2000
MAX_RECIPIENT = 256
#: The only placeholders a template may use, with what each is filled with.
PLACEHOLDERS: Mapping[str, str] = {
    "issuer": "the issuing authority (documents.yaml issuer)",
    "number": "this document's number",
    "issue_date": "the day of issue (2026年12月5日)",
    "case_number": "the case number",
    "party": "当事人 as entered when issuing",
    "plate": "the plate read for the vehicle, or 无",
    "violation": "the violation type's name in the legal-basis catalogue",
    "violation_time": "when the violation was confirmed (2026年11月21日19时03分)",
    "address": "where (the camera's address)",
    "camera": "the camera's name",
    "zone": "the zone's name",
    "evidence_sha256": "sha256 of the evidence package's signed manifest",
    "legal_basis": "the provisions the violation breaches (prohibitions and duties), cited",
    "penalty_basis": "the provisions the penalty rests on, cited",
    "penalty_range": "the catalogue's fine range (20元至200元)",
    "decision": "the reviewer's decision in words (警告 / 罚款人民币100元 / 不予行政处罚 / 移送有关部门处理)",
    "amount_yuan": "the fine in yuan (digits; empty without a fine)",
    "amount_upper": "the fine in capital numerals (壹佰元整; empty without a fine)",
    "decision_reason": "the reviewer's reason",
    "reviewer": "who approved the case (法制审核)",
    "rectify_deadline": "the last day to rectify (issue day + rectify_within)",
    "statement_days": "working days for statements and defence (3)",
    "hearing_days": "working days to request a hearing (5)",
    "hearing_right": "the sentence on the right to a hearing (empty when the fine is below the threshold)",
    "notice_number": "the number of the case's penalty notice (决定书 only; else empty)",
    "notice_served_date": "the day that notice was served (决定书 only; else empty)",
    "note": "the issuer's note (free text, printed as typed)",
    "issued_by": "who issued the document",
}
NUMBER_PLACEHOLDERS: frozenset[str] = frozenset({"series", "year", "seq"})
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SYNTAX = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TemplateError(ConfigError):
    """A document template that cannot be used (``file:line: what: fix``, one line each)."""


class DocumentError(WorkflowError):
    """A document that cannot be issued or served now; the message says why and what to do."""


# --- tables (migration 0008_documents) ----------------------------------------------------------------------


class DocumentSequence(Base):
    """Last number handed out per document series and year (advanced inside the issuing transaction)."""

    __tablename__ = "document_sequences"

    series: Mapped[str] = mapped_column(String(32), primary_key=True, comment="Document series (e.g. 责改, 罚告, 罚决)")
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, comment="Last number handed out in the series and year")


class EnforcementDocument(Base):
    """An issued enforcement document: its number, the values it was filled with, its text as issued."""

    __tablename__ = "enforcement_documents"
    __table_args__ = (UniqueConstraint("series", "year", "seq", name="uq_enforcement_documents_series_year_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(32), comment="rectification_order | penalty_notice | penalty_decision")
    series: Mapped[str] = mapped_column(String(32))
    year: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(128), unique=True,
                                        comment="The document number as printed (e.g. X城管责改〔2026〕第0001号)")
    party: Mapped[str] = mapped_column(String(256), comment="当事人 as entered at issue")
    filled: Mapped[dict[str, str]] = mapped_column(JSON, comment="Every placeholder's value at issue")
    body: Mapped[list[dict[str, str]]] = mapped_column(JSON, comment="The document as issued: title and paragraphs")
    template_sha256: Mapped[str] = mapped_column(String(64), comment="sha256 of the template file used")
    issued_by: Mapped[str] = mapped_column(String(128))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)

    def __repr__(self) -> str:
        return f"EnforcementDocument({self.number!r}, {self.kind!r})"


class DocumentService(Base):
    """The service (送达) of a document: how, when, to whom, the photo of the signed receipt."""

    __tablename__ = "document_services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("enforcement_documents.id", ondelete="RESTRICT"), index=True)
    method: Mapped[str] = mapped_column(String(16),
                                        comment="direct | left | post | electronic | announcement (送达方式)")
    served_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="When it was served (UTC)")
    recipient: Mapped[str] = mapped_column(String(256), comment="Who received it (受送达人/代收人)")
    receipt: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, nullable=True, comment="The photo of the signed receipt: {key, sha256, content_type, bytes, name}")
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


# --- templates ----------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KindConfig(_Model):
    series: str = Field(min_length=1, max_length=32, description="The series word of the number (责改, 罚告, 罚决).")
    template: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.txt$",
                          description="The template file of this kind, in the same folder (e.g. penalty_notice.txt).")


class DocumentsConfig(_Model):
    """``documents.yaml``: what every document of the city shares."""

    issuer: str = Field(min_length=1, max_length=128,
                        description="The issuing authority's full name, as printed (某市城市管理综合行政执法局).")
    number_format: str = Field(
        min_length=1, max_length=128,
        description="How numbers are printed: {{ series }}, {{ year }} and {{ seq }} (zero-padded to seq_digits), "
        "e.g. 'X城管{{ series }}〔{{ year }}〕第{{ seq }}号'.")
    seq_digits: int = Field(4, ge=1, le=8, description="Digits of the sequence number (0001).")
    rectify_within: TimeLimit = Field(
        TimeLimit(amount=3, unit="working_days"),
        description="The rectification period a 责令改正通知书 sets, from the day of issue (amount, unit: days | "
        "working_days).")
    hearing_min_fine_yuan: int = Field(
        2000, ge=1, description="Fines from this amount are 较大数额罚款 and give the party the right to a hearing "
        "(听证; set the threshold of the province's rules).")
    timezone: str = Field("Asia/Shanghai", description="The city's time zone (dates printed, deadlines counted).")
    kinds: dict[Literal["rectification_order", "penalty_notice", "penalty_decision"], KindConfig] = Field(
        description="Each kind's series and template file; all three kinds are required.")

    @field_validator("kinds")
    @classmethod
    def _all_kinds(cls, v: dict[str, KindConfig]) -> dict[str, KindConfig]:
        missing = [k for k in KINDS if k not in v]
        if missing:
            raise ValueError(f"add the kinds {', '.join(missing)} (series and template each)")
        series = [k.series for k in v.values()]
        if len(set(series)) != len(series):
            raise ValueError("each kind needs its own series (numbers are counted per series)")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Asia/Shanghai") from None
        return v


@dataclass(frozen=True)
class Block:
    style: str  # title | subtitle | right | left | para
    text: str
    line: int


@dataclass(frozen=True)
class Template:
    kind: str
    path: Path
    sha256: str
    blocks: tuple[Block, ...]

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(m.group(1) for b in self.blocks for m in _PLACEHOLDER.finditer(b.text))


@dataclass(frozen=True)
class DocumentTemplates:
    """A checked template folder."""

    folder: Path
    config: DocumentsConfig
    templates: Mapping[str, Template]

    def series(self, kind: str) -> str:
        return self.config.kinds[kind].series  # type: ignore[index]

    def format_number(self, kind: str, year: int, seq: int) -> str:
        values = {"series": self.series(kind), "year": str(year), "seq": f"{seq:0{self.config.seq_digits}d}"}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.config.number_format)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)


def _check_text(text: str, where: str, line: int, known: Mapping[str, str] | frozenset[str]) -> None:
    for m in _PLACEHOLDER.finditer(text):
        if m.group(1) not in known:
            raise TemplateError(f"{where}:{line}: {{{{ {m.group(1)} }}}}: unknown placeholder; use one of "
                                f"{', '.join(sorted(known))}")
    rest = _PLACEHOLDER.sub("", text)
    bad = _SYNTAX.search(rest)
    if bad:
        raise TemplateError(f"{where}:{line}: {bad.group(0)!r}: not a placeholder; templates take only "
                            "{{ name }} (no expressions, tags or comments)")


def parse_template(text: str, path: Path, kind: str) -> Template:
    """The blocks of a template (``# title``, ``## subtitle``, ``>> right``, ``<< left``, paragraphs);
    TemplateError on an unknown placeholder or any other template syntax."""
    blocks: list[Block] = []
    para: list[str] = []
    start = 0

    def flush() -> None:
        if para:
            blocks.append(Block("para", "\n".join(para), start))
            para.clear()

    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        _check_text(line, str(path), n, PLACEHOLDERS)
        if not line.strip():
            flush()
        elif line.startswith("## "):
            flush()
            blocks.append(Block("subtitle", line[3:].strip(), n))
        elif line.startswith("# "):
            flush()
            blocks.append(Block("title", line[2:].strip(), n))
        elif line.startswith(">> "):
            flush()
            blocks.append(Block("right", line[3:].strip(), n))
        elif line.startswith("<< "):
            flush()
            blocks.append(Block("left", line[3:].strip(), n))
        else:
            if not para:
                start = n
            para.append(line.strip())
    flush()
    if not any(b.style == "title" for b in blocks):
        raise TemplateError(f"{path}:1: title: the template has no '# ' title line; start it with '# 文书名称'")
    return Template(kind, path, hashlib.sha256(text.encode("utf-8")).hexdigest(), tuple(blocks))


def load_templates(folder: str | Path | None = None) -> DocumentTemplates:
    """Read and check a template folder (default: the shipped one); TemplateError (one line) otherwise."""
    base = Path(folder) if folder is not None else DEFAULT_TEMPLATES
    cfg_path = base / "documents.yaml"
    if not base.is_dir():
        raise TemplateError(f"{base}: no such folder; set cases.documents to the folder of the city's templates")
    try:
        config = load_model(cfg_path, DocumentsConfig, what="documents.yaml must be a mapping (issuer:, "
                            "number_format:, kinds:)")
    except TemplateError:
        raise
    except ConfigError as exc:
        raise TemplateError(str(exc).splitlines()[0]) from None
    line = _line_of(cfg_path, "number_format")
    _check_text(config.number_format, str(cfg_path), line, NUMBER_PLACEHOLDERS)
    if "{{ seq }}" not in re.sub(r"\{\{\s*seq\s*\}\}", "{{ seq }}", config.number_format):
        raise TemplateError(f"{cfg_path}:{line}: number_format: it must contain {{{{ seq }}}} (and should contain "
                            "{{ series }} and {{ year }})")
    templates: dict[str, Template] = {}
    for kind, kc in config.kinds.items():
        path = base / kc.template
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TemplateError(f"{cfg_path}:{_line_of(cfg_path, kc.template)}: kinds.{kind}.template: "
                                f"{path.name} not found in {base}; create it or fix the name") from None
        except UnicodeDecodeError:
            raise TemplateError(f"{path}:1: the file is not UTF-8 text; save it as UTF-8") from None
        templates[kind] = parse_template(text, path, kind)
    return DocumentTemplates(base, config, templates)


def _line_of(path: Path, needle: str) -> int:
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if needle in line:
                return n
    except OSError:
        pass
    return 1


def check_folder(folder: str | Path | None = None) -> list[str]:
    """``nonsite documents check``: the problems of a template folder (empty when it is fine)."""
    try:
        load_templates(folder)
    except TemplateError as exc:
        return [str(exc)]
    return []


# --- values -------------------------------------------------------------------------------------------------


def _day(dt: datetime, zone: ZoneInfo) -> str:
    d = dt.astimezone(zone)
    return f"{d.year}年{d.month}月{d.day}日"


def _minute(dt: datetime, zone: ZoneInfo) -> str:
    d = dt.astimezone(zone)
    return f"{d.year}年{d.month}月{d.day}日{d.hour:02d}时{d.minute:02d}分"


_DIGITS = "零壹贰叁肆伍陆柒捌玖"


def yuan_upper(n: int) -> str:
    """An amount of whole yuan in capital numerals (大写): ``10050`` → ``壹万零伍拾元整``."""
    if n < 0 or n >= 10**12:
        raise ValueError(f"amount {n} out of range")
    if n == 0:
        return "零元整"
    s = str(n)
    out, zero = "", False
    for i, ch in enumerate(s):
        pos = len(s) - 1 - i
        d = int(ch)
        if d == 0:
            zero = True
        else:
            if zero:
                out += "零"
                zero = False
            out += _DIGITS[d] + ("", "拾", "佰", "仟")[pos % 4]
        if pos % 4 == 0 and pos > 0 and any(c != "0" for c in s[max(0, i - 3):i + 1]):
            out += ("", "万", "亿")[pos // 4]
    return out + "元整"


def _cite(p: Mapping[str, Any]) -> str:
    law = (p.get("law") or {}).get("zh", "")
    article = p.get("article") if isinstance(p.get("article"), dict) else None
    return f"{law}{article['zh']}" if article else str(law)


def _decision_text(case: Case) -> str:
    kind = case.decision
    if kind == "warning":
        return "警告"
    if kind == "penalty":
        return f"罚款人民币{case.decision_amount_yuan}元" if case.decision_amount_yuan is not None else "罚款"
    if kind == "no_penalty":
        return "不予行政处罚"
    if kind == "transfer":
        return "移送有关部门处理"
    return ""


def hearing_eligible(case: Case, templates: DocumentTemplates) -> bool:
    """Whether the case's decision gives the party the right to a hearing (a fine from the threshold)."""
    return (case.decision == "penalty" and case.decision_amount_yuan is not None
            and case.decision_amount_yuan >= templates.config.hearing_min_fine_yuan)


def _reviewer(session: Session, case: Case) -> str:
    entry = session.scalar(select(AuditEntry).where(AuditEntry.case_id == case.id, AuditEntry.action == "approve")
                           .order_by(AuditEntry.id.desc()).limit(1))
    return person_of(entry) if entry is not None else ""


def fill_values(session: Session, case: Case, templates: DocumentTemplates, *, kind: str, number: str,
                party: str, note: str, issued_by: str, at: datetime) -> dict[str, str]:
    """Every placeholder's value for a document of ``case`` (all text; nothing here is ever parsed)."""
    zone = templates.zone
    snap = case.legal_basis if isinstance(case.legal_basis, dict) else {}
    provisions = [p for p in snap.get("provisions") or [] if isinstance(p, dict)]
    prohibitions = [_cite(p) for p in provisions if p.get("role") in ("prohibition", "duty")]
    penalties = [_cite(p) for p in provisions if p.get("role") == "penalty"]
    penalty = snap.get("penalty") or {}
    low, high = penalty.get("min_yuan"), penalty.get("max_yuan")
    rng = (f"{low}元至{high}元" if low is not None and high is not None else f"{high}元以下" if high is not None
           else f"{low}元以上" if low is not None else "")
    hint = case.offender_hint if isinstance(case.offender_hint, dict) else {}
    plate = str(hint.get("plate") or case.offender_plate or "无")
    amount = case.decision_amount_yuan if case.decision == "penalty" else None
    rectify = due_at(at, templates.config.rectify_within, zone)
    deadlines = legal_deadlines(session, case, templates)
    eligible = hearing_eligible(case, templates)
    hearing_right = ("根据《中华人民共和国行政处罚法》第六十三条、第六十四条的规定，你（单位）有权要求举行听证；"
                     f"要求听证的，应当在收到本告知书之日起{HEARING_WORKING_DAYS}个工作日内向本机关提出，"
                     "逾期视为放弃听证权利。" if eligible else "")
    name = (snap.get("name") or {}).get("zh") if isinstance(snap.get("name"), dict) else None
    return {
        "issuer": templates.config.issuer,
        "number": number,
        "issue_date": _day(at, zone),
        "case_number": case.number,
        "party": party,
        "plate": plate,
        "violation": str(name or case.type),
        "violation_time": _minute(case.confirmed_at, zone),
        "address": case.address or "",
        "camera": case.camera_name or case.camera_id,
        "zone": case.zone_name or case.zone_id,
        "evidence_sha256": case.manifest_sha256,
        "legal_basis": "、".join(prohibitions),
        "penalty_basis": "、".join(penalties),
        "penalty_range": rng,
        "decision": _decision_text(case),
        "amount_yuan": str(amount) if amount is not None else "",
        "amount_upper": yuan_upper(amount) if amount is not None else "",
        "decision_reason": case.decision_reason or "",
        "reviewer": _reviewer(session, case),
        "rectify_deadline": _day(rectify.at - timedelta(seconds=1), zone),
        "statement_days": str(STATEMENT_WORKING_DAYS),
        "hearing_days": str(HEARING_WORKING_DAYS),
        "hearing_right": hearing_right,
        "notice_number": (deadlines.notice_number or "") if kind == "penalty_decision" else "",
        "notice_served_date": (_day(deadlines.served_at, zone) if deadlines.served_at else "")
        if kind == "penalty_decision" else "",
        "note": note,
        "issued_by": issued_by,
    }


def render_text(template: Template, values: Mapping[str, str]) -> list[dict[str, str]]:
    """The template's blocks with every placeholder replaced by its value, in one pass (values are never read as
    template text). Blocks left empty by empty values are dropped."""
    out: list[dict[str, str]] = []
    for block in template.blocks:
        text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], block.text)
        if text.strip():
            out.append({"style": block.style, "text": text})
    return out


# --- numbering ----------------------------------------------------------------------------------------------


def allocate_document_number(session: Session, series: str, year: int) -> int:
    """The next sequence number of ``series`` in ``year``, in the caller's transaction (gap-free: the counter row
    is locked by ``UPDATE … RETURNING`` until commit, and a rollback gives the number back)."""
    stmt = (update(DocumentSequence).where(DocumentSequence.series == series, DocumentSequence.year == year)
            .values(last=DocumentSequence.last + 1).returning(DocumentSequence.last))
    seq = session.execute(stmt).scalar_one_or_none()
    if seq is None:
        try:
            with session.begin_nested():
                session.add(DocumentSequence(series=series, year=year, last=1))
            seq = 1
        except IntegrityError:  # another transaction created the row first
            seq = session.execute(stmt).scalar_one()
    return int(seq)


# --- issue and service --------------------------------------------------------------------------------------


def _check_role(allowed: frozenset[Role], role: Role | str | None, what: str) -> None:
    if role is None:
        return
    r = parse_role(role)
    if r not in allowed:
        names = " or ".join(x.value for x in Role if x in allowed)
        raise PermissionDenied(f"a {r.value} may not {what}; ask a user with the role {names}")


def _text(value: str, what: str, limit: int, *, required: bool) -> str:
    value = (value or "").strip()
    if required and not value:
        raise DocumentError(f"{what} is required")
    if len(value) > limit:
        raise DocumentError(f"{what} is {len(value)} characters; at most {limit}")
    return value




_DECIDED = (CaseStatus.APPROVED, CaseStatus.DISPATCHED, CaseStatus.RECTIFIED, CaseStatus.CLOSED)


def _check_issuable(session: Session, case: Case, kind: str, templates: DocumentTemplates, at: datetime) -> None:
    if case.status not in _DECIDED:
        raise DocumentError(f"case {case.number} is {case.status.value}; documents are issued once the legal review "
                            "approved it with a decision")
    existing = session.scalar(select(EnforcementDocument).where(EnforcementDocument.case_id == case.id,
                                                                EnforcementDocument.kind == kind))
    if existing is not None:
        raise DocumentError(f"case {case.number} already has its {kind.replace('_', ' ')} ({existing.number}); "
                            "download that one")
    if kind == "rectification_order":
        if case.decision == "transfer":
            raise DocumentError(f"case {case.number} was transferred; the receiving authority orders rectification")
        return
    if case.decision != "penalty" or case.decision_amount_yuan is None:
        raise DocumentError(f"case {case.number} has no fine decided ({case.decision or 'no decision'}); penalty "
                            "documents need the decision 'penalty' with its amount")
    if kind == "penalty_decision":
        d = legal_deadlines(session, case, templates)
        if d.notice_number is None or d.served_at is None:
            raise DocumentError(f"case {case.number}: issue the penalty notice (事先告知书) and record its service "
                                "first; the decision follows the time for statements")
        last = max(x for x in (d.statement_due, d.hearing_due) if x is not None)
        if at < last:
            raise DocumentError(f"case {case.number}: the party may still make statements"
                                f"{' or request a hearing' if d.hearing_due else ''} until "
                                f"{_minute(last - timedelta(seconds=1), templates.zone)}; issue the decision after "
                                "that")


def issue_document(
    session_factory: sessionmaker[Session], case_ref: int | str, kind: str, templates: DocumentTemplates, *,
    actor: str, party: str, note: str = "", role: Role | str | None = None, person: str | None = None,
    now: datetime | None = None,
) -> EnforcementDocument:
    """Issue a document of ``kind`` for the case: its number, its text filled from the case and the decision;
    audited as ``issue_document``. DocumentError / PermissionDenied / CaseNotFound otherwise."""
    if kind not in KINDS:
        raise DocumentError(f"unknown document kind {kind!r}; use one of {', '.join(KINDS)}")
    _check_role(ISSUE_ROLES[kind], role, f"issue a {kind.replace('_', ' ')}")
    party = _text(party, "the party (当事人)", MAX_PARTY, required=True)
    note = _text(note, "the note", MAX_NOTE, required=False)
    at = (now or utcnow()).astimezone(UTC)
    template = templates.templates[kind]
    with write_session(session_factory) as session:
        case = load_for_update(session, case_ref)
        _check_issuable(session, case, kind, templates, at)
        series, year = templates.series(kind), at.astimezone(templates.zone).year
        seq = allocate_document_number(session, series, year)
        number = templates.format_number(kind, year, seq)
        values = fill_values(session, case, templates, kind=kind, number=number, party=party, note=note,
                             issued_by=person or actor, at=at)
        doc = EnforcementDocument(case_id=case.id, kind=kind, series=series, year=year, seq=seq, number=number,
                                  party=party, filled=values, body=render_text(template, values),
                                  template_sha256=template.sha256, issued_by=actor, issued_at=at)
        session.add(doc)
        session.flush()
        detail: dict[str, Any] = {"kind": kind, "number": number, "document_id": doc.id, "party": party,
                                  "template_sha256": template.sha256}
        if role is not None:
            detail["role"] = parse_role(role).value
        if person and person != actor:
            detail["person"] = person
        if note:
            detail["note"] = note
        session.add(AuditEntry(case_id=case.id, at=at, actor=actor, action="issue_document",
                               before_status=case.status.value, after_status=case.status.value, detail=detail))
    return doc


def service_key(case_number: str, sha256: str) -> str:
    """Where the receipt photo with this sha256 of a case's document service is stored."""
    if not _SHA256.match(sha256 or ""):
        raise AttachmentError("bad_image", f"{sha256!r} is not the hex sha256 of a stored photo")
    return feedback_prefix(case_number).replace("/feedback/", "/service/") + f"{sha256}.jpg"


def store_receipt(store: Any, case_number: str, photo: PreparedPhoto) -> dict[str, Any]:
    """Put a checked receipt photo in the store; its record ``{key, sha256, content_type, bytes, name}``."""
    key = service_key(case_number, photo.sha256)
    store.put(key, photo.data, "image/jpeg")
    return {"key": key, "sha256": photo.sha256, "content_type": "image/jpeg", "bytes": len(photo.data),
            "name": photo.name}


def record_service(
    session_factory: sessionmaker[Session], document_id: int, *, method: str, served_at: datetime,
    recipient: str, actor: str, receipt: Mapping[str, Any] | None = None, note: str = "",
    role: Role | str | None = None, person: str | None = None, now: datetime | None = None,
) -> DocumentService:
    """Record how, when and to whom a document was served, with the receipt photo (already checked and stored,
    :func:`store_receipt`); audited as ``serve_document`` with the photo's sha256."""
    _check_role(SERVICE_ROLES, role, "record the service of a document")
    if method not in SERVICE_METHODS:
        raise DocumentError(f"unknown service method {method!r}; use one of {', '.join(SERVICE_METHODS)}")
    recipient = _text(recipient, "the recipient (受送达人)", MAX_RECIPIENT, required=True)
    note = _text(note, "the note", MAX_NOTE, required=False)
    if served_at.tzinfo is None:
        raise DocumentError("the time of service must carry its time zone")
    at = (now or utcnow()).astimezone(UTC)
    served_at = served_at.astimezone(UTC)
    if served_at > at + timedelta(minutes=5):
        raise DocumentError("the time of service is in the future; give when the document was handed over")
    if method in ("direct", "left") and receipt is None:
        raise DocumentError("a document served in person or left at the address needs the photo of the signed "
                            "receipt (送达回证)")
    with write_session(session_factory) as session:
        doc = session.scalar(select(EnforcementDocument).where(EnforcementDocument.id == document_id)
                             .with_for_update())
        if doc is None:
            raise DocumentError(f"no document {document_id}")
        case = load_for_update(session, doc.case_id)
        if served_at < doc.issued_at:
            raise DocumentError(f"the time of service is before {doc.number} was issued")
        service = DocumentService(document_id=doc.id, method=method, served_at=served_at, recipient=recipient,
                                  receipt=dict(receipt) if receipt else None, note=note, recorded_by=actor,
                                  recorded_at=at)
        session.add(service)
        session.flush()
        detail: dict[str, Any] = {"document": doc.number, "kind": doc.kind, "method": method,
                                  "served_at": served_at.isoformat(), "recipient": recipient}
        if role is not None:
            detail["role"] = parse_role(role).value
        if person and person != actor:
            detail["person"] = person
        if note:
            detail["note"] = note
        session.add(AuditEntry(case_id=case.id, at=at, actor=actor, action="serve_document",
                               before_status=case.status.value, after_status=case.status.value, detail=detail,
                               photos=[receipt["sha256"]] if receipt else None))
    return service


# --- reading ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegalDeadlines:
    """The deadlines of the case's penalty notice, counted from its first service (None: not served yet)."""

    notice_number: str | None
    served_at: datetime | None
    hearing_eligible: bool
    statement_due: datetime | None
    """First late instant of statements and defence (陈述申辩): 3 working days after service."""
    hearing_due: datetime | None
    """First late instant of a hearing request (听证): 5 working days after service; None when not eligible."""

    def as_dict(self) -> dict[str, Any]:
        return {"notice_number": self.notice_number, "notice_served_at": _iso(self.served_at),
                "hearing_eligible": self.hearing_eligible, "statement_due": _iso(self.statement_due),
                "hearing_due": _iso(self.hearing_due)}


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z") if dt is not None else None


def legal_deadlines(session: Session, case: Case, templates: DocumentTemplates) -> LegalDeadlines:
    """The statement and hearing deadlines of ``case`` (from its latest penalty notice's first service)."""
    eligible = hearing_eligible(case, templates)
    notice = session.scalar(select(EnforcementDocument).where(EnforcementDocument.case_id == case.id,
                                                              EnforcementDocument.kind == "penalty_notice")
                            .order_by(EnforcementDocument.id.desc()).limit(1))
    if notice is None:
        return LegalDeadlines(None, None, eligible, None, None)
    served = session.scalar(select(DocumentService.served_at).where(DocumentService.document_id == notice.id)
                            .order_by(DocumentService.served_at).limit(1))
    if served is None:
        return LegalDeadlines(notice.number, None, eligible, None, None)
    zone = templates.zone
    statement = due_at(served, TimeLimit(amount=STATEMENT_WORKING_DAYS, unit="working_days"), zone).at
    hearing = due_at(served, TimeLimit(amount=HEARING_WORKING_DAYS, unit="working_days"), zone).at if eligible \
        else None
    return LegalDeadlines(notice.number, served, eligible, statement, hearing)


@dataclass(frozen=True)
class IssuedDocument:
    document: EnforcementDocument
    services: tuple[DocumentService, ...]


def documents_of(session: Session, case_id: int) -> list[IssuedDocument]:
    """The case's documents, oldest first, each with its services."""
    docs = session.scalars(select(EnforcementDocument).where(EnforcementDocument.case_id == case_id)
                           .order_by(EnforcementDocument.id)).all()
    services: dict[int, list[DocumentService]] = {d.id: [] for d in docs}
    if docs:
        for s in session.scalars(select(DocumentService).where(DocumentService.document_id.in_(list(services)))
                                 .order_by(DocumentService.served_at, DocumentService.id)):
            services[s.document_id].append(s)
    return [IssuedDocument(d, tuple(services[d.id])) for d in docs]


def document_by_id(session: Session, case_id: int, document_id: int) -> EnforcementDocument | None:
    return session.scalar(select(EnforcementDocument).where(EnforcementDocument.id == document_id,
                                                            EnforcementDocument.case_id == case_id))


# --- PDF ----------------------------------------------------------------------------------------------------


def render_document_pdf(doc: EnforcementDocument, case_number: str, *, font_path: str | Path | None = None) -> bytes:
    """The issued document as a PDF (A4) with the case PDF's embedded CJK font, from its text as issued."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_LEFT, TA_RIGHT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    from nonsite.cases.document import _register_fonts, find_cjk_font

    font_file, regular, mono = find_cjk_font(font_path)
    font, _ = _register_fonts(str(font_file), regular, mono)
    body_size = 12.0
    styles = {
        "title": ParagraphStyle("title", fontName=font, fontSize=20, leading=30, alignment=TA_CENTER,
                                spaceAfter=3 * mm, wordWrap="CJK"),
        "subtitle": ParagraphStyle("subtitle", fontName=font, fontSize=12, leading=18, alignment=TA_CENTER,
                                   spaceAfter=5 * mm, wordWrap="CJK"),
        "right": ParagraphStyle("right", fontName=font, fontSize=body_size, leading=body_size * 1.8,
                                alignment=TA_RIGHT, spaceBefore=2 * mm, wordWrap="CJK"),
        "left": ParagraphStyle("left", fontName=font, fontSize=body_size, leading=body_size * 1.8,
                               alignment=TA_LEFT, spaceAfter=2 * mm, wordWrap="CJK"),
        "para": ParagraphStyle("para", fontName=font, fontSize=body_size, leading=body_size * 1.8,
                               alignment=TA_JUSTIFY, firstLineIndent=2 * body_size, spaceAfter=2 * mm,
                               wordWrap="CJK"),
    }
    story: list[Any] = []
    for block in doc.body:
        style = styles.get(str(block.get("style")), styles["para"])
        story.append(Paragraph(escape(str(block.get("text", ""))).replace("\n", "<br/>"), style))
    story.append(Spacer(1, 4 * mm))

    def footer(canvas: Any, d: Any) -> None:
        canvas.saveState()
        canvas.setFont(font, 7.5)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawString(20 * mm, 10 * mm, f"{doc.number} · {case_number}")
        canvas.drawRightString(A4[0] - 20 * mm, 10 * mm, f"第{d.page}页")
        canvas.restoreState()

    buf = io.BytesIO()
    title = next((str(b.get("text")) for b in doc.body if b.get("style") == "title"), doc.kind)
    pdf = SimpleDocTemplate(buf, pagesize=A4, leftMargin=26 * mm, rightMargin=24 * mm, topMargin=30 * mm,
                            bottomMargin=24 * mm, title=f"{title} {doc.number}", author="nonsite",
                            subject=doc.number, lang="zh-CN")
    pdf.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()


def document_view(issued: IssuedDocument, zone: ZoneInfo) -> dict[str, Any]:
    """What the case page and the API show of a document (text as issued, services)."""
    d = issued.document
    return {
        "id": d.id, "kind": d.kind, "number": d.number, "party": d.party, "issued_by": d.issued_by,
        "issued_at": _iso(d.issued_at), "issued_local": _minute(d.issued_at, zone),
        "services": [{"method": s.method, "served_at": _iso(s.served_at), "served_local": _minute(s.served_at, zone),
                      "recipient": s.recipient, "receipt_sha256": (s.receipt or {}).get("sha256"),
                      "note": s.note, "recorded_by": s.recorded_by} for s in issued.services],
    }


def issuable_kinds(role: str | None) -> list[str]:
    """The kinds ``role`` may issue (the console's form offers these)."""
    if role is None:
        return []
    try:
        r = parse_role(role)
    except Exception:
        return []
    return [k for k in KINDS if r in ISSUE_ROLES[k]]
