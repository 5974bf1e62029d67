"""The FastAPI application: `create_app(settings)` wires settings, database and routers."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from app.api.routes import media, participants, site
from app.db import engine_from_settings, session_factory
from app.settings import INSECURE_DEV_SECRET, Settings, get_settings
from app.templating import STATIC_DIR

log = logging.getLogger(__name__)

# Routers owned by later work (admin pages, statistics); included when their module exists so the
# participant side can be built and tested on its own.
OPTIONAL_ROUTERS = ("app.api.routes.admin", "app.api.routes.statistics")


class PrivacyHeaders:
    """Pure ASGI middleware: participants' pages must not leak their URLs (tokens) to other
    sites, and nothing is content-sniffed. (BaseHTTPMiddleware would cost a task per request.)"""

    HEADERS = [(b"referrer-policy", b"no-referrer"), (b"x-content-type-options", b"nosniff")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


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

    app.add_middleware(PrivacyHeaders)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.include_router(media.router)
    app.include_router(participants.router)
    app.include_router(site.router)
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
