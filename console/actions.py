"""Case transitions on behalf of a console user: role check, input checks, feedback photos, then the workflow.

The pages (forms) and the JSON API both call :func:`perform`; errors come back as :class:`ActionError`
with an HTTP status, a code, an English message for the API and a catalogue key for the pages.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread

from nonsite.cases import (
    DISMISS_REASONS,
    Case,
    CaseNotFound,
    InvalidReason,
    InvalidTransition,
    PermissionDenied,
    WorkflowError,
    apply_action,
    case_by_number,
)
from nonsite.cases.attachments import AttachmentError, PreparedPhoto, prepare_photo, store_photo
from nonsite.cases.bureau import BUREAU_PERMISSIONS, answer_supervision, reassign, supervise, supervisions_of
from nonsite.cases.workflow import TRANSITIONS, Action
from nonsite.console.auth import ACTION_ROLES, Principal, Role
from nonsite.console.views import ConsoleState, sees_case
from nonsite.evidence.store import StoreError

log = logging.getLogger(__name__)

#: Actions posted to ``/cases/{number}/{action}``; ``rectify`` comes with the feedback upload.
FORM_ACTIONS: tuple[str, ...] = ("confirm", "dismiss", "approve", "return", "dispatch", "close")
MAX_NOTE = 2000
MAX_PHOTOS = 5
#: Feedback uploads handled at once (each in a worker thread); more wait on the event loop, holding no thread.
MAX_CONCURRENT_UPLOADS = 4
#: HTTP status of each refused photo (:class:`~nonsite.cases.attachments.AttachmentError` codes).
_PHOTO_STATUS = {"too_large": 413, "bad_case_number": 404}


@dataclass
class ActionError(Exception):
    status: int
    code: str
    message: str
    """English, for the API."""
    key: str
    """Catalogue key for the pages (``error.*``)."""
    fields: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def _not_found(number: str) -> ActionError:
    return ActionError(404, "not_found", f"no case {number}; list cases with GET /api/cases",
                       "error.case_not_found", {"number": number})


def perform(
    state: ConsoleState,
    number: str,
    action: str,
    principal: Principal,
    actor: str,
    *,
    reason: str | None = None,
    note: str = "",
    team: str | None = None,
    photos: Sequence[Upload] = (),
    decision: dict[str, Any] | None = None,
) -> Case:
    """Apply ``action`` to case ``number`` for ``principal`` (recorded as ``actor``); ActionError otherwise."""
    roles = ACTION_ROLES.get(action)
    if roles is None:
        raise ActionError(404, "unknown_action", f"no case action {action!r}; use one of "
                          f"{', '.join(ACTION_ROLES)}", "error.unknown_action", {"action": action})
    if principal.role not in roles:
        names = [r.value for r in Role if r in roles]
        raise ActionError(403, "forbidden", f"your role ({principal.role}) may not '{action}' cases; this needs "
                          f"{' or '.join(names)}", "error.forbidden_action",
                          {"action": action, "roles": names, "role": principal.role})
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise ActionError(422, "bad_request", f"the note is {len(note)} characters; at most {MAX_NOTE}",
                          "error.note_too_long", {"max": MAX_NOTE})
    if action == "dismiss":
        if reason not in DISMISS_REASONS:
            raise ActionError(422, "invalid_reason", f"dismiss reason {reason!r} is not one of "
                              f"{', '.join(DISMISS_REASONS)}", "error.invalid_reason")
    elif reason:
        raise ActionError(422, "bad_request", f"only dismiss takes a reason; '{action}' takes a note",
                          "error.invalid_reason")
    if action == "return" and not note:
        raise ActionError(422, "comment_required", "returning a case needs a comment saying what to fix",
                          "error.comment_required")
    if action == "dispatch":
        if not team:
            raise ActionError(422, "team_required", f"choose the team to dispatch to: {', '.join(state.teams)}",
                              "error.team_required")
        if team not in state.teams:
            raise ActionError(422, "unknown_team", f"team {team!r} is not one of {', '.join(state.teams)}",
                              "error.unknown_team", {"team": team})
    elif team:
        raise ActionError(422, "bad_request", f"only dispatch takes a team; '{action}' does not",
                          "error.bad_request", {"message": "team"})
    if photos and action != "rectify":
        raise ActionError(422, "bad_request", "only feedback (rectify) takes photos", "error.bad_request",
                          {"message": "photos"})
    if action == "rectify":
        if len(photos) > MAX_PHOTOS:
            raise ActionError(422, "too_many_photos", f"{len(photos)} photos sent; at most {MAX_PHOTOS} per feedback",
                              "error.too_many_photos", {"max": MAX_PHOTOS})
        if not photos and not note:
            raise ActionError(422, "feedback_empty", "feedback needs a rectification photo or a note",
                              "error.feedback_empty")

    with state.session_factory() as session:
        case = case_by_number(session, number)
    if case is None or not sees_case(state, principal, case):
        raise _not_found(number)
    act = Action(action)
    if act not in TRANSITIONS[case.status]:
        raise _invalid(InvalidTransition(case.number, case.status, act))

    # Every photo is checked before any is stored: a refused one leaves nothing behind.
    prepared: list[PreparedPhoto] = []
    for upload in photos:
        try:
            prepared.append(prepare_photo(upload.data, upload.filename, max_bytes=state.max_upload_bytes))
        except AttachmentError as exc:
            raise photo_error(exc, state.max_upload_bytes) from None
    attachments: list[dict[str, Any]] = []
    for photo in prepared:
        if any(a["sha256"] == photo.sha256 for a in attachments):
            continue
        try:
            attachments.append(store_photo(state.store, case.number, photo))
        except AttachmentError as exc:
            raise photo_error(exc, state.max_upload_bytes) from None
        except StoreError as exc:
            log.warning("cannot store a feedback photo of case %s: %s", case.number, exc)
            raise ActionError(503, "store_unavailable", "the evidence store cannot be written right now; "
                              "try again later", "error.store_unavailable") from None
    try:  # the team and the photos are recorded as fields of the audit entry; the note is only text
        return apply_action(
            state.session_factory, case.number, act, actor, role=principal.role, reason=reason,
            note=note, assignee=team, person=principal.person, attachments=attachments or None,
            time_limits=state.time_limits, timezone=state.zone.key, now=state.clock(), decision=decision,
            recheck=state.recheck,
        )
    except CaseNotFound:
        raise _not_found(number) from None
    except InvalidTransition as exc:
        raise _invalid(exc) from None
    except InvalidReason as exc:
        raise ActionError(422, "invalid_reason", str(exc), "error.invalid_reason") from None
    except PermissionDenied as exc:  # e.g. the legal review by the same person who confirmed the case
        raise ActionError(403, "forbidden", str(exc), "error.bad_request", {"message": str(exc)}) from None
    except WorkflowError as exc:
        raise ActionError(422, "bad_request", str(exc), "error.bad_request", {"message": str(exc)}) from None


def photo_error(exc: AttachmentError, limit: int) -> ActionError:
    """The :class:`ActionError` (status, code, message key) a rejected photo upload answers with."""
    status = _PHOTO_STATUS.get(exc.code, 415)
    key = {"empty": "bad_image", "bad_case_number": "case_not_found"}.get(exc.code, exc.code)
    return ActionError(status, exc.code, exc.message, f"error.{key}",
                       {"filename": exc.filename, "size": "", "limit": f"{limit / 1024 / 1024:.1f} MB"})


_UPLOAD_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = \
    weakref.WeakKeyDictionary()


def upload_limiter() -> anyio.CapacityLimiter:
    """The running event loop's limiter on concurrent upload worker threads (``MAX_CONCURRENT_UPLOADS``)."""
    loop = asyncio.get_running_loop()
    limiter = _UPLOAD_LIMITERS.get(loop)
    if limiter is None:
        limiter = _UPLOAD_LIMITERS[loop] = anyio.CapacityLimiter(MAX_CONCURRENT_UPLOADS)
    return limiter


