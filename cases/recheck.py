"""Camera re-check before closing (docs/recheck.md), the case side.

When a case is reported rectified (the field officer's result ``rectified`` or the console's feedback) and
``cases.recheck.enabled``, the rectify transaction also records a :class:`~nonsite.cases.db.CaseRecheck`
(state ``pending``) and queues a :class:`~nonsite.bus.events.RecheckRequest` for ``nonsite.recheck`` in the
outbox: the request reaches the edge (or pool worker) that runs the camera only if the rectification is committed.

The camera side answers with an *after* evidence package (a ``ViolationEvent`` with a ``recheck`` block), sealed
and signed by the sealer like every package; the drafter hands it to :func:`apply_result`:

- ``clear``: the package is linked to the case; the reviewer sees before and after and may close;
- ``present``: the case goes back to the team (``rework``: rectified → dispatched, by ``system:recheck``, with the
  after stills in the audit entry); the next rectification asks the camera again;
- ``unavailable``: the reviewer may close with a note saying why (audited).

Closing is refused while the re-check is pending; a pending re-check whose answer is overdue
(``requested_at + timeout_s + answer_grace_s``) counts as unavailable (:func:`effective_state`). A case for which
no re-check was asked closes as before.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus.events import TOPIC_CASES, TOPIC_RECHECK, CaseDecision, EvidenceSealed, RecheckRequest
from nonsite.cases.db import AuditEntry, Case, CaseRecheck, CaseStatus, OutboxMessage, utcnow, write_session
from nonsite.config.services import RecheckConfig

__all__ = [
    "PENDING",
    "RECHECK_ACTOR",
    "RECHECK_AUDIT",
    "REWORK",
    "STATES",
    "RecheckError",
    "RecheckView",
    "after_stills",
    "apply_result",
    "effective_state",
    "latest_recheck",
    "recheck_target",
    "request_recheck",
]

log = logging.getLogger(__name__)

RECHECK_ACTOR = "system:recheck"
#: Audit action of an answered (or expired) re-check that leaves the status as it is.
RECHECK_AUDIT = "recheck"
#: Audit action of the system's transition rectified → dispatched when the camera still sees the object.
REWORK = "rework"
PENDING = "pending"
STATES: tuple[str, ...] = (PENDING, "clear", "present", "unavailable")
#: Roles of the after package's stills, in the order the case page shows them.
AFTER_STILL_ROLES: tuple[str, ...] = ("after_first_annotated", "after_last_annotated", "after_first", "after_last")
_MAX_BOXES = 32


class RecheckError(ValueError):
    """An after package that cannot answer any re-check of this database (it goes to the dead letter)."""


def recheck_target(case: Case) -> tuple[list[str], list[list[float]]] | None:
    """The classes and pixel boxes the camera looks for: those of the confirmation still's boxes (any still's, when
    it has none); None when the case records no box (nothing to look for, so no re-check)."""
    boxes = (case.violation or {}).get("boxes") or {}
    if not isinstance(boxes, dict):
        return None
    chosen = boxes.get("confirm") or next((b for b in boxes.values() if b), [])
    classes: list[str] = []
    xyxys: list[list[float]] = []
    for b in chosen if isinstance(chosen, list) else []:
        name = str((b or {}).get("class_name") or "")
        xyxy = (b or {}).get("xyxy")
        if name and name not in classes and len(name) <= 64:
            classes.append(name)
        if isinstance(xyxy, list | tuple) and len(xyxy) == 4:
            xyxys.append([float(v) for v in xyxy])
    if not classes:
        return None
    return classes[:_MAX_BOXES], xyxys[:_MAX_BOXES]


def request_recheck(session: Session, case: Case, actor: str, policy: RecheckConfig | None,
                    now: datetime) -> CaseRecheck | None:
    """In the caller's (rectify) transaction: record a pending re-check and queue its request in the outbox;
    None (nothing written) when re-checks are off, the type is not re-checked or the case has no object box."""
    if policy is None or not policy.enabled or (policy.types and case.type not in policy.types):
        return None
    target = recheck_target(case)
    if target is None:
        log.info("case %s: no object box recorded, so no camera re-check", case.number)
        return None
    classes, boxes = target
    request = RecheckRequest(
        request_id=str(uuid.uuid4()), case_number=case.number, camera_id=case.camera_id, zone_id=case.zone_id,
        violation_type=case.type, classes=classes,
        boxes_px=[(b[0], b[1], b[2], b[3]) for b in boxes] if policy.match_box else [],
        clear_s=policy.clear_s, timeout_s=policy.timeout_s, min_confidence=policy.min_confidence, requested_at=now,
    )
    rc = CaseRecheck(
        case_id=case.id, request_id=request.request_id, camera_id=case.camera_id, zone_id=case.zone_id,
        classes=classes, boxes_px=[list(b) for b in request.boxes_px], clear_s=policy.clear_s,
        timeout_s=policy.timeout_s, requested_at=now, requested_by=actor,
        answer_due_at=now + timedelta(seconds=policy.timeout_s + policy.answer_grace_s), state=PENDING,
        after_evidence=[], detail={},
    )
    session.add(rc)
    case.recheck_state = PENDING
    session.add(OutboxMessage(topic=TOPIC_RECHECK, key=case.camera_id, value=request.model_dump_json()))
    return rc


def latest_recheck(session: Session, case_id: int) -> CaseRecheck | None:
    return session.scalar(select(CaseRecheck).where(CaseRecheck.case_id == case_id)
                          .order_by(CaseRecheck.id.desc()).limit(1))


def effective_state(rc: CaseRecheck | None, now: datetime) -> str | None:
    """The re-check's state as the reviewer sees it: a pending one past its answer deadline is unavailable."""
    if rc is None:
        return None
    if rc.state == PENDING and now >= rc.answer_due_at:
        return "unavailable"
    return rc.state


