"""Site-wide pages outside any study: a neutral front page and the favicon.

The front page names no study, method or product: someone who opens the bare address learns
only that studies are reached through the link they were given.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from app.templating import STATIC_DIR, templates

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def front_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "participant/index.html", {})


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})
