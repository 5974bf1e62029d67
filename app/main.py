"""The FastAPI application: `create_app(settings)` wires settings, database and routers."""

from __future__ import annotations

import contextlib
import json
import logging

import anyio.to_thread

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from app.web.routes import admin, media, participants, planning, site, statistics
from app.store.db import engine_from_settings, read_session_factory, session_factory
from app.web.clients import SignupLimiter
from app.web.guard import FORM_BODY_MAX, RequestGuard, redact_access_log
from app.web.resilience import RetryOnDisconnect
from app.settings import INSECURE_DEV_SECRET, Settings, get_settings
from app.templating import STATIC_DIR

log = logging.getLogger(__name__)


class PrivacyHeaders:
    """Pure ASGI middleware: participants' pages must not leak their URLs (tokens) to other
    sites, nothing is content-sniffed and no page may be framed (clickjacking). (BaseHTTPMiddleware
    would cost a task per request.)"""

    HEADERS = (
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"frame-ancestors 'none'"),
    )

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


class AdminShare:
    """Pure ASGI: at most `limit` /admin requests run at once per worker process (the rest wait
    here, holding no thread): a researcher's page that fires dozens of image and figure requests
    can never take every request thread from the participants."""

    def __init__(self, app, limit: int):
        import anyio

        self.app = app
        self.limiter = anyio.CapacityLimiter(max(1, limit))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/admin"):
            async with self.limiter:
                return await self.app(scope, receive, send)
        return await self.app(scope, receive, send)


class AdminSessions:
    """Pure ASGI: the signed-cookie session (admin login, CSRF, flash messages) only under /admin.
    Participants' requests, the hot path, skip its cookie parsing and signing entirely. Every
    /admin response is `Cache-Control: no-store` unless it says otherwise (statistics, exports
    and codes must not stay in a browser's or proxy's cache)."""

    def __init__(self, app, **session_options):
        self.app = app
        self.with_session = SessionMiddleware(app, **session_options)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and scope["path"].startswith("/admin"):
            async def send_no_store(message):
                if message["type"] == "http.response.start":
                    headers = message.get("headers", [])
                    if not any(k.lower() == b"cache-control" for k, _ in headers):
                        message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
                await send(message)

            return await self.with_session(scope, receive, send_no_store)
        return await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    # Each handler that touches the database runs in one of these threads; more threads than the
    # connection pool can serve only queue for connections and contend for the GIL.
    anyio.to_thread.current_default_thread_limiter().total_tokens = app.state.settings.threads
    yield


async def _data_error(request: Request, exc: DataError) -> JSONResponse:
    """The database refused a value (too long, out of range, NUL): the input was bad, not the server.
    Validation catches these first; this is the net behind it."""
    log.warning("database refused input on %s %s: %s", request.method, request.url.path, exc.orig)
    return JSONResponse({"detail": "a value in this request cannot be stored (too long or out of range)"}, 400)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422, but ASCII-escaped: the echoed input may hold lone surrogates, which UTF-8
    cannot encode (the default handler then fails with a 500)."""
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. The schema must already be migrated (`app.store.db.upgrade_database`)."""
    settings = settings or get_settings()
    if settings.secret_key == INSECURE_DEV_SECRET:
        log.warning("SFGEVAL_SECRET_KEY is not set: admin sessions use an insecure development key")
    app = FastAPI(title="sfgeval", docs_url=None, redoc_url=None, openapi_url=None, max_body_size=FORM_BODY_MAX,
                  lifespan=_lifespan)
    app.state.settings = settings
    app.state.engine = engine_from_settings(settings)
    app.state.sessionmaker = session_factory(app.state.engine)
    app.state.read_sessionmaker = read_session_factory(settings, app.state.sessionmaker)
    app.add_middleware(
        AdminSessions,
        secret_key=settings.secret_key,
        session_cookie="admin_session",
        max_age=8 * 3600,  # an admin login lasts a working day
        same_site="lax",
        https_only=settings.secure_cookies,
    )

    app.add_middleware(AdminShare, limit=settings.threads // 2)
    app.add_middleware(media.CachedImages)  # inside the privacy headers, outside the admin layers
    app.add_middleware(PrivacyHeaders)
    app.add_middleware(RetryOnDisconnect)
    app.add_middleware(RequestGuard)
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    if proxies:  # outermost: every layer below sees the client's address (app.web.clients)
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
    app.state.signup_limiter = SignupLimiter(settings.signup_rate_per_minute, settings.signup_burst)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    logging.getLogger("uvicorn.access").addFilter(redact_access_log)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for module in (media, participants, site, admin, statistics, planning):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
