"""Browser tests of the evaluator's view (Chromium through Playwright), desktop and phone sizes.

Each mode (side by side, compare view with zoom, flicker, compare view switched off) is tried at
1366x768 and 390x844; every test saves a screenshot under test-artifacts/ and checks the page with
axe-core (WCAG 2 A/AA).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.store.models import Rating
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


def _transforms(page) -> list[str]:
    return page.evaluate("['v-left', 'v-right'].map(id => document.getElementById(id).style.transform)")


def _zoom(page) -> float:
    return float(page.evaluate("document.getElementById('v-left').style.transform").split("scale(")[1].rstrip(")"))


def _pinch(page, pane: dict) -> None:
    """Two fingers spreading apart over `pane` (raw touch events through the DevTools protocol)."""
    cdp = page.context.new_cdp_session(page)
    cx, cy = pane["x"] + pane["width"] / 2, pane["y"] + pane["height"] / 2

    def points(spread):
        return [{"x": cx - spread, "y": cy, "id": 1}, {"x": cx + spread, "y": cy, "id": 2}]

    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(20)})
    for spread in (40, 60, 80):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points(spread)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


@pytest.mark.parametrize("size", SIZES)
def test_compare_view_zooms_both_images_together_and_answer_keys_answer_nothing(
        size, chromium, live_server, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    context, page = open_page(chromium, size)
    start(page, live_server, study.slug)
    trial_images = page.evaluate("[document.getElementById('left').src, document.getElementById('right').src]")
    if size == "desktop":
        page.click("#left-open")
        assert page.is_visible("#viewer")
        pane = box(page, "#v-pane-left")
        page.mouse.move(pane["x"] + pane["width"] / 2, pane["y"] + pane["height"] / 2)
        page.mouse.wheel(0, -400)
        page.wait_for_function("document.getElementById('v-left').style.transform.includes('scale(2')")
        page.keyboard.press("+")
        # Drag to pan: both images move together.
        page.mouse.down()
        page.mouse.move(pane["x"] + pane["width"] / 2 - 60, pane["y"] + pane["height"] / 2 - 30)
        page.mouse.up()
    else:
        page.tap("#left-open")
        assert page.is_visible("#viewer")
        pane = box(page, "#v-pane-left")
        page.tap("#v-pane-left")
        page.tap("#v-pane-left")  # double-tap: 2.5x
        page.wait_for_function("document.getElementById('v-left').style.transform.includes('scale(2.5')")
        _pinch(page, box(page, "#v-pane-right"))
        page.wait_for_function("parseFloat(document.getElementById('v-left').style.transform.split('scale(')[1]) > 2.6")
    left_t, right_t = _transforms(page)
    assert left_t == right_t and _zoom(page) > 2
    assert page.evaluate("[document.getElementById('v-left').src, document.getElementById('v-right').src]") == trial_images
    assert page.evaluate("document.getElementById('v-left').style.imageRendering") == "pixelated"
    assert axe_violations(page) == []
    screenshot(page, f"participant-{size}-zoom")
    if size == "desktop":
        # The keyboard stays inside the open view (a modal dialog).
        for _ in range(12):
            page.keyboard.press("Tab")
            assert page.evaluate("document.getElementById('viewer').contains(document.activeElement)")
        page.focus("#v-stage")
        # While the compare view is open an answer key only closes it: nothing is answered.
        page.keyboard.press("2")
        assert not page.is_visible("#viewer") and page.is_visible("#note")
        page.wait_for_timeout(300)
        assert _ratings(session) == [] and page.text_content("#progress-text") == "Pair 1 of 2"
        page.keyboard.press("2")
    else:
        page.tap("#v-close")
        assert not page.is_visible("#viewer")
        page.tap(".answer[data-choice='2']")
    wait_unlocked(page, "Pair 2 of 2")
    (rating,) = _ratings(session)
    assert rating.choice == 2 and rating.used_zoom is True and rating.used_flicker is False
    assert rating.max_zoom > 2 and rating.compare_view_ms > 0 and rating.flicker_ms == 0 and rating.unlock_ms >= 0
    # The view opens fresh on the next pair, showing the next pair's images.
    page.keyboard.press("c") if size == "desktop" else page.tap("#right-open")
    assert _zoom(page) == 1
    assert page.evaluate("document.getElementById('v-left').src === document.getElementById('left').src")
    assert page.evaluate("document.getElementById('v-left').src") not in trial_images
    assert page.errors == []
    context.close()


def _visible_panes(page) -> list[str]:
    return page.evaluate("Array.from(document.querySelectorAll('.pane:not(.off)')).map(p => p.id)")


@pytest.mark.parametrize("size", SIZES)
def test_flicker_shows_both_images_in_the_same_place_in_turn(size, chromium, live_server, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    context, page = open_page(chromium, size)
    start(page, live_server, study.slug)
    if size == "desktop":
        page.keyboard.press("f")
    else:
        page.tap("#open-flicker")
    assert page.is_visible("#viewer") and page.get_attribute("#v-mode", "aria-pressed") == "true"
    a, b = box(page, "#v-pane-left"), box(page, "#v-pane-right")
    assert (a["x"], a["y"], a["width"]) == (b["x"], b["y"], b["width"])  # the same place
    seen = set()
    for _ in range(30):
        shown = _visible_panes(page)
        assert len(shown) == 1
        seen.add(shown[0])
        page.wait_for_timeout(50)
    assert seen == {"v-pane-left", "v-pane-right"}
    assert axe_violations(page) == []
    screenshot(page, f"participant-{size}-flicker")
    if size == "desktop":
        page.keyboard.press("]")  # faster
        assert page.input_value("#v-rate") == "3"
        page.keyboard.press("f")  # back to side by side
        assert len(_visible_panes(page)) == 2
        page.keyboard.down(" ")  # hold Space: flicker while held
        page.wait_for_timeout(200)
        assert page.get_attribute("#v-mode", "aria-pressed") == "true"
        page.keyboard.up(" ")
        assert page.get_attribute("#v-mode", "aria-pressed") == "false"
        page.keyboard.press("Escape")
        assert not page.is_visible("#viewer")
        page.keyboard.press("5")
    else:
        page.fill("#v-rate", "6")
        assert page.text_content("#v-rate-out") == "6 per second"
        page.tap("#v-close")
        page.tap(".answer[data-choice='5']")
    wait_unlocked(page, "Pair 2 of 2")
    (rating,) = _ratings(session)
    assert rating.used_flicker is True and rating.flicker_ms >= 1000 and rating.used_zoom is False
    assert page.errors == []
    context.close()


@pytest.mark.parametrize("size", SIZES)
def test_compare_view_can_be_switched_off_per_study(size, chromium, live_server, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, compare_tools=False, max_upscale=2)
    context, page = open_page(chromium, size)
    start(page, live_server, study.slug)
    # Never enlarged past the study's limit, however much room there is: 64 px natural, at most 2x.
    assert box(page, "#left")["width"] == pytest.approx(128, abs=1)
    assert page.locator("#viewer, #open-compare, #open-flicker, #left-open").count() == 0
    page.click("#left")
    page.keyboard.press("c")
    page.keyboard.press("f")
    assert axe_violations(page) == []
    screenshot(page, f"participant-{size}-no-compare-view")
    page.click(".answer[data-choice='3']")
    wait_unlocked(page, "Pair 2 of 2")
    (rating,) = _ratings(session)
    assert rating.choice == 3 and rating.used_zoom is False and rating.used_flicker is False
    assert rating.compare_view_ms == 0
    assert page.errors == []
    context.close()
