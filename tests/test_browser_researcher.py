"""Browser tests (Chromium): the pair explorer, the participants page and the study life cycle."""

from __future__ import annotations

import pytest

from app.accounts.admins import ensure_admin
from app.cli import SHIPPED_DEMO_PAIRS
from app.studies.importer import import_pair_set
from app.studies.lifecycle import participant_links
from tests.test_admin import add_answers

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url):
    """One backend is enough for the browser path; test_researcher_pages.py covers PostgreSQL."""
    return sqlite_url


@pytest.fixture
def page(chromium, live_server, session, study_factory):
    ensure_admin(session, "admin", "pw-browser")
    pair_set = import_pair_set(session, SHIPPED_DEMO_PAIRS)
    session.commit()
    study = study_factory([pair_set.id], slug="lab", ratings_per_pair=2, completion_code="LAB-1")
    add_answers(session, study, [(0, i, "main", 1 + i % 5, 900) for i in range(6)] + [(1, 0, "main", 2, 900)])
    session.rollback()
    context = chromium.new_context(permissions=["clipboard-read", "clipboard-write"])
    p = context.new_page()
    p.set_default_timeout(15_000)
    p.goto(f"{live_server}/admin/login")
    p.get_by_label("User name").fill("admin")
    p.get_by_label("Password").fill("pw-browser")
    p.get_by_role("button", name="Log in").click()
    p.get_by_role("heading", name="Studies").wait_for()
    yield p
    context.close()


def test_pair_explorer_filters_and_shows_the_token_map(page, live_server):
    page.goto(f"{live_server}/admin/studies/lab")
    page.get_by_role("link", name="Pair explorer").click()
    assert page.locator("#pairs tbody tr").count() == 6
    page.get_by_label("Stratum").select_option("animals")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**stratum=animals**")
    assert page.locator("#pairs tbody tr").count() == 2
    # Thumbnails load (admin-only image URLs).
    assert page.locator("#pairs img.thumb").first.evaluate("img => img.complete && img.naturalWidth > 0")
    page.locator("#pairs td.prompt a").first.click()
    page.get_by_text("SFG token map").wait_for()
    assert page.locator("#legend li").count() >= 1
    overlay = page.locator("#map-overlay")
    assert overlay.is_hidden()
    page.get_by_label("Show the token map over").check()
    assert overlay.is_visible()
    page.get_by_label("Show the token map over").uncheck()
    assert overlay.is_hidden()


def test_participants_page_lists_people_with_decisions(page, live_server):
    page.goto(f"{live_server}/admin/studies/lab")
    page.get_by_role("link", name="Participants").click()
    rows = page.locator("#participants tbody tr")
    assert rows.count() == 2
    # Two people, one shared pair: too little to tell that the answers follow the images, so the
    # suggestion is REVIEW, said at the top and in the row.
    assert "REVIEW" in rows.first.locator("td.decision").inner_text()
    assert "need your decision" in page.locator("#review-count").inner_text()
    with page.expect_download() as download:
        page.get_by_role("link", name="Decisions CSV").click()
    assert download.value.suggested_filename == "lab-decisions.csv"
    # The researcher's own decision, with a reason, replaces the suggestion.
    first = rows.first.get_attribute("data-participant")
    page.get_by_label(f"decision for participant {first}").select_option("REJECT")
    page.get_by_label(f"reason for participant {first}").fill("copied answers")
    page.locator(f"#p{first} button").click()
    page.get_by_text("decision saved").wait_for()
    cell = page.locator(f"#p{first} td.decision").inner_text()
    assert "REJECT" in cell and "copied answers" in cell and "suggested REVIEW" in cell
    # Usable: the decision control is wide enough to read and click, and rows stay one or two lines.
    assert page.get_by_label(f"decision for participant {first}").bounding_box()["width"] >= 100
    assert page.get_by_label(f"reason for participant {first}").bounding_box()["width"] >= 100
    for i in range(rows.count()):
        assert rows.nth(i).bounding_box()["height"] <= 90, i


def test_study_page_copies_the_prolific_link_and_downloads_report_and_figure(page, live_server):
    page.goto(f"{live_server}/admin/studies/lab")
    expected = participant_links(live_server, "lab")["prolific"]
    assert page.locator("#link-prolific").input_value() == expected
    page.locator('button[data-copy="link-prolific"]').click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == expected
    with page.expect_download() as download:
        page.get_by_role("link", name="Download report").click()
    assert download.value.suggested_filename == "lab-report.zip"
    page.get_by_role("link", name="Figure").click()
    page.get_by_label("Top pairs per stratum").fill("1")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download PDF").click()
    assert download.value.suggested_filename == "lab-pairs.pdf"
