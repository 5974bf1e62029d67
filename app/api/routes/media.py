"""Serving blinded images by opaque token: `/i/{token}`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy import select

from app.api.deps import SessionDep
from app.media import IMAGE_HEADERS
from app.models import Image

router = APIRouter()


@router.get("/i/{token}", include_in_schema=False)
def image(token: str, session: SessionDep) -> Response:
    data = session.scalar(select(Image.data).where(Image.token == token))
    if data is None:
        raise HTTPException(404, "no such image")
    return Response(content=data, media_type="image/png", headers=IMAGE_HEADERS)