async def perform_upload(
    state: ConsoleState, number: str, principal: Principal, actor: str, *, note: str, photos: Sequence[Upload],
) -> Case:
    """:func:`perform` ``rectify`` with photos from an ``async`` handler, in a worker thread.

    Decoding, re-encoding, hashing and writing photos block for a while (seconds for a large PNG); on the
    event loop they would stall every other request, ``/healthz`` included. At most
    :data:`MAX_CONCURRENT_UPLOADS` run at once; the others wait without holding a thread.
    """
    def run() -> Case:
        return perform(state, number, "rectify", principal, actor, note=note, photos=photos)

    return await anyio.to_thread.run_sync(run, limiter=upload_limiter())


def _invalid(exc: InvalidTransition) -> ActionError:
    return ActionError(409, "invalid_transition", str(exc), "error.invalid_transition",
                       {"action": exc.action.value, "status": exc.status.value})


def bureau_action(
    state: ConsoleState, principal: Principal, actor: str, action: str, number: str, *, text: str,
    team: str | None = None, deadline: datetime | None = None, order: int | None = None,
) -> Any:
    """reassign (``team``, reason in ``text``) | supervise (instruction, ``deadline``) | answer_supervision (answer,
    ``order``) on case ``number`` for ``principal``: the case or the order; ActionError otherwise."""
    roles = BUREAU_PERMISSIONS[action]
    if principal.role not in roles:
        names = [r.value for r in Role if r.value in {x.value for x in roles}]
        raise ActionError(403, "forbidden", f"your role ({principal.role}) may not '{action}'; this needs "
                          f"{' or '.join(names)}", "error.forbidden_action",
                          {"action": action, "roles": names, "role": principal.role})
    with state.session_factory() as session:
        case = case_by_number(session, number)
        orders = supervisions_of(session, case.id) if case is not None else []
    if case is None or not sees_case(state, principal, case):
        raise _not_found(number)
    now, kw = state.clock(), {"role": principal.role, "person": principal.person}
    try:
        if action == "reassign":
            if state.organisation is None or state.organisation.team(team or "") is None:
                raise ActionError(422, "unknown_team", f"team {team!r} is not one of {', '.join(state.teams)}",
                                  "error.unknown_team", {"team": team or ""})
            return reassign(state.session_factory, case.number, team or "", actor, text,
                            organisation=state.organisation, now=now, **kw)
        if action == "supervise":
            return supervise(state.session_factory, case.number, actor, text, new_deadline=deadline, now=now,
                             time_limits=state.time_limits, **kw)
        if order not in {o.id for o in orders}:
            raise ActionError(404, "not_found", f"case {case.number} has no supervision order {order}",
                              "error.bad_request", {"message": f"{order}"})
        return answer_supervision(state.session_factory, order or 0, actor, text, organisation=state.organisation,
                                  now=now, time_limits=state.time_limits, timezone=state.zone.key, **kw)
    except CaseNotFound:
        raise _not_found(number) from None
    except PermissionDenied as exc:
        raise ActionError(403, "forbidden", str(exc), "error.bad_request", {"message": str(exc)}) from None
    except WorkflowError as exc:
        raise ActionError(422, "bad_request", str(exc), "error.bad_request", {"message": str(exc)}) from None