def expire_if_overdue(session: Session, case: Case, rc: CaseRecheck, now: datetime) -> None:
    """In the caller's transaction: a pending re-check past its answer deadline becomes unavailable (audited)."""
    if rc.state != PENDING or now < rc.answer_due_at:
        return
    rc.state, rc.answered_at = "unavailable", now
    rc.detail = {"outcome": "unavailable", "detail": "no answer from the camera side by "
                 f"{rc.answer_due_at.astimezone(UTC).isoformat()} (timeout and grace passed)"}
    case.recheck_state = "unavailable"
    session.add(AuditEntry(case_id=case.id, at=now, actor=RECHECK_ACTOR, action=RECHECK_AUDIT,
                           before_status=case.status.value, after_status=case.status.value,
                           detail={"request_id": rc.request_id, "outcome": "unavailable",
                                   "detail": rc.detail["detail"]}))


def check_close(session: Session, case: Case, note: str, now: datetime) -> dict[str, Any] | None:
    """Whether the case may close as far as its re-check goes: raises
    :class:`~nonsite.cases.workflow.WorkflowError` with the reason when not; returns what the close's audit entry
    records about the re-check (None when none was asked)."""
    from nonsite.cases.workflow import InvalidReason, WorkflowError

    rc = latest_recheck(session, case.id)
    if rc is None:
        return None
    expire_if_overdue(session, case, rc, now)
    if rc.state == PENDING:
        raise WorkflowError(
            f"case {case.number} waits for the camera re-check asked at {rc.requested_at.isoformat()}; it can be "
            f"closed once the camera answers (at the latest {rc.answer_due_at.isoformat()}, after which it counts "
            "as unavailable)")
    if rc.state == "present":
        raise WorkflowError(f"the camera still saw the object of case {case.number}; it went back to the team")
    if rc.state == "unavailable" and not note.strip():
        raise InvalidReason(
            f"the camera could not re-check case {case.number}; closing without it needs a note saying why")
    return {"request_id": rc.request_id, "outcome": rc.state, "after_event_id": rc.after_event_id}


def after_stills(rc: CaseRecheck) -> list[dict[str, Any]]:
    """The after package's stills (EvidenceItem dicts), annotated first."""
    by_role = {str(i.get("role")): i for i in rc.after_evidence or []}
    return [by_role[r] for r in AFTER_STILL_ROLES if r in by_role]


