"""The FastAPI application: `create_app(settings)` wires settings, database and routers."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from app.api.routes import media, participants
from app.db import engine_from_settings, session_factory
from app.settings import INSECURE_DEV_SECRET, Settings, get_settings
from app.templating import STATIC_DIR

log = logging.getLogger(__name__)

# Routers owned by later work (admin pages, statistics); included when their module exists so the
# participant side can be built and tested on its own.
OPTIONAL_ROUTERS = ("app.api.routes.admin", "app.api.routes.statistics")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. The schema must already be migrated (`app.db.upgrade_database`)."""
    settings = settings or get_settings()
    if settings.secret_key == INSECURE_DEV_SECRET:
        log.warning("SFGEVAL_SECRET_KEY is not set: admin sessions use an insecure development key")
    app = FastAPI(title="sfgeval", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine_from_settings(settings)
    app.state.sessionmaker = session_factory(app.state.engine)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="admin_session",
        max_age=8 * 3600,  # an admin login lasts a working day
        same_site="lax",
        https_only=settings.secure_cookies,
    )

    @app.middleware("http")
    async def _privacy_headers(request, call_next):
        response = await call_next(request)
        # Participants' pages must not leak their URLs (tokens) to other sites.
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.include_router(media.router)
    app.include_router(participants.router)
    for name in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
