"""Serving blinded images by opaque token: `/i/{token}`."""

from __future__ import annotations

import threading
from collections import OrderedDict

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import bindparam, select
from starlette.concurrency import run_in_threadpool

from app.web.guard import PUBLIC_ID
from app.studies.media import IMAGE_HEADERS
from app.store.models import Image

router = APIRouter()


class ImageBytesCache:
    """A per-process LRU of image bytes by token, at most `max_bytes` in all.

    Images are never changed or deleted once imported and tokens are random and unique, so a
    cached entry can never go stale; only hits are cached (an unknown token asks the database
    each time).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()  # misses are stored from threadpool threads

    def get(self, token: str) -> bytes | None:
        with self._lock:
            data = self._items.get(token)
            if data is not None:
                self._items.move_to_end(token)
            return data

    def put(self, token: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(token, None)
            if old is not None:
                self._size -= len(old)
            self._items[token] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


IMAGE_CACHE = ImageBytesCache(max_bytes=64 * 1024 * 1024)


# Core, built once: a miss costs one pooled connection and one prepared statement, no ORM session.
_IMAGE_DATA = select(Image.data).where(Image.token == bindparam("token"))
_IMAGES_DATA = select(Image.token, Image.data).where(Image.token.in_(bindparam("tokens", expanding=True)))


def prefetch(session, tokens: list[str]) -> None:
    """Cache the bytes of `tokens` not cached yet, in one query on `session`.

    /next calls this for the images it is about to show: the browser fetches them next over the
    same keep-alive connection, usually from the same worker, which then answers from memory
    instead of a thread hop, a pooled connection and a query per image."""
    missing = [t for t in tokens if IMAGE_CACHE.get(t) is None]
    if missing:
        for token, data in session.execute(_IMAGES_DATA, {"tokens": missing}):
            IMAGE_CACHE.put(token, data)


def _load(request: Request, token: str) -> bytes | None:
    # begin(): ends with COMMIT; a ROLLBACK would make psycopg drop its prepared statements.
    with request.app.state.engine.begin() as conn:
        return conn.scalar(_IMAGE_DATA, {"token": token})


_IMAGE_RESPONSE_HEADERS = [(k.lower().encode(), v.encode()) for k, v in IMAGE_HEADERS.items()]


class CachedImages:
    """Pure ASGI middleware: a GET of `/i/{token}` whose bytes this process has cached is answered
    here, with the very response of the route below (same status, headers and body), without
    FastAPI's routing, dependency resolution and exception layers: two of a participant's four
    requests per trial are these. Anything else (a miss, another path or method) goes on to the
    app. Installed inside `PrivacyHeaders`, `RequestGuard` and `RetryOnDisconnect`, which still
    see these requests."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith("/i/"):
            data = IMAGE_CACHE.get(scope["path"][3:])  # keys are valid tokens: "a/b" or "" never match
            if data is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*_IMAGE_RESPONSE_HEADERS, (b"content-length", str(len(data)).encode()),
                                        (b"content-type", b"image/png")]})
                await send({"type": "http.response.body", "body": data})
                return
        await self.app(scope, receive, send)


@router.get("/i/{token}", include_in_schema=False)
async def image(token: str, request: Request) -> Response:
    # async, and a session only on a miss: a cached image costs no thread hop and no database.
    data = IMAGE_CACHE.get(token)
    if data is None:
        if not PUBLIC_ID.match(token):
            raise HTTPException(404, "no such image")
        data = await run_in_threadpool(_load, request, token)
        if data is None:
            raise HTTPException(404, "no such image")
        IMAGE_CACHE.put(token, data)
    return Response(content=data, media_type="image/png", headers=IMAGE_HEADERS)
