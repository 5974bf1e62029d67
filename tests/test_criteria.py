"""Several criteria per trial (issue 24): config, the answer path, the export and the migration."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text

from app.reporting.export import rating_rows, rows_to_csv
from app.store.db import alembic_config, upgrade_database
from app.store.models import Rating, Trial
from app.studies.config import (
    QUESTION_PRESETS,
    StudyError,
    parse_config,
    study_config,
    update_study,
)

TWO = QUESTION_PRESETS["drawbench"]


def _signup(client, slug):
    return client.post(f"/api/studies/{slug}/participants", json={}).json()["participant"]


def _answer(client, token, trial, body):
    return client.post(f"/api/trials/{trial}/answer", json=body, headers={"X-Participant": token})


def test_config_questions_validate_and_round_trip(session, study_factory):
    with pytest.raises(StudyError, match="same key"):
        parse_config({"title": "t", "pair_sets": [1], "questions": [{"key": "a", "text": "A"}, {"key": "a", "text": "B"}]})
    with pytest.raises(StudyError, match="questions"):
        parse_config({"title": "t", "pair_sets": [1], "questions": [{"key": f"k{i}", "text": "x"} for i in range(4)]})
    with pytest.raises(StudyError, match="primary"):
        parse_config({"title": "t", "pair_sets": [1], "questions": [{"key": "a", "text": "A"}], "primary": "b"})
    with pytest.raises(StudyError, match="key"):
        parse_config({"title": "t", "pair_sets": [1], "questions": [{"key": "Bad Key", "text": "A"}]})
    one = study_factory()
    assert "questions" not in study_config(one) and "primary" not in study_config(one)  # old configs unchanged
    two = study_factory(questions=TWO["questions"], primary="quality")
    cfg = study_config(two)
    assert [q["key"] for q in cfg["questions"]] == ["alignment", "quality"] and cfg["primary"] == "quality"
    assert parse_config(cfg).model_dump() == parse_config({**cfg}).model_dump()


def test_two_questions_answered_atomically_idempotent_and_exported_long(client, session, study_factory):
    study = study_factory(n_pairs=3, pairs_per_participant=2, questions=TWO["questions"], primary=TWO["primary"])
    token = _signup(client, study.slug)
    t = client.get(f"/api/participants/{token}/next").json()
    assert [q["key"] for q in t["questions"]] == ["alignment", "quality"]
    assert all(len(q["labels"]) == 5 for q in t["questions"])
    # The single choice form is refused: this study asks two questions.
    r = _answer(client, token, t["trial"], {"choice": 2, "request_id": str(uuid.uuid4())})
    assert r.status_code == 422 and "alignment" in r.json()["detail"]
    r = _answer(client, token, t["trial"], {"answers": {"alignment": 2}, "request_id": str(uuid.uuid4())})
    assert r.status_code == 422 and "quality" in r.json()["detail"]
    r = _answer(client, token, t["trial"], {"answers": {"alignment": 2, "quality": 9}, "request_id": str(uuid.uuid4())})
    assert r.status_code == 422
    r = _answer(client, token, t["trial"], {"answers": {"alignment": 2, "quality": 4, "style": 1},
                                            "request_id": str(uuid.uuid4())})
    assert r.status_code == 422 and "style" in r.json()["detail"]
    session.expire_all()
    assert session.scalar(select(Rating.id)) is None  # nothing stored by refused requests
    session.rollback()  # SQLite: every transaction holds the write lock
    rid = str(uuid.uuid4())
    body = {"answers": {"quality": 4, "alignment": 2}, "request_id": rid}
    r = _answer(client, token, t["trial"], body)
    assert r.status_code == 200, r.text
    assert r.json()["answers"] == {"alignment": 2, "quality": 4} and r.json()["choice"] == 2
    again = _answer(client, token, t["trial"], body)  # a retry: same result, nothing new
    assert again.status_code == 200 and again.headers.get("X-Idempotent-Replay") == "true"
    assert again.json()["answers"] == {"alignment": 2, "quality": 4}
    session.expire_all()
    stored = session.execute(select(Rating.criterion, Rating.is_primary, Rating.choice, Rating.request_id)
                             .order_by(Rating.id)).all()
    assert [(c, p, ch) for c, p, ch, _ in stored] == [("alignment", True, 2), ("quality", False, 4)]
    assert {x[3] for x in stored} == {rid}
    trial = session.scalar(select(Trial).where(Trial.public_id == t["trial"]))
    assert trial.rating.criterion == "alignment"
    session.rollback()
    t2 = client.get(f"/api/participants/{token}/next").json()
    assert _answer(client, token, t2["trial"], {"answers": {"quality": 5, "alignment": 5},
                                                "request_id": str(uuid.uuid4())}).status_code == 200
    session.expire_all()
    rows = rating_rows(session, study)
    assert len(rows) == 4 and [r["criterion"] for r in rows] == ["alignment", "quality"] * 2
    assert len({r["trial"] for r in rows}) == 2
    table = list(csv.DictReader(io.StringIO(rows_to_csv(rows))))
    assert [r["criterion"] for r in table] == ["alignment", "quality"] * 2
    with pytest.raises(StudyError, match="questions"):
        update_study(session, study, {"primary": "quality"})


def test_one_question_study_keeps_the_old_api(client, session, study_factory):
    study = study_factory(n_pairs=2, pairs_per_participant=1)
    question, slug = study.question, study.slug
    session.rollback()
    token = _signup(client, slug)
    t = client.get(f"/api/participants/{token}/next").json()
    assert [q["key"] for q in t["questions"]] == ["overall"] and t["questions"][0]["text"] == question
    r = _answer(client, token, t["trial"], {"choice": 5, "request_id": "r-1"})
    assert r.status_code == 200 and "answers" not in r.json()
    session.expire_all()
    rows = rating_rows(session, study)
    assert [(r["criterion"], r["choice"]) for r in rows] == [("overall", 5)]
    session.rollback()
    # Reusing a request id on another trial is still refused (unique among primary rows).
    token2 = _signup(client, slug)
    t2 = client.get(f"/api/participants/{token2}/next").json()
    assert _answer(client, token2, t2["trial"], {"choice": 1, "request_id": "r-1"}).status_code == 409


RATING_COLUMNS = ("id", "trial_id", "request_id", "study_version", "choice", "score", "treatment_side",
                  "response_ms", "client_response_ms", "too_fast", "answered_at")


def test_existing_ratings_migrate_unchanged(db_url, client, session, study_factory):
    study = study_factory(n_pairs=4, pairs_per_participant=3, gold_rate=0.34, repeats=1)
    for choice in (1, 4):
        token = _signup(client, study.slug)
        while True:
            t = client.get(f"/api/participants/{token}/next").json()
            if t.get("done"):
                break
            assert _answer(client, token, t["trial"], {"choice": choice, "request_id": str(uuid.uuid4())}).status_code == 200
    session.close()
    engine = create_engine(db_url)
    cols = ", ".join(RATING_COLUMNS)
    try:
        command.downgrade(alembic_config(db_url), "25_datasheet")
        with engine.connect() as conn:
            before = conn.execute(text(f"SELECT {cols} FROM ratings ORDER BY id")).all()
            assert "criterion" not in list(conn.execute(text("SELECT * FROM ratings")).keys())
        assert len(before) == 10
        upgrade_database(db_url)
        with engine.connect() as conn:
            after = conn.execute(text(f"SELECT {cols} FROM ratings ORDER BY id")).all()
            extra = conn.execute(text("SELECT DISTINCT criterion, is_primary FROM ratings")).all()
        assert after == before
        assert [(c, bool(p)) for c, p in extra] == [("overall", True)]
    finally:
        engine.dispose()
    session.expire_all()
    assert len(rating_rows(session, study)) == 10


def _run_two_question_study(client, session, study_factory, n_participants=6, **config):
    import random

    study = study_factory(n_pairs=6, pairs_per_participant=4, ratings_per_pair=6, questions=TWO["questions"],
                          primary=TWO["primary"], **config)
    slug = study.slug
    session.rollback()
    rng = random.Random(3)
    for _ in range(n_participants):
        token = _signup(client, slug)
        while True:
            t = client.get(f"/api/participants/{token}/next").json()
            if t.get("done"):
                break
            a = rng.randint(1, 5)
            answers = {"alignment": a, "quality": min(5, max(1, a + rng.choice([-1, 0, 1])))}
            r = _answer(client, token, t["trial"], {"answers": answers, "request_id": str(uuid.uuid4())})
            assert r.status_code == 200, r.text
    session.expire_all()
    return study


def test_statistics_and_report_per_criterion(client, session, study_factory, tmp_path):
    from app.analysis.study_statistics import study_statistics
    from app.reporting.report import render_report

    study = _run_two_question_study(client, session, study_factory, gold_rate=0.5)
    stats = study_statistics(session, study, draws=50)
    # Gold trials take turns by position: other_prompt checks alignment, degraded checks quality; each
    # is judged on the answer to the criterion it checks.
    rows = rating_rows(session, study)
    answers = {(r["trial"], r["criterion"]): r for r in rows}
    gold = [answers[(r["trial"], ("alignment", "quality")[r["position"] % 2])] for r in rows
            if r["is_gold"] and r["criterion"] == "alignment"]
    assert {r["criterion"] for r in gold} == {"alignment", "quality"}
    assert stats["results"]["all"]["quality"]["gold"]["n"] == len(gold)
    passed = sum(r["score"] > 0 for r in gold) / len(gold)
    assert stats["results"]["all"]["quality"]["gold"]["pass_rate"] == pytest.approx(passed)
    # A secondary criterion's own quality control counts only the gold trials that check it.
    own = [r for r in gold if r["criterion"] == "quality"]
    assert 0 < stats["criteria"]["quality"]["results"]["all"]["quality"]["gold"]["n"] == len(own) < len(gold)
    assert stats["criteria_analysis"]["exclusion_rules_use"]["gold"] == (
        "alignment (other prompt gold trials), quality (degraded gold trials)")
    assert list(stats["criteria"]) == ["alignment", "quality"]  # the primary first
    assert stats["criteria"]["alignment"]["role"] == "primary" and stats["criteria"]["quality"]["role"] == "secondary"
    # The top level is the primary criterion alone: one preference rating per main trial.
    assert stats["results"]["all"]["overall"]["n_ratings"] == stats["criteria"]["quality"]["results"]["all"]["overall"]["n_ratings"] == 24
    assert stats["results"] is stats["criteria"]["alignment"]["results"]
    secondary = stats["criteria"]["quality"]["results"]["all"]
    for g in secondary["per_comparison"].values():
        assert g["role"] == "secondary" and "p_holm_secondary" in g["tests"]["win_rate"]
    ca = stats["criteria_analysis"]
    assert ca["primary"] == "alignment" and ca["secondary"] == ["quality"] and ca["exclusions_criterion"] == "alignment"
    (corr,) = ca["correlation"]
    assert corr["criteria"] == ["alignment", "quality"] and corr["n_trials"] == 24 and corr["pooled"] > 0.5
    assert corr["per_participant"]["n"] >= 1
    import json
    json.dumps(stats, allow_nan=False)
    html = render_report(stats)
    assert 'id="criteria-table"' in html and 'id="criteria-correlation"' in html and "(secondary)" in html
    # The report bundle: ratings.csv in long format, statistics.json with every criterion, the paper's
    # methods sentence names both questions.
    from app.reporting.paper import methods_text
    from app.reporting.report import write_study_report

    out = write_study_report(session, study, tmp_path / "report", draws=20)
    table = list(csv.DictReader(io.StringIO(out.paths["ratings"].read_text())))
    assert {r["criterion"] for r in table} == {"alignment", "quality"} and out.n_ratings == len(table)
    saved = json.loads((tmp_path / "report" / "statistics.json").read_text())
    assert list(saved["criteria"]) == ["alignment", "quality"] and "Results per criterion" in (
        tmp_path / "report" / "report.html").read_text()
    assert "(alignment, primary)" in " ".join(t for t, _ in methods_text(stats))
    assert "better? (primary); quality: " in saved["datasheet"]["fields"]["question"]["value"]


from tests.test_admin import admin_client, create_via_form, pair_set_id, study_by_slug  # noqa: F401  (fixtures)


def test_new_study_form_offers_presets_and_free_text(admin_client, session, pair_set_id):  # noqa: F811
    client, ps = admin_client, pair_set_id
    form = client.get("/admin/new-study").text
    for value in ("overall", "drawbench", "overall-quality-alignment", "custom"):
        assert f'name="questions_preset" value="{value}"' in form
    r = create_via_form(client, ps, title="Two criteria", questions_preset="drawbench")
    assert r.status_code == 303, r.text
    study = study_by_slug(client.app, r.headers["location"].rsplit("/", 1)[1])
    assert [q["key"] for q in study.questions] == ["alignment", "quality"] and study.primary_criterion == "alignment"
    r = create_via_form(client, ps, title="Own questions", questions_preset="custom", primary="style",
                        questions_text="sharp | Which is sharper?\nstyle | Which has the nicer style? | Left | Right")
    assert r.status_code == 303, r.text
    slug = r.headers["location"].rsplit("/", 1)[1]
    study = study_by_slug(client.app, slug)
    assert study.questions[1] == {"key": "style", "text": "Which has the nicer style?", "low": "Left", "high": "Right"}
    assert study.questions[0]["low"] == "Left much better" and "gold" not in study.questions[0]
    assert study.primary_criterion == "style"
    edit = client.get(f"/admin/studies/{slug}/edit").text
    assert 'value="custom" checked' in edit and "style | Which has the nicer style? | Left | Right" in edit
    r = create_via_form(client, ps, title="Bad", questions_preset="custom", questions_text="only-a-key")
    assert r.status_code == 422 and "questions, line 1" in r.text
    r = create_via_form(client, ps, title="Plain")
    study = study_by_slug(client.app, r.headers["location"].rsplit("/", 1)[1])
    assert study.questions is None and study.primary_criterion is None


@pytest.mark.postgres
@pytest.mark.slow
def test_load_script_runs_a_two_question_study(postgres_url, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "load.py"), "--questions", "2", "--participants", "6",
         "--workers", "1", "--duration", "4", "--pairs", "12", "--ratings-per-pair", "3",
         "--pairs-per-participant", "4", "--replay-share", "0.5", "--database-url", postgres_url,
         "--json-out", str(out)],
        check=False, capture_output=True, text=True, timeout=240, cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["acknowledged"] > 0 and (result["lost"], result["duplicate"], result["over_target"]) == (0, 0, 0)
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            per_trial = conn.execute(text("SELECT count(*) FROM ratings GROUP BY trial_id")).scalars().all()
            keys = set(conn.execute(text("SELECT DISTINCT criterion FROM ratings")).scalars())
    finally:
        engine.dispose()
    assert set(per_trial) == {2} and keys == {"alignment", "quality"}


def test_racing_double_clicks_store_each_two_question_answer_once(live_server, session, study_factory):
    """Balanced assignment, holds and idempotency with two questions: 16 participants over HTTP, each
    answer sent twice at once; every acknowledged trial has exactly one row per criterion, tallies
    and targets count trials (not rows), and every payload/answer has the same keys (blinding)."""
    import random
    import threading
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from app.store.models import PairTally

    target, n_pairs, n_people = 2, 8, 16
    study = study_factory(n_pairs=n_pairs, pairs_per_participant=3, ratings_per_pair=target, gold_rate=0.34,
                          repeats=1, questions=TWO["questions"], primary=TWO["primary"])
    slug, study_id = study.slug, study.id
    session.rollback()
    barrier = threading.Barrier(n_people)

    def participant(k):
        rng, acked, keys = random.Random(k), [], set()
        with httpx.Client(base_url=live_server, timeout=60) as c:
            token = c.post(f"/api/studies/{slug}/participants", json={}).json()["participant"]
            barrier.wait()
            while True:
                r = c.get(f"/api/participants/{token}/next")
                if r.status_code == 409:
                    return acked, keys
                body = r.json()
                if body.get("done"):
                    return acked, keys
                keys.add((tuple(sorted(body)), tuple(q["key"] for q in body["questions"])))
                payload = {"answers": {"alignment": rng.randint(1, 5), "quality": rng.randint(1, 5)},
                           "request_id": str(uuid.uuid4())}
                url, headers = f"/api/trials/{body['trial']}/answer", {"X-Participant": token}
                with ThreadPoolExecutor(2) as pool:
                    results = [f.result() for f in [pool.submit(c.post, url, json=payload, headers=headers)
                                                    for _ in range(2)]]
                if any(x.json().get("reason") == "pair_full" for x in results):
                    continue
                assert all(x.status_code == 200 for x in results), [x.text for x in results]
                assert results[0].json() == results[1].json()
                keys.add(tuple(sorted(results[0].json())))
                acked.append((payload["request_id"], payload["answers"]))

    with ThreadPoolExecutor(n_people) as pool:
        outcomes = list(pool.map(participant, range(n_people)))
    acked = dict(a for o in outcomes for a in o[0])
    seen_keys = set().union(*(o[1] for o in outcomes))
    assert len({k for k in seen_keys if isinstance(k[0], tuple)}) == 1  # one payload shape, one question list
    session.expire_all()
    rows = session.execute(select(Rating.request_id, Rating.criterion, Rating.choice, Trial.pair_id, Trial.kind,
                                  Rating.is_primary).join(Trial, Trial.id == Rating.trial_id)).all()
    stored: dict[str, dict[str, int]] = {}
    for rid, crit, choice, *_ in rows:
        stored.setdefault(rid, {})[crit] = choice
    assert stored == acked  # nothing lost, nothing twice, each criterion as sent
    main = Counter(pair for _, _, _, pair, kind, primary in rows if kind == "main" and primary)
    assert max(main.values()) <= target and sum(main.values()) == n_pairs * target
    tallies = dict(session.execute(select(PairTally.pair_id, PairTally.answered)
                                   .where(PairTally.study_id == study_id)).all())
    assert tallies == dict(main)


def test_gold_trials_check_alignment_with_another_prompts_image(client, session, study_factory):
    """An 'other_prompt' gold trial shows the pair's image against an image made for another
    prompt; a 'degraded' one the intact image against its degraded twin; the kinds take turns."""
    from app.assignment import trial_images
    from app.store.models import Pair

    study = _run_two_question_study(client, session, study_factory, n_participants=3, gold_rate=0.5)
    golds = session.scalars(select(Trial).where(Trial.study_id == study.id, Trial.kind == "gold")).all()
    kinds = set()
    for t in golds:
        pair = session.get(Pair, t.pair_id)
        left, right = trial_images(session, t)
        intact, other = (left, right) if t.treatment_side == "left" else (right, left)
        if t.position % 2 == 0:  # other_prompt: the pair's treatment image vs another prompt's
            kinds.add("other_prompt")
            assert intact.id == pair.treatment_image_id
            owner = session.scalar(select(Pair).where(Pair.treatment_image_id == other.id))
            assert owner is not None and owner.prompt != pair.prompt
        else:
            kinds.add("degraded")
            assert other.id == pair.gold_image_id
    assert kinds == {"other_prompt", "degraded"}
    session.rollback()


def test_a_two_question_trial_reveals_nothing(client, session, study_factory):
    """Blinding audit with two questions and both kinds of gold check: the page, every /next payload
    and every answer response name no arm, method, gold check or score; one payload shape."""
    import re

    from tests.test_blinding import FORBIDDEN

    study = study_factory(n_pairs=6, pairs_per_participant=4, gold_rate=0.5, repeats=1, title="Image study",
                          instructions="Compare the two images.", questions=TWO["questions"], primary=TWO["primary"])
    slug = study.slug
    session.rollback()
    run = client.post(f"/s/{slug}/start", data={"consent": "yes"})
    texts = [(f"/s/{slug}/run", run.text)]
    token = run.text.split('data-token="')[1].split('"')[0]
    shapes, sizes = set(), set()
    while True:
        r = client.get(f"/api/participants/{token}/next")
        body = r.json()
        if body.get("done"):
            break
        texts.append(("next", r.text))
        shapes.add((tuple(sorted(body)), str(body["questions"])))
        for side in ("left", "right"):
            sizes.add(len(client.get(body[side]).content))
        a = _answer(client, token, body["trial"], {"answers": {"alignment": 1, "quality": 5},
                                                   "request_id": str(uuid.uuid4())})
        assert a.status_code == 200
        texts.append(("answer", a.text))
    assert len(shapes) == 1 and len(sizes) == 1  # the same keys and questions; one image size
    for where, body in texts:
        for pattern in FORBIDDEN:
            assert not re.search(pattern, body, re.IGNORECASE), f"{pattern!r} in {where}"
