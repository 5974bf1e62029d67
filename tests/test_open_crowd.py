"""A public study link: sign-ups that never answer cannot lock real participants out (issue 8)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from app.store.models import Rating, Trial
from tests.test_api import answer, join, next_


def _main_counts(session, study) -> Counter:
    session.expire_all()
    rows = session.scalars(
        select(Trial.pair_id).join(Rating, Rating.trial_id == Trial.id)
        .where(Trial.study_id == study.id, Trial.kind == "main")
    ).all()
    session.rollback()
    return Counter(rows)


def _finish(client, token) -> int:
    """Answer every trial of `token`; returns how many answers were stored."""
    stored = 0
    for _ in range(50):
        r = next_(client, token)
        if r.status_code == 409 or r.json().get("done"):
            return stored
        stored += answer(client, token, r.json()["trial"], 3).status_code == 200
    raise AssertionError("participant never finished")


@pytest.mark.slow
def test_200_idle_sign_ups_do_not_lock_out_real_participants(client, session, study_factory):
    target = 2
    study = study_factory(n_pairs=6, pairs_per_participant=2, ratings_per_pair=target)
    hoarders = []
    for _ in range(200):
        token = join(client, study.slug)
        t = next_(client, token)
        assert t.status_code == 200, t.text  # each holds two trials, provisionally
        hoarders.append((token, t.json()["trial"]))
    # A real participant still gets work, and so do the next ones until the pairs are full.
    assert _finish(client, join(client, study.slug)) == 2
    while True:
        token = join(client, study.slug)
        if next_(client, token).status_code == 409:
            break
        _finish(client, token)
    counts = _main_counts(session, study)
    assert counts == {pair: target for pair in counts} and len(counts) == 6
    # The idle sign-ups wake up and answer: refused, the pairs stay at their target (the bound).
    for token, trial in hoarders[:20]:
        r = answer(client, token, trial, 3)
        assert r.status_code == 409 and r.json()["reason"] == "pair_full", r.text
    assert max(_main_counts(session, study).values()) == target
