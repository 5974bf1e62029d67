"""Assignment rules: least-rated first, targets, no repeats but planned ones, holds, resume, plans."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from app.assignment import FlowError, create_participant, make_plan, next_trial, submit_answer
from app.store.models import PairTally, Rating, Trial, utcnow
from app.statistics.scoring import score_from_choice

HOLD = 30.0


def _walk(session, participant, now, choice=3, limit=100):
    """Answer every trial of `participant`; returns the answered trials in order."""
    done = []
    for i in range(limit):
        res = next_trial(session, participant, now, HOLD)
        if res.trial is None:
            return done
        trial = res.trial
        submit_answer(session, participant, trial.public_id, choice, f"{participant.id}-{i}", now)
        done.append(trial)
    raise AssertionError("participant never finished")


def _main_counts(session, study):
    rows = session.scalars(
        select(Trial.pair_id).join(Rating, Rating.trial_id == Trial.id)
        .where(Trial.study_id == study.id, Trial.kind == "main")
    ).all()
    return Counter(rows)


def test_score_from_choice_unflips_once():
    table = {(c, s): score_from_choice(c, s) for c in range(1, 6) for s in ("left", "right")}
    assert [table[(c, "right")] for c in range(1, 6)] == [-2, -1, 0, 1, 2]
    assert [table[(c, "left")] for c in range(1, 6)] == [2, 1, 0, -1, -2]
    for bad in (0, 6, True, 2.0):
        with pytest.raises(ValueError):
            score_from_choice(bad, "left")
    with pytest.raises(ValueError):
        score_from_choice(3, "middle")


def test_plan_is_seeded_balanced_and_repeats_follow_mains():
    study = SimpleNamespace(seed=7, pairs_per_participant=10, gold_rate=0.2, repeats=2, practice_trials=2)
    plan = make_plan(study, 12345)
    assert plan == make_plan(study, 12345)
    assert plan != make_plan(study, 12346)
    kinds = plan["kinds"]
    assert Counter(kinds) == {"main": 10, "gold": 2, "repeat": 2, "practice": 2}
    assert kinds[:3] == ["practice", "practice", "main"]
    sides = Counter(plan["sides"])
    assert abs(sides["left"] - sides["right"]) <= 1
    for i, k in enumerate(kinds):
        if k == "repeat":
            assert kinds[:i].count("main") >= 2


def test_least_rated_first_and_target_never_exceeded(session, study_factory):
    study = study_factory(n_pairs=5, pairs_per_participant=2, ratings_per_pair=2)
    now = utcnow()
    finished = refused = 0
    for _ in range(8):
        p, _ = create_participant(session, study, None, now)
        try:
            _walk(session, p, now)
            finished += 1
        except FlowError as e:
            assert e.status == 409 and "no work left" in e.message
            refused += 1
        counts = _main_counts(session, study)
        values = [counts.get(pair.id, 0) for pair in study.comparisons[0].pair_set.pairs]
        # Least-rated first: no pair gets ahead by more than one rating while others lag.
        assert max(values) - min(values) <= 1, values
        assert max(values) <= 2
    counts = _main_counts(session, study)
    assert sum(counts.values()) == 10 and set(counts.values()) == {2}
    tallies = dict(session.execute(select(PairTally.pair_id, PairTally.answered)
                                   .where(PairTally.study_id == study.id)).all())
    assert tallies == counts
    assert finished == 5 and refused == 3


def test_no_pair_twice_except_planned_repeats_with_sides_swapped(session, study_factory):
    study = study_factory(n_pairs=6, pairs_per_participant=6, repeats=2, gold_rate=0.0)
    p, _ = create_participant(session, study, None, utcnow())
    trials = _walk(session, p, utcnow())
    mains = [t for t in trials if t.kind == "main"]
    repeats = [t for t in trials if t.kind == "repeat"]
    assert len(mains) == 6 and len({t.pair_id for t in mains}) == 6
    assert len(repeats) == 2 and len({t.repeat_of_trial_id for t in repeats}) == 2
    by_id = {t.id: t for t in mains}
    for r in repeats:
        orig = by_id[r.repeat_of_trial_id]
        assert r.pair_id == orig.pair_id and r.treatment_side != orig.treatment_side
        assert orig.position < r.position


def test_gold_trials_show_an_intact_and_a_degraded_image(session, study_factory):
    from app.assignment import trial_images

    # Gold checks take pairs this participant has not been shown (issue 22): 4 main + 2 gold pairs.
    study = study_factory(n_pairs=8, pairs_per_participant=4, gold_rate=0.5)
    p, _ = create_participant(session, study, None, utcnow())
    trials = _walk(session, p, utcnow(), choice=1)
    golds = [t for t in trials if t.kind == "gold"]
    assert not any(g.pair_id in {t.pair_id for t in trials if t.position < g.position} for g in golds)
    assert len(golds) == 2
    for g in golds:
        left, right = trial_images(session, g)
        pair = g.pair
        intact = pair.baseline_image_id if pair.gold_degraded_arm == "baseline" else pair.treatment_image_id
        assert {left.id, right.id} == {intact, pair.gold_image_id}
        # choice 1 = "left much better": a pass exactly when the intact image was on the left.
        assert (g.rating.score > 0) == (left.id == intact)


def test_holds_expire_and_are_reissued(session, study_factory):
    """A reserved hold (the trial on screen of a participant who has answered before) keeps its slot
    from others until it expires. (Issue 22: only while the pair has another open slot; the last
    open slot of a pair is never reserved, see test_trust.py.)"""
    study = study_factory(n_pairs=3, pairs_per_participant=3, ratings_per_pair=2, hold_minutes=10)
    t0 = utcnow()
    alice, _ = create_participant(session, study, None, t0)
    bob, _ = create_participant(session, study, None, t0)
    dave, _ = create_participant(session, study, None, t0)
    for i in range(2):  # two answers: the third pair is then held for Alice, reserved
        t = next_trial(session, alice, t0, HOLD).trial
        submit_answer(session, alice, t.public_id, 3, f"a{i}", t0)
    held = next_trial(session, alice, t0, HOLD).trial
    assert held.reserved
    _walk(session, bob, t0)  # Bob rates all three pairs: with Alice's hold, every pair is full
    with pytest.raises(FlowError, match="no work left"):
        next_trial(session, dave, t0 + timedelta(minutes=9), HOLD)
    later = t0 + timedelta(minutes=11)
    reissued = next_trial(session, dave, later, HOLD).trial
    assert reissued.pair_id == held.pair_id and reissued.id != held.id
    with pytest.raises(FlowError, match="expired"):
        submit_answer(session, alice, held.public_id, 3, "late", later)
    submit_answer(session, dave, reissued.public_id, 3, "dave-1", later)
    assert set(_main_counts(session, study).values()) == {2}
    assert next_trial(session, alice, later, HOLD).trial is None  # nothing left for her: finished


def test_returning_participant_resumes_where_they_left(session, study_factory):
    study = study_factory(n_pairs=4, pairs_per_participant=3)
    now = utcnow()
    p, _ = create_participant(session, study, {"workerId": "W9", "assignmentId": "A1"}, now)
    first = next_trial(session, p, now, HOLD)
    submit_answer(session, p, first.trial.public_id, 4, "r1", now)
    current = next_trial(session, p, now, HOLD).trial
    with pytest.raises(FlowError, match="already started") as refused:  # a PID alone proves nothing
        create_participant(session, study, {"workerId": "W9", "assignmentId": "A2"}, now)
    assert refused.value.status == 409 and refused.value.reason == "crowd_id_in_use"
    again, created = create_participant(session, study, {"workerId": "W9", "assignmentId": "A1"}, now)
    assert not created and again.id == p.id
    resumed = next_trial(session, again, now + timedelta(minutes=5), HOLD)
    assert resumed.trial.id == current.id and resumed.done == 1 and resumed.total == 3


def test_assignment_randomness_is_reproducible_from_recorded_seeds(sqlite_url, tmp_path, make_pair_set):
    """Same study seed + participant seeds + answers => the same pairs and sides."""
    from app.store.db import make_engine, session_factory, upgrade_database
    from app.studies.importer import import_pair_set
    from app.studies.config import create_study

    folder = make_pair_set(tmp_path / "ps", 6)
    outcomes = []
    for run in range(2):
        url = sqlite_url.replace(".sqlite3", f"-{run}.sqlite3")
        upgrade_database(url)
        engine = make_engine(url)
        with session_factory(engine)() as s:
            ps = import_pair_set(s, folder)
            study = create_study(s, {"title": "r", "pair_sets": [ps.id], "state": "open", "seed": 99,
                                     "pairs_per_participant": 3, "gold_rate": 0.0, "repeats": 0})
            s.commit()
            now = utcnow()
            seq = []
            for seed in (11, 22):
                p, _ = create_participant(s, study, None, now)
                p.seed = seed
                p.plan = make_plan(study, seed)
                s.commit()
                seq.append([(t.pair.pair_key, t.treatment_side) for t in _walk(s, p, now)])
            outcomes.append(seq)
        engine.dispose()
    assert outcomes[0] == outcomes[1]