def apply_result(session_factory: sessionmaker[Session], sealed: EvidenceSealed, *,
                 now: datetime | None = None, time_limits: Any = None,
                 timezone: str = "Asia/Shanghai") -> str:
    """Record the sealed after package ``sealed`` on its case; returns what happened: ``clear``, ``present``
    (the case went back to the team), ``unavailable`` or ``duplicate`` (already answered: a redelivery).

    Raises :class:`RecheckError` for a package that answers no re-check here or contradicts its request."""
    from nonsite.cases.workflow import load_for_update, set_step_due

    v = sealed.violation
    result = v.recheck
    if result is None:
        raise RecheckError("not an after package (no recheck block)")
    now = (now or utcnow()).astimezone(UTC)
    with write_session(session_factory) as session:
        rc = session.scalar(select(CaseRecheck).where(CaseRecheck.request_id == result.request_id))
        if rc is None:
            raise RecheckError(f"after package {sealed.event_id} answers re-check {result.request_id!r}, which this "
                               "case database never asked")
        if sealed.event_id != rc.request_id:
            raise RecheckError(f"after package {sealed.event_id} is not the package of re-check {rc.request_id}")
        case = load_for_update(session, rc.case_id)
        if result.case_number != case.number or v.camera_id != rc.camera_id:
            raise RecheckError(f"after package {sealed.event_id} names case {result.case_number!r} / camera "
                               f"{v.camera_id!r}, but re-check {rc.request_id} is for case {case.number} / camera "
                               f"{rc.camera_id}")
        if rc.state != PENDING and rc.after_event_id is not None:
            return "duplicate"
        latest = latest_recheck(session, case.id)
        rc.state, rc.answered_at, rc.observed_at = result.outcome, now, result.observed_at
        rc.after_event_id, rc.after_manifest_key = sealed.event_id, sealed.manifest_key
        rc.after_manifest_sha256, rc.after_signature_key = sealed.manifest_sha256, sealed.signature_key
        rc.after_evidence = [item.model_dump(mode="json") for item in v.evidence]
        rc.detail = {**result.model_dump(mode="json"), "seal_problems": list(sealed.problems)}
        current = latest is not None and latest.id == rc.id
        stills = [str(i["sha256"]) for i in after_stills(rc)]
        detail = {"request_id": rc.request_id, "outcome": result.outcome, "after_event_id": sealed.event_id,
                  "manifest_sha256": sealed.manifest_sha256, "observed_at": result.observed_at.isoformat(),
                  "frames": result.frames}
        if result.clear_since is not None:
            detail["clear_since"] = result.clear_since.isoformat()
        if result.detail:
            detail["detail"] = result.detail
        if not current:
            detail["superseded"] = True  # a newer re-check is under way; this answer is kept, the case unchanged
        if current:
            case.recheck_state = result.outcome
        before = case.status
        if current and result.outcome == "present" and before is CaseStatus.RECTIFIED:
            case.status = CaseStatus.DISPATCHED
            case.updated_at = now
            set_step_due(session, case, time_limits, timezone, now)
            session.add(AuditEntry(case_id=case.id, at=now, actor=RECHECK_ACTOR, action=REWORK,
                                   before_status=before.value, after_status=case.status.value, detail=detail,
                                   team=case.dispatched_to or None, photos=stills or None))
            decision = CaseDecision(case_number=case.number, event_id=case.event_id, status=case.status.value,
                                    previous_status=before.value, actor=RECHECK_ACTOR,
                                    reason="camera re-check: the object is still there", at=now)
            session.add(OutboxMessage(topic=TOPIC_CASES, key=case.number, value=decision.model_dump_json()))
        else:
            session.add(AuditEntry(case_id=case.id, at=now, actor=RECHECK_ACTOR, action=RECHECK_AUDIT,
                                   before_status=before.value, after_status=before.value, detail=detail,
                                   photos=stills or None))
    log.info("case %s: camera re-check %s answered %s (after package %s)", case.number, rc.request_id,
             result.outcome, sealed.event_id)
    return result.outcome if current else "superseded"


@dataclass(frozen=True)
class RecheckView:
    """A re-check as the case page shows it."""

    request_id: str
    state: str
    """Effective state (a pending re-check past its deadline shows as unavailable)."""
    requested_at: datetime
    requested_by: str
    answer_due_at: datetime
    clear_s: float
    timeout_s: float
    camera_id: str
    classes: list[str]
    observed_at: datetime | None
    clear_since: str | None
    detail: str
    after_event_id: str | None
    after_stills: list[dict[str, Any]]
    after_manifest_sha256: str | None


def views_of(session: Session, case_id: int, now: datetime) -> list[RecheckView]:
    """Every re-check of the case, newest first."""
    rows = session.scalars(select(CaseRecheck).where(CaseRecheck.case_id == case_id)
                           .order_by(CaseRecheck.id.desc())).all()
    out = []
    for rc in rows:
        d = rc.detail or {}
        out.append(RecheckView(
            rc.request_id, effective_state(rc, now) or rc.state, rc.requested_at, rc.requested_by, rc.answer_due_at,
            rc.clear_s, rc.timeout_s, rc.camera_id, list(rc.classes or []), rc.observed_at,
            str(d.get("clear_since") or "") or None, str(d.get("detail") or ""), rc.after_event_id, after_stills(rc),
            rc.after_manifest_sha256))
    return out
