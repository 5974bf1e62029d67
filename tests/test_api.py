"""The participant JSON API and pages (api.md), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select

from app.store.models import Image, Rating, Trial, utcnow
from app.statistics.scoring import score_from_choice
from app.studies.config import update_study


def join(client, slug, **external_ids):
    r = client.post(f"/api/studies/{slug}/participants", json={"external_ids": external_ids} if external_ids else None)
    assert r.status_code in (200, 201), r.text
    return r.json()["participant"]


def next_(client, token):
    return client.get(f"/api/participants/{token}/next")


def answer(client, token, trial, choice, request_id=None):
    return client.post(
        f"/api/trials/{trial}/answer",
        json={"choice": choice, "request_id": request_id or str(uuid.uuid4())},
        headers={"X-Participant": token},
    )


def test_full_flow_records_scores_and_completion(client, session, study_factory):
    study = study_factory(n_pairs=4, pairs_per_participant=3, completion_code="DONE42")
    token = join(client, study.slug)
    seen = []
    for i in range(3):
        r = next_(client, token)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["progress"] == {"done": i, "total": 3, "practice_done": 0, "practice_total": 0}
        assert body["left"].startswith("/i/") and body["right"].startswith("/i/")
        assert client.get(body["left"]).status_code == 200
        seen.append(body["trial"])
        assert answer(client, token, body["trial"], 1 + i).status_code == 200
    done = next_(client, token).json()
    assert done["done"] is True and done["completion_code"] == "DONE42"
    assert done["progress"] == {"done": 3, "total": 3, "practice_done": 0, "practice_total": 0}
    # Finished participants keep getting the completion code.
    assert next_(client, token).json()["completion_code"] == "DONE42"
    session.expire_all()
    rows = session.execute(select(Rating, Trial).join(Trial)).all()
    assert len(rows) == 3
    assert len({t.pair_id for _, t in rows}) == 3
    for rating, trial in rows:
        assert rating.score == score_from_choice(rating.choice, trial.treatment_side)
        assert rating.treatment_side == trial.treatment_side
        assert rating.study_version == study.version
        assert rating.response_ms >= 0


def test_next_returns_the_same_trial_until_answered(client, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    token = join(client, study.slug)
    first, again = next_(client, token).json(), next_(client, token).json()
    assert first["trial"] == again["trial"] and first["left"] == again["left"]
    # The next pair is held and announced for preloading, and differs from the current one.
    assert first["preload"] and {first["preload"]["left"], first["preload"]["right"]} != {first["left"], first["right"]}
    answer(client, token, first["trial"], 3)
    second = next_(client, token).json()
    assert second["trial"] != first["trial"]
    assert {second["left"], second["right"]} == {first["preload"]["left"], first["preload"]["right"]}


def test_same_request_id_stores_one_rating(client, session, study_factory):
    study = study_factory(n_pairs=2, pairs_per_participant=2)
    token = join(client, study.slug)
    trial = next_(client, token).json()["trial"]
    rid = str(uuid.uuid4())
    a, b = answer(client, token, trial, 5, rid), answer(client, token, trial, 5, rid)
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    assert b.headers.get("X-Idempotent-Replay") == "true" and "X-Idempotent-Replay" not in a.headers
    # A replay with another choice still returns the first result and changes nothing.
    c = answer(client, token, trial, 1, rid)
    assert c.status_code == 200 and c.json()["choice"] == 5
    session.expire_all()
    assert session.scalar(select(func.count(Rating.id))) == 1


def test_double_click_with_new_request_id_is_refused(client, session, study_factory):
    study = study_factory(n_pairs=2, pairs_per_participant=2)
    token = join(client, study.slug)
    trial = next_(client, token).json()["trial"]
    assert answer(client, token, trial, 2).status_code == 200
    r = answer(client, token, trial, 2)
    assert r.status_code == 409 and "already answered" in r.json()["detail"]
    session.expire_all()
    assert session.scalar(select(func.count(Rating.id))) == 1


def test_forged_and_out_of_order_answers_get_4xx(client, session, study_factory):
    study = study_factory(n_pairs=4, pairs_per_participant=2)
    alice, bob = join(client, study.slug), join(client, study.slug)
    t = next_(client, alice).json()
    trial, preload_trial = t["trial"], None
    # Another participant's trial.
    r = answer(client, bob, trial, 3)
    assert r.status_code == 403 and "another participant" in r.json()["detail"]
    # Unknown trial, unknown token, missing token.
    assert answer(client, alice, "0" * 32, 3).status_code == 404
    assert answer(client, "f" * 64, trial, 3).status_code == 403
    r = client.post(f"/api/trials/{trial}/answer", json={"choice": 3, "request_id": "x1"})
    assert r.status_code == 401 and "X-Participant" in r.json()["detail"]
    # Choices outside 1..5 (and non-integers).
    for bad in (0, 6, -1, "3", 2.5, True, None):
        r = answer(client, alice, trial, bad)
        assert r.status_code == 422, (bad, r.text)
        assert "choice" in r.text
    # Missing request_id.
    r = client.post(f"/api/trials/{trial}/answer", json={"choice": 3}, headers={"X-Participant": alice})
    assert r.status_code == 422
    # The preloaded (not yet shown) trial cannot be answered before the current one.
    preload_trial = session.scalars(
        select(Trial.public_id).where(Trial.state == "assigned", Trial.public_id != trial,
                                      Trial.participant_id == session.scalar(select(Trial.participant_id).where(Trial.public_id == trial)))
    ).one()
    session.rollback()  # end the read transaction (SQLite: it holds the database lock)
    r = answer(client, alice, preload_trial, 3)
    assert r.status_code == 409 and "current trial first" in r.json()["detail"]
    # A request_id already used for another trial.
    rid = str(uuid.uuid4())
    assert answer(client, alice, trial, 3, rid).status_code == 200
    nxt = next_(client, alice).json()["trial"]
    r = answer(client, alice, nxt, 3, rid)
    assert r.status_code == 409 and "different trial" in r.json()["detail"]
    session.expire_all()
    assert session.scalar(select(func.count(Rating.id))) == 1


def test_answer_to_an_expired_hold_is_refused_and_reissued(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    token = join(client, study.slug)
    trial = next_(client, token).json()["trial"]
    row = session.scalar(select(Trial).where(Trial.public_id == trial))
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    r = answer(client, token, trial, 4)
    assert r.status_code == 409 and "expired" in r.json()["detail"]
    fresh = next_(client, token).json()
    assert fresh["trial"] != trial
    assert answer(client, token, fresh["trial"], 4).status_code == 200


def test_crowd_ids_are_stored_and_a_returning_worker_resumes(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=3)
    ids = {"PROLIFIC_PID": "pp1", "STUDY_ID": "st1", "SESSION_ID": "se1"}
    r1 = client.post(f"/api/studies/{study.slug}/participants", json={"external_ids": ids})
    assert r1.status_code == 201
    token = r1.json()["participant"]
    t = next_(client, token).json()
    answer(client, token, t["trial"], 3)
    r2 = client.post(f"/api/studies/{study.slug}/participants", json={"external_ids": ids})
    assert r2.status_code == 200 and r2.json()["participant"] == token
    assert next_(client, token).json()["progress"]["done"] == 1
    from app.store.models import Participant

    p = session.scalar(select(Participant).where(Participant.token == token))
    assert p.external_ids == ids


def test_closed_study_and_no_work_left_answer_409(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=3, ratings_per_pair=1)
    alice = join(client, study.slug)
    for _ in range(2):
        assert answer(client, alice, next_(client, alice).json()["trial"], 3).status_code == 200
    last = next_(client, alice).json()["trial"]  # the last pair's last open slot: held, not reserved (issue 22)
    bob = join(client, study.slug)
    r = next_(client, bob)  # so Bob may take it too; the first answer wins
    assert r.status_code == 200 and answer(client, bob, r.json()["trial"], 3).status_code == 200
    r = answer(client, alice, last, 3)
    assert r.status_code == 409 and r.json()["reason"] == "pair_full"
    carol = join(client, study.slug)
    r = next_(client, carol)
    assert r.status_code == 409 and "no work left" in r.json()["detail"] and r.json()["reason"] == "no_work"
    update_study(session, study, {"state": "closed"})
    session.commit()
    r = client.post(f"/api/studies/{study.slug}/participants")
    assert r.status_code == 409 and "not open" in r.json()["detail"]
    r = next_(client, alice)
    assert r.status_code == 409 and r.json()["reason"] == "not_open"
    assert client.post("/api/studies/nope/participants").status_code == 404
    # The pages say so too (no redirect loop for a participant with a cookie).
    page = client.get(f"/s/{study.slug}")
    assert page.status_code == 409 and "not open" in page.text


def test_ratings_record_the_study_version_they_were_made_under(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2)
    token = join(client, study.slug)
    t = next_(client, token).json()
    answer(client, token, t["trial"], 2)
    v1 = study.version
    update_study(session, study, {"question": "Which image do you prefer?"})
    session.commit()
    t = next_(client, token).json()
    answer(client, token, t["trial"], 4)
    session.expire_all()
    versions = [r.study_version for r in session.scalars(select(Rating).order_by(Rating.id))]
    assert versions == [v1, v1 + 1]


def test_html_pages_consent_run_done(client, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, completion_code="CODE-77",
                          redirect_url="https://app.prolific.com/submissions/complete?cc=CODE-77")
    page = client.get(f"/s/{study.slug}?PROLIFIC_PID=w1&STUDY_ID=s1&SESSION_ID=x1&evil=<b>")
    assert page.status_code == 200
    assert 'name="PROLIFIC_PID" value="w1"' in page.text and "evil" not in page.text
    assert "Consent" in page.text and study.question in page.text
    refused = client.post(f"/s/{study.slug}/start", data={"PROLIFIC_PID": "w1"}, follow_redirects=False)
    # Post/redirect/get: the form comes back as a plain GET with the message and the crowd ids.
    assert refused.status_code == 303 and refused.headers["location"] == f"/s/{study.slug}?PROLIFIC_PID=w1&error=consent"
    form_again = client.get(refused.headers["location"])
    assert "Please tick the consent box" in form_again.text and 'name="PROLIFIC_PID" value="w1"' in form_again.text
    assert form_again.headers["cache-control"] == "no-store"
    started = client.post(f"/s/{study.slug}/start", data={"PROLIFIC_PID": "w1", "consent": "yes"},
                          follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"] == f"/s/{study.slug}/run"
    cookie = started.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    run = client.get(f"/s/{study.slug}/run")
    assert run.status_code == 200 and "participant.js" in run.text
    token = run.text.split('data-token="')[1].split('"')[0]
    # Coming back to the study link resumes instead of starting over.
    again = client.get(f"/s/{study.slug}", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].endswith("/run")
    assert client.get(f"/s/{study.slug}/done", follow_redirects=False).status_code == 303
    for _ in range(2):
        t = next_(client, token).json()
        assert answer(client, token, t["trial"], 5).status_code == 200
    assert next_(client, token).json()["done"] is True
    done = client.get(f"/s/{study.slug}/done")
    assert done.status_code == 200 and "CODE-77" in done.text and "app.prolific.com" in done.text
    assert client.get(f"/s/{study.slug}/full").status_code == 200
    assert client.get("/s/unknown-study").status_code == 404


def test_image_urls_are_stable_and_images_have_uniform_headers(client, study_factory):
    study = study_factory(n_pairs=2, pairs_per_participant=2)
    token = join(client, study.slug)
    t = next_(client, token).json()
    a, b = client.get(t["left"]), client.get(t["right"])
    assert a.content != b.content
    assert a.headers["content-type"] == "image/png"
    assert dict(a.headers) == {**dict(b.headers)}
    assert "etag" not in a.headers and "last-modified" not in a.headers
    assert client.get(t["left"]).content == a.content
    assert client.get("/i/" + "0" * 32).status_code == 404


def test_image_served_from_the_cache_is_the_stored_image(client, session, study_factory):
    study = study_factory(pairs_per_participant=2, ratings_per_pair=2)
    t = next_(client, join(client, study.slug)).json()
    served = [client.get(t["left"]).content for _ in range(2)]  # a miss, then a cache hit
    stored = session.scalar(select(Image.data).where(Image.token == t["left"].removeprefix("/i/")))
    assert served == [stored, stored]


def test_image_cache_drops_least_recently_used_bytes_first():
    from app.web.routes.media import ImageBytesCache

    cache = ImageBytesCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    assert cache.get("a") == b"1234"  # now the most recently used
    cache.put("c", b"90ab")  # 12 bytes > 10: "b" goes
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"90ab"
    cache.put("big", b"x" * 11)  # larger than the whole cache: not kept, nothing dropped
    assert cache.get("big") is None and cache.get("a") == b"1234" and cache.get("c") == b"90ab"


def test_study_rules_hold_for_every_caller(client, session, study_factory):
    """The rules live in app.studies.config, so the command line cannot bypass what the pages enforce."""
    import pytest

    from app.studies.config import StudyError, get_study, set_state

    study = study_factory(n_pairs=4, pairs_per_participant=2)
    slug, version = study.slug, study.version
    # An unchanged config is no edit: the version stays.
    update_study(session, study, {})
    assert study.version == version
    session.rollback()
    token = join(client, slug)
    body = next_(client, token).json()
    assert answer(client, token, body["trial"], 2).status_code == 200
    study = get_study(session, slug)
    with pytest.raises(StudyError, match="exclusion rules cannot change once the study has ratings"):
        update_study(session, study, {"exclusion_rules": {"max_side_bias": 0.6}})
    session.rollback()
    with pytest.raises(StudyError, match="already open"):
        set_state(session, study, "open")
    with pytest.raises(StudyError, match="a study that is open cannot be moved to archived"):
        set_state(session, study, "archived")
    set_state(session, study, "closed")
    set_state(session, study, "archived")
    session.commit()
    with pytest.raises(StudyError, match="archived and can no longer be edited"):
        update_study(session, study, {"title": "new"})
    session.rollback()


def test_a_rating_costs_few_queries(client, app, study_factory):
    """Guards the request path's query budget: an answer is one lookup (the trial and, by token, the
    participant), the conditional UPDATE, the pair's tally and the INSERT; a warm image is served from memory; pair data comes from the per-process cache."""
    from sqlalchemy import event

    study = study_factory(n_pairs=6, pairs_per_participant=5, ratings_per_pair=2)
    token = join(client, study.slug)
    statements: list[str] = []

    def count(_conn, _cursor, sql, *_args) -> None:
        if sql.lstrip().split(None, 1)[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
            statements.append(sql)

    event.listen(app.state.engine, "before_cursor_execute", count)
    try:
        t = next_(client, token).json()
        statements.clear()
        assert answer(client, token, t["trial"], 3).status_code == 200
        # A provisional trial (before the participant's first answer) also locks and recounts its pair.
        assert len(statements) <= 6, "\n".join(s[:90] for s in statements)
        assert answer(client, token, next_(client, token).json()["trial"], 3).status_code == 200
        t = next_(client, token).json()  # from now on the trials are reserved
        client.get(t["left"])
        statements.clear()
        assert client.get(t["left"]).status_code == 200
        assert statements == []
        assert answer(client, token, t["trial"], 3).status_code == 200
        # answer lookup with the participant, UPDATE, the pair's tally +1 (saves /next counting every
        # rating), INSERT; on PostgreSQL the last three are one statement (data-modifying CTEs)
        postgres = app.state.engine.dialect.name == "postgresql"
        assert len(statements) == (2 if postgres else 4), statements
        statements.clear()
        assert next_(client, token).status_code == 200  # allocates the next preload
        # the participant with their study's version, their trials, the pair's lock (PostgreSQL)
        # and count, the ranking with the INSERT of the preload, UPDATE of the trial now shown, the
        # preload's image bytes (not cached yet)
        assert len(statements) <= 7, statements
        statements.clear()
        assert next_(client, token).status_code == 200  # the same trials again: pairs are cached
        assert not any("FROM pairs" in s for s in statements), statements
    finally:
        event.remove(app.state.engine, "before_cursor_execute", count)
