"""Admin log in and log out."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from app.accounts import login_throttle
from app.web.deps import SessionDep, SettingsDep
from app.web.pages import FormDep, admin_router, redirect, render
from app.accounts.admins import authenticate, bootstrap_admin
from app.web.auth import login_session, logout_session, safe_next
from app.web.clients import client_address
from app.store.models import utcnow

router = admin_router()


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "admin/login.html", None, next=safe_next(next), username="", error=None)


@router.post("/login")
def login(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    if not getattr(request.app.state, "admin_bootstrapped", False):
        # The settings/env admin (SFGEVAL_ADMIN_USER / SFGEVAL_ADMIN_PASSWORD) exists from the
        # first login attempt on, whatever created the schema.
        bootstrap_admin(session, settings)
        request.app.state.admin_bootstrapped = True
    username = str(form.get("username") or "")[:150]
    next_url = safe_next(str(form.get("next") or ""))
    address = client_address(request)
    wait, attempt = login_throttle.begin_attempt(session, username, address, utcnow())
    if wait:
        response = render(request, "admin/login.html", None, status_code=429, next=next_url, username=username,
                          error=f"Too many failed attempts. Try again in {wait} seconds.")
        response.headers["Retry-After"] = str(wait)
        return response
    user = authenticate(session, username, str(form.get("password") or ""))
    if user is None:
        login_throttle.failed(username, address)
        return render(
            request, "admin/login.html", None, status_code=401, next=next_url, username=username,
            error="Wrong user name or password.",
        )
    login_throttle.succeeded(session, username, address, attempt)
    login_session(request, session, user)
    return redirect(next_url)


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> Response:
    logout_session(request, session)
    return redirect("/admin/login")
