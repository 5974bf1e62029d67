"""Browser tests of the evaluator's view (Chromium through Playwright), desktop and phone sizes.

Each mode (side by side, compare view with zoom, flicker, compare view switched off) is tried at
1366x768 and 390x844; every test saves a screenshot under test-artifacts/ and checks the page with
axe-core (WCAG 2 A/AA).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Rating
from tests.browser_helpers import axe_violations, box, open_page, screenshot, start, wait_unlocked

pytestmark = pytest.mark.browser
SIZES = ("desktop", "phone")


@pytest.fixture
def db_url(sqlite_url):
    """One backend is enough for the browser path; test_api.py covers PostgreSQL."""
    return sqlite_url


def _ratings(session):
    session.expire_all()
    ratings = session.scalars(select(Rating).order_by(Rating.id)).all()
    session.rollback()
    return ratings


@pytest.mark.parametrize("size", SIZES)
def test_side_by_side_fills_the_screen_without_passing_the_upscale_limit(size, chromium, live_server, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, max_upscale=16)
    context, page = open_page(chromium, size)
    start(page, live_server, study.slug)
    left, right, answers = box(page, "#left"), box(page, "#right"), box(page, "#answers")
    width, height = page.evaluate("[window.innerWidth, window.innerHeight]")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # The answers are on screen without scrolling, clear of the bottom edge.
    assert answers["y"] + answers["height"] <= height - 4
    labels = page.locator(".answer span")
    if size == "desktop":
        assert abs(left["y"] - right["y"]) < 2 and left["x"] + left["width"] <= right["x"]
        # As large as the screen allows: height-bound here (64 px images, limit 16x = 1024 px).
        assert left["height"] > 0.5 * height and left["y"] + left["height"] <= answers["y"]
        # No answer label wraps ("Right slightly better" used to).
        assert all(len(labels.nth(i).evaluate("e => Array.from(e.getClientRects())")) == 1 for i in range(5))
        assert page.is_visible(".answer kbd")
    else:
        # Stacked at full width; answers in a bar at the bottom, no keyboard hints on touch.
        assert left["y"] + left["height"] <= right["y"] and left["width"] >= width - 24
        assert answers["y"] > height / 2
        assert not page.is_visible(".answer kbd") and not page.is_visible(".key-hint")
    assert page.evaluate("getComputedStyle(document.getElementById('left')).imageRendering") == "pixelated"
    assert axe_violations(page) == []
    screenshot(page, f"participant-{size}-side-by-side")
    page.click(".answer[data-choice='4']")
    wait_unlocked(page, "Pair 2 of 2")
    assert page.errors == []
    context.close()


@pytest.mark.parametrize("size", SIZES)
def test_images_are_never_enlarged_past_the_study_limit(size, chromium, live_server, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, max_upscale=2)
    context, page = open_page(chromium, size)
    start(page, live_server, study.slug)
    assert box(page, "#left")["width"] == pytest.approx(128, abs=1)  # 64 px natural, at most 2x
    context.close()
