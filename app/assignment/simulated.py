"""Simulated participants for a demo: seeded answers from a Bradley-Terry model on arm strengths.

`simulate_participants(session, study, n, strengths, seed)` signs up `n` participants (crowd id
`{"simulated": "sim-K"}`, so they are told apart from people in every export) and answers every
trial they are given through the same `next_trial` / `submit_answer` calls a real participant's
requests make: arm `a` beats arm `b` with probability 1 / (1 + exp(s_b - s_a)); a fifth of the
answers say "no preference"; gold checks are passed. Used by `sfgeval demo`, so a newcomer sees a
ranking at once; never by a real study.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy.orm import Session

from app.assignment.allocation import next_trial
from app.assignment.answers import submit_answer
from app.assignment.signup import create_participant
from app.store.models import Comparison, Study

SECONDS_PER_TRIAL = 6.0
TIE_SHARE = 0.2


def simulate_participants(session: Session, study: Study, n: int, strengths: dict[str, float], seed: int,
                          hold_minutes: float = 30.0) -> int:
    """Sign up `n` simulated participants and answer all their trials; returns the ratings stored."""
    rng = np.random.default_rng(seed)
    arms = {c.id: (c.pair_set.treatment_arm, c.pair_set.baseline_arm) for c in
            session.query(Comparison).filter(Comparison.study_id == study.id)}
    clock = datetime.now(timezone.utc)
    stored = 0
    for k in range(n):
        participant, _ = create_participant(session, study, {"simulated": f"sim-{k + 1}"}, clock)
        session.commit()
        while True:
            clock += timedelta(seconds=1)
            got = next_trial(session, participant, clock, hold_minutes)
            trial = got.trial
            if trial is None:
                break
            clock += timedelta(seconds=SECONDS_PER_TRIAL)
            treatment, baseline = arms.get(trial.comparison_id, (None, None))
            if trial.kind == "gold":
                wins = True
            else:
                gap = strengths.get(treatment, 0.0) - strengths.get(baseline, 0.0)
                wins = rng.random() < 1 / (1 + math.exp(-gap))
            if trial.kind != "gold" and rng.random() < TIE_SHARE:
                choice = 3
            else:
                strong = rng.random() < 0.5
                treatment_left = trial.treatment_side == "left"
                left_better = wins == treatment_left
                choice = (1 if strong else 2) if left_better else (5 if strong else 4)
            submit_answer(session, participant, trial.public_id, choice, str(uuid.uuid4()), clock,
                          client_response_ms=int(SECONDS_PER_TRIAL * 1000))
            stored += 1
    return stored
