"""The evaluator's view, server side: per-study settings round trip (config file, admin form,
export), the compare log, answer pacing (block / warn / flag and the "returned" page), spaced
repeats, practice progress, gold instructions, capacity before consent, the front page, favicon,
and the report's summary of how people compared."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from types import SimpleNamespace

import pytest
import yaml
from sqlalchemy import select

from app.assignment import create_participant, make_plan, next_trial, submit_answer
from app.studies.comparing import COMPARE_COLUMNS, compare_summary
from app.reporting.export import COLUMNS, EXPORT_COLUMNS, rating_rows, rows_to_csv
from app.store.models import Rating, Study, Trial, utcnow
from app.assignment.repeats import repeat_gap
from app.studies.config import parse_config, study_config
from tests.test_admin import admin_client, create_via_form, csrf_of, pair_set_id, study_form  # noqa: F401
from tests.test_api import answer, join, next_

VIEW = {"compare_tools": False, "max_upscale": 2.5, "fast_answers": "block", "fast_share_limit": 0.25,
        "returned_message": "Please return it.", "gold_instruction": "Pick the sharper image."}
COMPARED = {"used_zoom": True, "used_flicker": False, "max_zoom": 3.2, "compare_view_ms": 4100, "flicker_ms": 0,
            "unlock_ms": 950}


def test_view_settings_round_trip_through_config_file_and_defaults(session, study_factory):
    study = study_factory(n_pairs=2, **VIEW)
    config = study_config(study)
    assert {k: config[k] for k in VIEW} == VIEW
    again = parse_config(yaml.safe_load(yaml.safe_dump(config)))
    assert {k: getattr(again, k) for k in VIEW} == VIEW
    defaults = parse_config({"title": "t", "pair_sets": [1]})
    assert (defaults.compare_tools, defaults.max_upscale, defaults.fast_answers, defaults.fast_share_limit) == (
        True, 4.0, "warn", 0.5)
    for bad in ({"fast_answers": "maybe"}, {"max_upscale": 0.5}, {"fast_share_limit": 2}):
        with pytest.raises(ValueError):
            parse_config({"title": "t", "pair_sets": [1], **bad})


def test_view_settings_round_trip_through_the_admin_form(admin_client, session, pair_set_id):  # noqa: F811
    form = {"max_upscale": "2.5", "fast_answers": "block", "fast_share_limit": "0.25",
            "returned_message": "Please return it.", "gold_instruction": "Pick the sharper image."}
    slug = create_via_form(admin_client, pair_set_id, **form).headers["location"].rsplit("/", 1)[1]
    config = admin_client.get(f"/admin/studies/{slug}/config.json").json()
    assert {k: config[k] for k in VIEW} == VIEW  # no compare_tools box ticked: off
    edit = admin_client.get(f"/admin/studies/{slug}/edit").text
    assert 'name="max_upscale"' in edit and 'value="2.5"' in edit and "Pick the sharper image." in edit
    assert '<option value="block" selected>' in edit
    data = study_form([pair_set_id], compare_tools="on", fast_share_limit="", csrf_token=csrf_of(edit))
    assert admin_client.post(f"/admin/studies/{slug}/edit", data=data, follow_redirects=False).status_code == 303
    config = admin_client.get(f"/admin/studies/{slug}/config.json").json()
    assert config["compare_tools"] is True and config["fast_share_limit"] is None
    assert config["fast_answers"] == "block" and config["max_upscale"] == 2.5  # not sent: unchanged
    bad = study_form([pair_set_id], fast_answers="sometimes", csrf_token=csrf_of(edit))
    r = admin_client.post(f"/admin/studies/{slug}/edit", data=bad)
    assert r.status_code == 422 and "fast_answers" in r.text


def test_compare_log_is_stored_and_exported_as_new_last_columns(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    token = join(client, study.slug)
    t = next_(client, token).json()
    r = client.post(f"/api/trials/{t['trial']}/answer", headers={"X-Participant": token},
                    json={"choice": 4, "request_id": "r1", "compared": COMPARED})
    assert r.status_code == 200 and r.json()["too_fast"] is False
    t = next_(client, token).json()
    for bad in ({"used_zoom": True, "secret": 1}, {"max_zoom": 0.5}, {"flicker_ms": -1}):
        r = client.post(f"/api/trials/{t['trial']}/answer", headers={"X-Participant": token},
                        json={"choice": 4, "request_id": "r2", "compared": bad})
        assert r.status_code == 422
    assert answer(client, token, t["trial"], 2).status_code == 200  # the log is optional
    rows = rating_rows(session, study)
    assert list(COLUMNS[: len(EXPORT_COLUMNS)]) == list(EXPORT_COLUMNS)
    assert list(COLUMNS[-len(COMPARE_COLUMNS):]) == list(COMPARE_COLUMNS)
    assert {k: rows[0][k] for k in COMPARE_COLUMNS} == COMPARED
    assert all(rows[1][k] is None for k in COMPARE_COLUMNS)
    parsed = list(csv.DictReader(io.StringIO(rows_to_csv(rows))))
    assert parsed[0]["used_zoom"] == "true" and parsed[0]["max_zoom"] == "3.2" and parsed[1]["used_zoom"] == ""


def _finish(client, token):
    statuses = []
    while not (body := next_(client, token).json()).get("done"):
        statuses.append(answer(client, token, body["trial"], 2).status_code)
        if statuses[-1] != 200:
            break
    return statuses, body


def test_block_refuses_answers_faster_than_the_minimum(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, min_response_ms=60_000, fast_answers="block")
    token = join(client, study.slug)
    t = next_(client, token).json()
    r = answer(client, token, t["trial"], 2)
    assert r.status_code == 425 and r.json()["reason"] == "too_fast" and "60000 ms" in r.json()["detail"]
    assert session.scalars(select(Rating)).all() == []


def test_warn_stores_fast_answers_and_withholds_the_code_past_the_limit(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, min_response_ms=60_000, fast_answers="warn",
                          fast_share_limit=0.5, completion_code="PAID-1", returned_message="Sorry: too quick.")
    client.cookies.clear()
    started = client.post(f"/s/{study.slug}/start", data={"consent": "yes"})
    token = started.text.split('data-token="')[1].split('"')[0]
    t = next_(client, token).json()
    r = answer(client, token, t["trial"], 2)
    assert r.status_code == 200 and r.json()["too_fast"] is True
    statuses, done = _finish(client, token)
    assert statuses == [200] and done["returned"] is True and "completion_code" not in done
    page = client.get(f"/s/{study.slug}/done")
    assert "Sorry: too quick." in page.text and "PAID-1" not in page.text
    assert all(r.too_fast for r in session.scalars(select(Rating)))


def test_flag_only_flags_and_pays(client, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, min_response_ms=60_000, fast_answers="flag",
                          completion_code="PAID-2")
    token = join(client, study.slug)
    statuses, done = _finish(client, token)
    assert statuses == [200, 200] and done["returned"] is False and done["completion_code"] == "PAID-2"


def test_page_locks_answers_unless_the_study_only_flags(client, study_factory):
    for policy, locked in (("warn", 'data-min-ms="900"'), ("block", 'data-min-ms="900"'), ("flag", 'data-min-ms="0"')):
        study = study_factory(n_pairs=2, pairs_per_participant=1, min_response_ms=900, fast_answers=policy)
        client.cookies.clear()
        run = client.post(f"/s/{study.slug}/start", data={"consent": "yes"})
        assert locked in run.text


@pytest.mark.parametrize("n_main,n_gold,repeats", [(3, 1, 1), (2, 0, 2), (10, 2, 2), (20, 2, 3), (1, 0, 1)])
def test_plans_space_repeats_from_every_possible_original(n_main, n_gold, repeats):
    study = SimpleNamespace(seed=3, pairs_per_participant=n_main, gold_rate=n_gold / n_main, repeats=repeats,
                            practice_trials=1)
    for seed in range(40):
        plan = make_plan(study, seed)
        kinds, gap = plan["kinds"], plan["repeat_gap"]
        assert gap == repeat_gap(len(kinds) - 1) == max(1, min(5, -(-(len(kinds) - 1) // 2)))
        assert kinds.count("repeat") == repeats and kinds[1] == "main"
        slots = [i for i, k in enumerate(kinds) if k == "repeat"]
        # Hall's condition: the k-th repeat has at least k main trials gap or more places before it.
        for k, r in enumerate(slots, start=1):
            assert sum(1 for j, x in enumerate(kinds) if x == "main" and j <= r - gap) >= k


def test_repeats_come_back_at_least_the_gap_after_their_original(session, study_factory):
    study = study_factory(n_pairs=12, pairs_per_participant=8, repeats=2, gold_rate=0.0, ratings_per_pair=20)
    now = utcnow()
    for _ in range(6):
        p, _ = create_participant(session, study, None, now)
        i = 0
        while (res := next_trial(session, p, now, 30.0)).trial is not None:
            submit_answer(session, p, res.trial.public_id, 3, f"{p.id}-{i}", now)
            i += 1
        trials = {t.id: t for t in session.scalars(select(Trial).where(Trial.participant_id == p.id))}
        repeats = [t for t in trials.values() if t.kind == "repeat"]
        assert len(repeats) == 2
        for t in repeats:
            assert t.position - trials[t.repeat_of_trial_id].position >= 5 == p.plan["repeat_gap"]


def test_practice_is_counted_apart_and_gold_trials_carry_the_instruction(client, session, study_factory):
    study = study_factory(n_pairs=4, pairs_per_participant=2, practice_trials=1, gold_rate=0.5,
                          gold_instruction="Attention: pick the sharper image.")
    token = join(client, study.slug)
    seen = []
    while not (body := next_(client, token).json()).get("done"):
        trial = session.scalar(select(Trial).where(Trial.public_id == body["trial"]))
        seen.append((trial.kind, body["instruction"], body["practice"], body["progress"]))
        session.rollback()
        answer(client, token, body["trial"], 1)
    assert seen[0] == ("practice", None, True, {"done": 0, "total": 3, "practice_done": 0, "practice_total": 1})
    assert [s[3]["done"] for s in seen[1:]] == [0, 1, 2] and {s[3]["total"] for s in seen[1:]} == {3}
    assert Counter(s[0] for s in seen) == {"practice": 1, "main": 2, "gold": 1}
    for kind, instruction, _, _ in seen:
        # On every trial but practice (issue 22: on gold trials only, it would mark them).
        assert instruction == ("Attention: pick the sharper image." if kind != "practice" else None)
    assert body["progress"] == {"done": 3, "total": 3, "practice_done": 1, "practice_total": 1}


def test_capacity_is_checked_before_consent(client, study_factory):
    study = study_factory(n_pairs=1, pairs_per_participant=1, ratings_per_pair=1)
    assert 'id="consent"' in client.get(f"/s/{study.slug}").text
    token = join(client, study.slug)
    # The only slot is now taken. (A hold of a sign-up that has not answered yet does not count,
    # issue 22: idle sign-ups cannot make the study look full.)
    assert answer(client, token, next_(client, token).json()["trial"], 3).status_code == 200
    client.cookies.clear()
    page = client.get(f"/s/{study.slug}")
    assert page.status_code == 409 and 'id="no-work"' in page.text and 'id="consent"' not in page.text
    started = client.post(f"/s/{study.slug}/start", data={"consent": "yes"}, follow_redirects=False)
    assert started.status_code == 409 and 'id="no-work"' in started.text and "set-cookie" not in started.headers


def test_front_page_is_neutral_and_there_is_a_favicon(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "link you were given" in page.text and 'rel="icon"' in page.text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon" and icon.content[:4] == b"\0\0\1\0"
    assert client.get("/static/favicon.svg").status_code == 200


def test_compare_summary_gives_win_rate_by_used_zoom():
    def row(score, zoom, flicker=False, **kw):
        return {"score": score, "used_zoom": zoom, "used_flicker": flicker, "max_zoom": 3.0 if zoom else 1.0,
                "compare_view_ms": 2000 if zoom else 0, "flicker_ms": 0, "unlock_ms": 800, "is_gold": False, **kw}

    rows = [row(2, True), row(1, True), row(-1, True), row(0, True), row(-2, False), row(-1, False), row(1, False),
            row(2, True, is_gold=True), {"score": 1, "used_zoom": None, "is_gold": False}]
    out = compare_summary(rows)
    assert out["n"] == 8 and out["logged"] == 7
    zoomed, not_zoomed = out["by"]["used_zoom"]["yes"], out["by"]["used_zoom"]["no"]
    assert (zoomed["n"], zoomed["decisive"], zoomed["win_rate"]) == (4, 3, pytest.approx(2 / 3))
    assert (not_zoomed["n"], not_zoomed["win_rate"]) == (3, pytest.approx(1 / 3))
    assert 0 < zoomed["win_rate_ci_low"] < 2 / 3 < zoomed["win_rate_ci_high"] < 1
    assert out["share_used"]["used_zoom"] == pytest.approx(4 / 7)
    assert out["median_ms"] == {"compare_view": 2000.0, "flicker": None, "unlock": 800.0}
    assert compare_summary([])["by"]["used_zoom"]["yes"]["win_rate"] is None


def test_report_shows_how_people_compared(client, session, study_factory):
    from app.reporting.report import render_report, study_statistics

    study = study_factory(n_pairs=4, pairs_per_participant=4)
    token = join(client, study.slug)
    for i in range(4):
        t = next_(client, token).json()
        client.post(f"/api/trials/{t['trial']}/answer", headers={"X-Participant": token},
                    json={"choice": 1 + i, "request_id": f"q{i}", "compared": {**COMPARED, "used_zoom": i % 2 == 0}})
    study = session.scalar(select(Study).where(Study.id == study.id))
    stats = study_statistics(session, study, draws=20)
    assert stats["comparing"]["logged"] == 4 and stats["comparing"]["by"]["used_zoom"]["yes"]["n"] == 2
    html = render_report(stats)
    assert "How participants compared" in html and "did not zoom" in html


def test_seeded_random_plans_never_put_a_repeat_first():
    rng = random.Random(0)
    for _ in range(50):
        study = SimpleNamespace(seed=rng.randrange(1000), pairs_per_participant=rng.randint(1, 12),
                                gold_rate=rng.choice([0, 0.2, 0.5]), repeats=rng.randint(0, 3), practice_trials=0)
        kinds = make_plan(study, rng.randrange(10**6))["kinds"]
        assert kinds[0] == "main"


def test_a_too_fast_share_at_the_limit_still_gets_the_code(client, session, study_factory):
    from datetime import timedelta

    study = study_factory(n_pairs=3, pairs_per_participant=2, min_response_ms=60_000, fast_answers="warn",
                          fast_share_limit=0.5, completion_code="PAID-3")
    token = join(client, study.slug)
    for slow in (True, False):
        t = next_(client, token).json()
        if slow:  # shown two minutes ago: a deliberate answer
            trial = session.scalar(select(Trial).where(Trial.public_id == t["trial"]))
            trial.presented_at -= timedelta(minutes=2)
            session.commit()
        assert answer(client, token, t["trial"], 3).json()["too_fast"] is (not slow)
    done = next_(client, token).json()
    assert done["returned"] is False and done["completion_code"] == "PAID-3"  # 1 of 2 is not past 0.5
