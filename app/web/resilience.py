"""One more try when the database connection drops in the middle of a request.

The checkout check and the connect retry (`app.store.db`) cover connections that died while idle in the
pool; a connection that dies *during* a request (a database restart, a failover) raises a
disconnect error there. `RetryOnDisconnect` (pure ASGI) then runs the request again, up to
`ATTEMPTS` times, if no byte of the response has gone out yet and the request is safe to repeat:
any GET/HEAD, and the participant POSTs (`/api/...` answers are idempotent per `request_id`;
sign-ups and the start form at worst leave an unused participant row). Their bodies are small
(capped at `API_BODY_MAX`/`FORM_BODY_MAX`), so they are buffered for the replay. Admin POSTs are
never repeated.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import DBAPIError

from app.web.guard import FORM_BODY_MAX, too_large

log = logging.getLogger(__name__)

ATTEMPTS = 3
REPEATABLE_POSTS = ("/api/", "/s/")


def is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or type(exc.orig).__name__ in ("OperationalError", "InterfaceError")
    return False


class RetryOnDisconnect:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (
            scope["method"] in ("GET", "HEAD")
            or (scope["method"] == "POST" and scope["path"].startswith(REPEATABLE_POSTS))
        ):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > FORM_BODY_MAX:
            for reply in too_large(FORM_BODY_MAX):
                await send(reply)
            return
        messages = []  # the request body, kept for a replay (never more than FORM_BODY_MAX)
        more, size = scope["method"] == "POST", 0
        while more:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > FORM_BODY_MAX:
                for reply in too_large(FORM_BODY_MAX):
                    await send(reply)
                return
            more = message["type"] == "http.request" and message.get("more_body", False)
        for attempt in range(1, ATTEMPTS + 1):
            started = False
            queue = list(messages)

            async def replay_receive(queue=queue):
                if queue:
                    return queue.pop(0)
                return await receive()  # after the body: disconnect notices

            async def tracking_send(message):
                nonlocal started
                started = True
                await send(message)

            try:
                return await self.app(scope, replay_receive, tracking_send)
            except Exception as exc:
                if started or attempt == ATTEMPTS or not is_disconnect(exc):
                    raise
                log.warning("database connection lost during %s %s; trying again (%d)", scope["method"],
                            scope["path"], attempt)
                await asyncio.sleep(0.2 * attempt)
