"""Browser tests of the study flow around the trials: the answer countdown, the consent form after
Back, the completion code's copy button, a full study, the phone in landscape."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from app.store.models import Rating
from tests.browser_helpers import axe_violations, box, open_page, screenshot, start

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url):
    return sqlite_url


def test_answers_unlock_after_the_minimum_time_with_a_countdown(chromium, live_server, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, min_response_ms=1500, fast_answers="block",
                          max_upscale=16)
    context, page = open_page(chromium, "desktop")
    page.goto(f"{live_server}/s/{study.slug}")
    page.check("#consent")
    page.click("#start")
    page.wait_for_function("document.getElementById('lock').textContent.startsWith('Answers open in')")
    t0 = time.monotonic()
    assert page.is_disabled(".answer[data-choice='1']")
    # Images as large as the screen allows, the countdown and the answers all on one screen.
    answers = page.locator("#answers").bounding_box()
    assert answers["y"] + answers["height"] <= 768 - 4 and page.locator("#left").bounding_box()["height"] > 380
    screenshot(page, "participant-desktop-countdown")
    page.keyboard.press("1")  # too early: nothing happens
    page.wait_for_function("!document.querySelector('.answer').disabled")
    assert time.monotonic() - t0 > 0.9 and not page.is_visible("#lock")
    assert page.locator("#answers").bounding_box() == answers  # nothing moved when the wait ended
    session.expire_all()
    assert session.scalars(select(Rating)).all() == []
    session.rollback()
    page.keyboard.press("1")
    page.wait_for_function("document.getElementById('progress-text').textContent === 'Pair 2 of 2'")
    session.expire_all()
    (rating,) = session.scalars(select(Rating)).all()
    assert rating.unlock_ms >= 1500 and rating.response_ms >= 1500 and not rating.too_fast
    session.rollback()
    context.close()


def test_back_after_a_consent_error_shows_a_clean_form(chromium, live_server, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    context, page = open_page(chromium, "desktop")
    page.goto(f"{live_server}/s/{study.slug}?PROLIFIC_PID=b1")
    page.click("#start")  # without ticking the box
    assert page.is_visible("#consent-error")
    assert "error=" not in page.url and "PROLIFIC_PID=b1" in page.url
    assert axe_violations(page) == []
    screenshot(page, "participant-desktop-consent-error")
    page.check("#consent")
    page.goto(f"{live_server}/")
    assert "link you were given" in page.text_content("#front")  # the neutral front page
    assert page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200
    page.go_back()
    assert not page.is_checked("#consent") and page.locator("#consent-error").count() == 0
    page.check("#consent")
    page.click("#start")
    page.wait_for_url("**/run")
    context.close()


def test_completion_code_has_a_copy_button(chromium, live_server, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=1, completion_code="COPY-ME-7")
    context, page = open_page(chromium, "phone")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    start(page, live_server, study.slug)
    page.tap(".answer[data-choice='3']")
    page.wait_for_url("**/done")
    page.tap("#copy-code")
    page.wait_for_function("document.getElementById('copy-status').textContent === 'Copied.'")
    assert page.evaluate("navigator.clipboard.readText()") == "COPY-ME-7"
    assert axe_violations(page) == []
    screenshot(page, "participant-phone-done")
    context.close()


def test_a_full_study_says_so_before_consent(chromium, live_server, client, study_factory):
    study = study_factory(n_pairs=1, pairs_per_participant=1, ratings_per_pair=1)
    token = client.post(f"/api/studies/{study.slug}/participants").json()["participant"]
    trial = client.get(f"/api/participants/{token}/next").json()["trial"]
    # Answered, the only slot is taken (a sign-up's hold alone does not fill a study, issue 22).
    client.post(f"/api/trials/{trial}/answer", json={"choice": 3, "request_id": "only-slot"},
                headers={"X-Participant": token})
    context, page = open_page(chromium, "phone")
    page.goto(f"{live_server}/s/{study.slug}")
    assert page.is_visible("#no-work") and page.locator("#consent").count() == 0
    assert axe_violations(page) == []
    screenshot(page, "participant-phone-full-before-consent")
    context.close()


def test_phone_in_landscape_shows_both_images_and_the_answers(chromium, live_server, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    context, page = open_page(chromium, "phone-landscape")
    start(page, live_server, study.slug)
    left, right = box(page, "#left"), box(page, "#right")
    assert abs(left["y"] - right["y"]) < 2 and left["x"] + left["width"] <= right["x"]
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.tap(".answer[data-choice='5']")
    page.wait_for_function("document.getElementById('progress-text').textContent === 'Pair 2 of 2'")
    screenshot(page, "participant-phone-landscape")
    context.close()
