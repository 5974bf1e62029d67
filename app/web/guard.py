"""Bad input stops at the door: odd URLs, oversized bodies, text a database cannot store.

- `clean_text` / `bad_text` (from `app.store.text`): PostgreSQL refuses NUL in text and UTF-8 has no lone surrogates, so
  such strings from a visitor become a 4xx where they are validated, never a 500 at the INSERT.
- `RequestGuard`, a pure ASGI middleware: a NUL (or any other C0 control character) in the path
  or in the decoded query string, or a query string that is not UTF-8, gets `400`.
- Body caps (FastAPI's `max_body_size`: `413` by `Content-Length` before reading, or as soon as a
  streamed body crosses the cap): the participant router `API_BODY_MAX`, uploads
  `SFGEVAL_MAX_UPLOAD_BYTES` (default 2 GiB, read at start-up), everything else `FORM_BODY_MAX`.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from app.store.text import bad_text, clean_text  # noqa: F401  (re-exported for the routes)

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_BAD_PATH = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")  # a control character or a lone surrogate

# The shapes of the random ids in participant URLs: anything else is unknown without a query.
PARTICIPANT_TOKEN = re.compile(r"^[0-9a-f]{64}$")
PUBLIC_ID = re.compile(r"^[0-9a-f]{32}$")  # trial ids and image tokens

API_BODY_MAX = 16 * 1024
FORM_BODY_MAX = 1024 * 1024


def max_upload_bytes() -> int:
    from app.settings import get_settings

    return get_settings().max_upload_bytes


def same_origin(request) -> bool:
    """False for a cross-site form post. Browsers say so in `Sec-Fetch-Site`; without it, an
    `Origin` naming another site refuses. (Under `Referrer-Policy: no-referrer` a browser sends
    `Origin: null` even from our own page, so `null`, like no header at all, passes.)"""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin in (None, "null"):
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def _reply(status: int, detail: str) -> tuple[dict, dict]:
    body = json.dumps({"detail": detail}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


def _url_problem(scope) -> str | None:
    if _BAD_PATH.search(scope.get("path", "")):  # one regex scan: this runs on every request
        return "the URL path contains a control character"
    query = scope.get("query_string", b"")
    if not query:
        return None
    raw = unquote_to_bytes(query.replace(b"+", b" "))
    if _CONTROL.search(raw.replace(b"\t", b" ")):
        return "the query string contains a control character"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the query string is not valid UTF-8"
    return None


def too_large(cap: int) -> tuple[dict, dict]:
    """The ASGI messages of a 413 for a body over `cap` bytes."""
    return _reply(413, f"request body too large (at most {cap} bytes here)")


class RequestGuard:
    """Pure ASGI middleware: a URL with a control character or a non-UTF-8 query string gets 400."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            problem = _url_problem(scope)
            if problem is not None:
                for message in _reply(400, problem):
                    await send(message)
                return
        await self.app(scope, receive, send)


_TOKEN_IN_PATH = re.compile(r"/api/participants/[^/?\s]+")


def redact_access_log(record) -> bool:
    """Logging filter for `uvicorn.access`: participant tokens in paths become `***`."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
        record.args = (*args[:2], _TOKEN_IN_PATH.sub("/api/participants/***", args[2]), *args[3:])
    return True
