"""Browser test (Chromium through Playwright): a participant completes a study with the keyboard."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.store.models import Participant, Rating

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url):
    """One backend is enough for the browser path; test_api.py covers PostgreSQL."""
    return sqlite_url


def test_participant_completes_a_study_with_the_keyboard(chromium, live_server, session, study_factory):
    # Five pairs: the gold check takes a pair never shown to the participant (issue 22).
    study = study_factory(n_pairs=5, pairs_per_participant=3, gold_rate=0.34, repeats=1, practice_trials=1,
                          completion_code="KB-DONE-9", gold_instruction="Check: pick the sharper image.")
    page = chromium.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server}/s/{study.slug}?PROLIFIC_PID=browser-1&STUDY_ID=st&SESSION_ID=se")
    # Consent with the keyboard: tick the box with Space, move to Start, press Enter.
    page.focus("#consent")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/run")
    total = 6  # practice + 3 main + 1 gold + 1 repeat
    # The practice trial is labelled as such and not counted in the main progress.
    instructed = []
    shown = ["Practice 1 of 1"] + [f"Pair {n} of 5" for n in range(1, 6)]
    for i in range(total):
        page.wait_for_function(
            "text => document.getElementById('progress-text').textContent === text"
            " && !document.querySelector('.answer').disabled",
            arg=shown[i],
        )
        assert page.is_visible("#practice") == (i == 0)
        if page.is_visible("#instruction"):
            instructed.append(page.text_content("#instruction"))
        if i == 1:
            # Keyboard only: Tab reaches the left image, Enter opens the compare view, + zooms,
            # Escape closes it and gives the focus back.
            page.focus("#left-open")
            page.keyboard.press("Enter")
            assert page.is_visible("#viewer")
            page.keyboard.press("+")
            page.keyboard.press("Escape")
            assert not page.is_visible("#viewer")
            assert page.evaluate("document.activeElement.id") == "left-open"
            # Focus is visible: a thick outline on the focused control.
            assert page.evaluate("getComputedStyle(document.activeElement).outlineWidth") == "3px"
        page.keyboard.press(str(1 + i % 5))
    page.wait_for_url("**/done")
    # On every trial but practice: on the gold trial only, it would mark it (issue 22).
    assert instructed == ["Check: pick the sharper image."] * 5
    assert page.text_content("#completion-code").strip() == "KB-DONE-9"
    session.expire_all()
    participant = session.scalar(select(Participant))
    assert participant.external_ids == {"PROLIFIC_PID": "browser-1", "STUDY_ID": "st", "SESSION_ID": "se"}
    assert session.scalar(select(func.count(Rating.id))) == total
    assert sorted(r.choice for r in session.scalars(select(Rating))) == sorted(1 + i % 5 for i in range(total))


def test_trial_page_works_on_a_phone_and_images_open_large(chromium, live_server, study_factory):
    """The phone layout stacks the images at full width; a tap opens both large; the next pair
    is preloaded."""
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    image_requests = []
    page.on("request", lambda req: image_requests.append(req.url) if "/i/" in req.url else None)
    page.goto(f"{live_server}/s/{study.slug}")
    page.check("#consent")
    page.click("#start")
    page.wait_for_function("!document.querySelector('.answer').disabled")
    # Nothing wider than the screen; the two images stacked, each as wide as the limit allows.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    left, right = page.locator("#left").bounding_box(), page.locator("#right").bounding_box()
    assert left["y"] + left["height"] <= right["y"] and left["width"] == right["width"] == 256  # 64 px x 4
    # The next pair is preloaded while the first is shown: four images requested, two on screen.
    shown = set(page.evaluate("[document.getElementById('left').src, document.getElementById('right').src]"))
    for _ in range(100):
        if len(set(image_requests)) >= 4:
            break
        page.wait_for_timeout(50)
    preloaded = set(image_requests) - shown
    assert len(preloaded) == 2
    page.tap("#left-open")
    assert page.is_visible("#viewer")
    assert page.evaluate("document.getElementById('v-left').src === document.getElementById('left').src")
    page.tap("#v-close")
    assert not page.is_visible("#viewer")
    page.tap(".answer[data-choice='4']")
    page.wait_for_function("document.getElementById('progress-text').textContent === 'Pair 2 of 2'")
    now_shown = set(page.evaluate("[document.getElementById('left').src, document.getElementById('right').src]"))
    assert now_shown == preloaded
    context.close()


def test_each_new_trial_opens_at_its_top_on_a_small_phone(chromium, live_server, study_factory):
    """On a short phone screen the answers sit below the fold; after answering down there, the
    next trial opens scrolled to its top (it used to open about 270 px down)."""
    study = study_factory(n_pairs=3, pairs_per_participant=3)
    context = chromium.new_context(viewport={"width": 360, "height": 420}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server}/s/{study.slug}")
    page.check("#consent")
    page.click("#start")
    for n in (2, 3):
        page.wait_for_function("!document.querySelector('.answer').disabled")
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        assert page.evaluate("window.scrollY") > 100  # the page is longer than the screen
        page.tap(".answer[data-choice='2']")
        page.wait_for_function(f"document.getElementById('progress-text').textContent === 'Pair {n} of 3'")
        page.wait_for_function("!document.querySelector('.answer').disabled")
        assert page.evaluate("window.scrollY") == 0
    context.close()
