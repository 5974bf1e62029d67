"""Admin authentication on the web: a signed session cookie, CSRF tokens, the `CurrentAdmin` dependency.

Password hashing and checking live in `app.accounts.admins`.

- Passwords are stored only as argon2id hashes (argon2-cffi defaults); hashes made with older
  parameters are upgraded at the next successful login.
- The session is server-side (`app.accounts.admins`: revocable, ended by logout, a password
  change and `sfgeval admin revoke`). Starlette's `SessionMiddleware` (installed in
  `app.main.create_app`) keeps only its random id and the CSRF token in a cookie signed with
  `SFGEVAL_SECRET_KEY`, `HttpOnly`, `SameSite=Lax`, `Secure` with `SFGEVAL_SECURE_COOKIES=1`.
- CSRF: one random token per session, rendered into every admin form as the hidden field
  `csrf_token` (or sent as header `X-CSRF-Token` by scripts). Every unsafe admin request
  (POST/PUT/PATCH/DELETE) must carry it, the login form included, checked in constant time. A
  multipart upload must carry it in the header or the query string (`?csrf_token=`): it is
  checked, and the admin's session too, before any of the body is read.
- One role: an admin user can configure studies, watch progress and export. Researchers get
  admin logins (see the README); the study pages are read-only views plus explicit forms.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.accounts.admins import end_session, session_admin, start_session
from app.web.deps import SessionDep
from app.store.models import AdminUser

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})



# --- session cookie ------------------------------------------------------------------------

def login_session(request: Request, session: Session, user: AdminUser) -> None:
    """Start a fresh session for `user` (a new CSRF token: nothing from before login survives)."""
    request.session.clear()
    request.session["sid"] = start_session(session, user)
    request.session[CSRF_FIELD] = secrets.token_urlsafe(32)


def logout_session(request: Request, session: Session) -> None:
    end_session(session, request.session.get("sid"))
    request.session.clear()


def flash(request: Request, message: str, kind: str = "info") -> None:
    """Queue a one-time message for the next admin page."""
    request.session["flash"] = [*request.session.get("flash", []), [kind, message]]


def pop_flashes(request: Request) -> list[tuple[str, str]]:
    return [tuple(x) for x in request.session.pop("flash", [])]


# --- CSRF ----------------------------------------------------------------------------------

def csrf_token(request: Request) -> str:
    """This session's CSRF token, created on first use (rendered into every admin form)."""
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


async def verify_csrf(request: Request) -> None:
    """Reject an unsafe request whose CSRF token is missing or not this session's (403)."""
    if request.method not in UNSAFE_METHODS:
        return
    expected = request.session.get(CSRF_FIELD)
    sent = request.headers.get(CSRF_HEADER) or request.query_params.get(CSRF_FIELD)
    if not sent:
        content_type = request.headers.get("content-type", "")
        # Small url-encoded forms only: an upload (multipart) is never read before this check.
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = await request.form()  # cached by Starlette: the route reads the same form
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        raise HTTPException(
            status_code=403,
            detail="CSRF check failed: the form's security token is missing or expired. "
            "Reload the page and submit again.",
        )


CsrfProtected = Depends(verify_csrf)


# --- the current admin ---------------------------------------------------------------------

def _wants_json(request: Request) -> bool:
    if request.url.path.endswith(".json"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def safe_next(path: str | None) -> str:
    """Only local admin paths are allowed as a post-login target (no open redirect)."""
    if path and path.startswith("/admin") and not path.startswith("//") and "\\" not in path:
        return path
    return "/admin/studies"


def get_current_admin(request: Request, session: SessionDep) -> AdminUser:
    """The logged-in admin; otherwise 401 (JSON URLs) or a redirect to the login page (HTML)."""
    user = session_admin(session, request.session.get("sid"))
    if user is None:
        if _wants_json(request):
            raise HTTPException(status_code=401, detail="log in at /admin/login first")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(
            status_code=303,
            detail="login required",
            headers={"Location": f"/admin/login?next={quote(target, safe='')}"},
        )
    return user


CurrentAdmin = Annotated[AdminUser, Depends(get_current_admin)]
