"""Browser test (Chromium through Playwright): a two-question trial (issue 24) answered by keyboard
on desktop and phone, by tap on a phone, with the compare view still working and axe-core clean."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.store.models import Rating
from app.studies.config import QUESTION_PRESETS
from tests.browser_helpers import (
    axe_violations,
    open_page,
    screenshot,
    start,
    wait_unlocked,
)

pytestmark = pytest.mark.browser
TWO = QUESTION_PRESETS["drawbench"]


@pytest.fixture
def db_url(sqlite_url):
    return sqlite_url


def _ratings(session):
    session.expire_all()
    rows = session.execute(select(Rating.trial_id, Rating.criterion, Rating.choice).order_by(Rating.id)).all()
    session.rollback()
    return rows


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_two_questions_answered_by_keyboard(chromium, live_server, session, study_factory, size):
    study = study_factory(n_pairs=3, pairs_per_participant=2, questions=TWO["questions"], primary=TWO["primary"])
    slug = study.slug
    session.rollback()
    context, page = open_page(chromium, size)
    start(page, live_server, slug)
    assert page.locator(".criterion").count() == 2
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # Both questions sit under the pair, in order.
    pair, q1, q2 = (page.locator(s).bounding_box() for s in ("#pair", ".criterion >> nth=0", ".criterion >> nth=1"))
    assert pair["y"] + pair["height"] <= q1["y"] < q2["y"]
    assert page.is_disabled("#send")
    screenshot(page, f"criteria-{size}-unanswered")
    assert axe_violations(page) == []
    # Key 2 answers the first question and moves focus to the second; Enter does nothing yet.
    page.keyboard.press("2")
    assert page.get_attribute(".criterion >> nth=0 >> .answer[data-choice='2']", "aria-pressed") == "true"
    assert page.evaluate("document.activeElement.closest('.criterion').dataset.key") == "quality"
    page.keyboard.press("Enter")
    assert _ratings(session) == []
    assert page.is_disabled("#send")
    page.keyboard.press("4")  # the second question; focus moves to Next
    assert page.evaluate("document.activeElement.id") == "send" and page.is_enabled("#send")
    if size == "desktop":
        # The compare view still works between answering and sending: C opens it, Escape closes it.
        page.keyboard.press("c")
        assert page.is_visible("#viewer")
        page.keyboard.press("Escape")
        assert not page.is_visible("#viewer")
    screenshot(page, f"criteria-{size}-answered")
    assert axe_violations(page) == []
    page.keyboard.press("Enter")
    wait_unlocked(page, "Pair 2 of 2")
    # The second trial starts with nothing picked.
    assert page.locator(".answer[aria-pressed='true']").count() == 0
    if size == "phone":
        # The compare view opens with a tap and closes again; nothing is picked meanwhile.
        page.tap("#left-open")
        assert page.is_visible("#viewer")
        page.tap("#v-close")
        assert not page.is_visible("#viewer")
        # Touch: tap one answer per question, then Next.
        page.tap(".criterion >> nth=1 >> .answer[data-choice='5']")
        page.tap(".criterion >> nth=0 >> .answer[data-choice='1']")
        page.tap("#send")
    else:
        # Mouse: change one's mind on the first question, then Next.
        page.click(".criterion >> nth=0 >> .answer[data-choice='3']")
        page.click(".criterion >> nth=0 >> .answer[data-choice='1']")
        page.click(".criterion >> nth=1 >> .answer[data-choice='5']")
        page.click("#send")
    page.wait_for_url("**/done")
    rows = _ratings(session)
    assert [(c, ch) for _, c, ch in rows] == [("alignment", 2), ("quality", 4), ("alignment", 1), ("quality", 5)]
    assert rows[0][0] == rows[1][0] != rows[2][0] == rows[3][0]
    assert page.errors == []
    context.close()
