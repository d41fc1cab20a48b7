"""The case document (案件材料) for the file: an HTML view and a PDF, made by a :class:`DocumentRenderer`.

The renderer (``cases/document.py``) owns the layout, the legal basis and the embedded CJK font; the
console only serves what it renders, to any logged-in user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from nonsite.cases import Case, case_by_number
from nonsite.console.auth import authorize, principal_of
from nonsite.console.render import error_page, resolve_lang
from nonsite.console.views import sees_case, state_of

log = logging.getLogger(__name__)

#: The document's own page may carry inline styles (it is also printed); scripts stay forbidden.
DOCUMENT_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")


class DocumentRenderer(Protocol):
    def html(self, case: Case, lang: str) -> str:
        """The case document as a complete HTML page (escaped; images as ``data:`` URLs or console URLs)."""

    def pdf(self, case: Case, lang: str) -> bytes:
        """The case document as a PDF with its CJK font embedded."""


router = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])


def _load(request: Request, number: str) -> tuple[DocumentRenderer | None, Case | None, Response | None]:
    state = state_of(request)
    with state.session_factory() as session:
        case = case_by_number(session, number)
    if case is None or not sees_case(state, principal_of(request), case):
        return None, None, error_page(request, 404, "case_not_found", f"no case {number}", number=number)
    if state.documents is None:
        return None, None, error_page(request, 404, "documents_unavailable",
                                      "case documents are not set up in this console")
    return state.documents, case, None


def _render(request: Request, number: str, what: str, make: Callable[[DocumentRenderer, Case, str], Any]
            ) -> tuple[Case | None, Any, Response | None]:
    """Load case ``number`` and render it with ``make(renderer, case, lang)``; on failure an error page."""
    renderer, case, failed = _load(request, number)
    if failed is not None or renderer is None or case is None:
        return None, None, failed or error_page(request, 500, "internal", "no renderer")
    lang = resolve_lang(request, state_of(request))[0]
    try:
        return case, make(renderer, case, lang), None
    except Exception:
        log.exception("the case %s of %s could not be rendered", what, number)
        return None, None, error_page(request, 500, "document_failed",
                                      f"the document of case {number} could not be made", number=number)


@router.get("/cases/{number}/document", name="document_html", response_class=HTMLResponse)
def document_html(request: Request, number: str) -> Response:
    _, html, failed = _render(request, number, "document", lambda r, case, lang: r.html(case, lang))
    if failed is not None:
        return failed
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCUMENT_CSP, "Cache-Control": "no-store"})


@router.get("/cases/{number}/document.pdf", name="document_pdf")
def document_pdf(request: Request, number: str) -> Response:
    case, pdf, failed = _render(request, number, "document PDF", lambda r, case, lang: r.pdf(case, lang))
    if failed is not None or case is None:
        return failed or error_page(request, 500, "internal", "no case")
    filename = f"{case.number}.pdf"
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "no-store",
    })
