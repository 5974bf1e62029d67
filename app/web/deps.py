"""Dependencies shared by every router, declared once as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; routes commit explicitly, anything uncommitted is rolled back.
    An admin's GET only reads (tests/test_read_only.py): it gets a read session, which on SQLite
    never holds the write lock that participants' answers need."""
    factory = request.app.state.sessionmaker
    if request.method in ("GET", "HEAD") and request.url.path.startswith("/admin"):
        factory = request.app.state.read_sessionmaker
    with factory() as session:
        yield session


async def get_app_settings(request: Request) -> Settings:
    # async: FastAPI would run a plain function in a worker thread, a hop per request for an attribute.
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
