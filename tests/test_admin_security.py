"""Admin sessions are server-side and revocable, logins are throttled, uploads are checked before
their body is read (issue 8). SQLite and PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest
from click.testing import CliRunner

from app import cli
from app.accounts.admins import ensure_admin
from tests.test_admin import PASSWORD, USER, csrf_of, login, token


@pytest.fixture
def admin_client(client, session):
    ensure_admin(session, USER, PASSWORD)
    assert login(client).status_code == 303
    return client


def _cookie_payload(client) -> dict:
    value = client.cookies.get("admin_session")
    return json.loads(base64.b64decode(value.split(".")[0] + "=="))


def test_logout_ends_a_copied_cookie_and_nothing_password_derived_is_in_it(admin_client):
    payload = _cookie_payload(admin_client)
    assert set(payload) <= {"sid", "csrf_token", "flash"} and "sid" in payload
    copied = admin_client.cookies.get("admin_session")
    r = admin_client.post("/admin/logout", data={"csrf_token": token(admin_client)}, follow_redirects=False)
    assert r.status_code == 303
    admin_client.cookies.set("admin_session", copied)
    assert admin_client.get("/admin/studies.json").status_code == 401


def test_cli_manages_admins_and_revoke_all_ends_sessions(admin_client, settings):
    runner = CliRunner()
    db = ["--database-url", settings.database_url]
    weak = runner.invoke(cli.main, ["admin", "create", "bob", "--password-stdin", *db], input="password1234\n")
    assert weak.exit_code != 0 and "too weak" in weak.output
    short = runner.invoke(cli.main, ["admin", "create", "bob", "--password-stdin", *db], input="Xy9!\n")
    assert short.exit_code != 0 and "12 characters" in short.output
    ok = runner.invoke(cli.main, ["admin", "create", "bob", "--password-stdin", *db],
                       input="violet tractor amber canyon\n")
    assert ok.exit_code == 0, ok.output
    listed = runner.invoke(cli.main, ["admin", "list", *db])
    assert "bob\t" in listed.output and f"{USER}\t" in listed.output and "1 sessions" in listed.output
    assert admin_client.get("/admin/studies.json").status_code == 200
    revoked = runner.invoke(cli.main, ["admin", "revoke", "--all", *db])
    assert revoked.exit_code == 0 and "1 sessions ended" in revoked.output
    assert admin_client.get("/admin/studies.json").status_code == 401
    # passwd changes the password (policy applies) and the new one logs in.
    r = runner.invoke(cli.main, ["admin", "passwd", USER, "--password-stdin", *db], input="quartz meadow lantern ox\n")
    assert r.exit_code == 0, r.output
    assert login(admin_client, password="quartz meadow lantern ox").status_code == 303


def test_brute_force_is_throttled_per_user_and_per_address(client, session, caplog):
    ensure_admin(session, USER, PASSWORD)
    caplog.set_level(logging.WARNING, logger="sfgeval.login")
    statuses = [login(client, password=f"wrong-{i}").status_code for i in range(6)]
    assert statuses == [401] * 5 + [429]
    r = login(client)  # the right password, too soon: still refused
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "failed admin login for 'alice'" in caplog.text and "throttled" in caplog.text
    # Per address: many user names from one address run into the address limit.
    statuses = [login(client, user=f"user{i}", password="x").status_code for i in range(20)]
    assert statuses[-1] == 429 and 401 in statuses


def _raw_post(app, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """POST `path` straight into the ASGI app with an endless chunked body; returns (status,
    body chunks the app read)."""
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path.split("?")[0], "raw_path": path.split("?")[0].encode(), "query_string": path.partition("?")[2].encode(),
        "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), read


def test_uploads_are_refused_before_their_body_is_read(admin_client):
    app = admin_client.app
    multipart = {"content-type": "multipart/form-data; boundary=xyz", "transfer-encoding": "chunked"}
    # No session at all, then a session without the token in header/query: nothing is read.
    assert _raw_post(app, "/admin/pair-sets/import", multipart) == (403, 0)
    cookie = f"admin_session={admin_client.cookies.get('admin_session')}"
    assert _raw_post(app, "/admin/pair-sets/import", {**multipart, "cookie": cookie}) == (403, 0)
    # A visitor's session (login page only) with its valid CSRF token: not an admin, nothing read.
    from fastapi.testclient import TestClient

    with TestClient(app) as visitor:
        csrf = csrf_of(visitor.get("/admin/login").text)
        cookie = f"admin_session={visitor.cookies.get('admin_session')}"
        status, read = _raw_post(app, f"/admin/pair-sets/import?csrf_token={csrf}", {**multipart, "cookie": cookie,
                                                                                     "accept": "application/json"})
        assert status == 401 and read == 0
    # Bodies over the cap: 413 from the Content-Length alone.
    status, read = _raw_post(app, "/admin/new-study", {"content-type": "application/x-www-form-urlencoded",
                                                       "content-length": str(10 << 20)})
    assert status == 413 and read == 0
