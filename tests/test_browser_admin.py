"""Browser test (Chromium through Playwright): an admin logs in, creates a study and opens it."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from app.accounts.admins import ensure_admin
from app.store.models import Study

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url):
    """One backend is enough for the browser path; test_admin.py covers PostgreSQL."""
    return sqlite_url


@pytest.fixture
def browser_page(chromium):
    page = chromium.new_page()
    page.set_default_timeout(15_000)
    yield page
    page.close()


def test_admin_logs_in_creates_and_opens_a_study(browser_page, live_server, session, app, make_pair_set, tmp_path):
    from app.studies.importer import import_pair_set

    ensure_admin(session, "admin", "pw-for-browser-test")
    pair_set = import_pair_set(session, make_pair_set(tmp_path / "pairs", 3))
    session.commit()
    page = browser_page

    page.goto(f"{live_server}/admin/studies")
    assert "/admin/login" in page.url
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Wrong user name or password").wait_for()
    page.get_by_label("Password").fill("pw-for-browser-test")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Studies").wait_for()

    page.get_by_role("link", name="New study").click()
    page.get_by_label("Title", exact=True).fill("Browser study")
    page.get_by_label("Slug").fill("browser-study")
    page.get_by_label("Target ratings per pair").fill("4")
    page.locator(f"#ps-{pair_set.id}").check()
    page.get_by_role("button", name="Create study").click()
    page.get_by_text("Study 'browser-study' created").wait_for()
    assert page.url.endswith("/admin/studies/browser-study")
    assert page.locator("h1 .badge").inner_text() == "draft"

    page.get_by_role("button", name="Open").click()
    page.get_by_text("The study is now open").wait_for()
    assert page.locator("h1 .badge").inner_text() == "open"

    # The progress page updates itself (5 s poll of its JSON twin) when a participant answers.
    page.get_by_role("link", name="Live progress").click()
    page.get_by_text("participants started").wait_for()
    ratings = page.locator('[data-k="ratings"]')
    assert ratings.inner_text() == "0"
    token = httpx.post(f"{live_server}/api/studies/browser-study/participants", json={}).json()["participant"]
    trial = httpx.get(f"{live_server}/api/participants/{token}/next").json()["trial"]
    r = httpx.post(f"{live_server}/api/trials/{trial}/answer", json={"choice": 2, "request_id": "r1"},
                   headers={"X-Participant": token})
    assert r.status_code == 200
    page.wait_for_function("document.querySelector('[data-k=\"ratings\"]').textContent === '1'", timeout=12_000)
    assert page.locator('[data-k="participants_started"]').inner_text() == "1"

    with app.state.sessionmaker() as s:
        study = s.scalar(select(Study).where(Study.slug == "browser-study"))
        assert (study.state, study.ratings_per_pair) == ("open", 4)
        assert [c.pair_set_id for c in study.comparisons] == [pair_set.id]
