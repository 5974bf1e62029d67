"""Calibration of the win-rate interval on seeded simulated studies with a known true preference.

Each simulated study draws fresh participants (each with their own bias towards the treatment)
and fresh prompts (each with its own effect), so the true win rate is the population value of
`SimulatedStudy.true_win_rate`. The crossed bootstrap must cover it in at least 90% of 200
studies; the interval that treats votes as independent (Wilson) must be shown to under-cover
when participant effects are strong. The loop calls the same functions `compute_statistics`
uses (checked below) on arrays, to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest

from app import statistics as st
from app.simulation import SimulatedStudy, simulate_arrays, simulate_rows

N_SIMULATIONS = 200
DRAWS = 300  # fewer than the report's 1,000 to keep the test fast; still enough for 2.5% tails
SMALL = dict(n_participants=30, n_prompts=30, trials_per_participant=15, strata=("all",))
MODERATE = SimulatedStudy(**SMALL, effect=0.4, sd_participant=0.5, sd_prompt=0.3, sd_noise=1.0)
STRONG_PARTICIPANTS = SimulatedStudy(**SMALL, effect=0.4, sd_participant=1.5, sd_prompt=0.3, sd_noise=0.5)


def win_rate_intervals(study: SimulatedStudy, seed: int) -> tuple[tuple, tuple]:
    """(crossed-bootstrap interval, independent-votes Wilson interval) for one simulated study."""
    a = simulate_arrays(study, seed=10_000 + seed)
    wp, wq = st.bootstrap_weights(study.n_participants, study.n_prompts, DRAWS, seed)
    boot = st.crossed_bootstrap_estimates(a["participant"], a["prompt"], a["score"], wp, wq)
    wins, decisive = int((a["score"] > 0).sum()), int((a["score"] != 0).sum())
    return st.percentile_interval(boot["win_rate"]), st.wilson_interval(wins, decisive)


def coverage(study: SimulatedStudy) -> tuple[float, float]:
    """(crossed-bootstrap coverage, independent-votes coverage) of the true win rate."""
    truth = study.true_win_rate
    hits = np.array([[lo <= truth <= hi for lo, hi in win_rate_intervals(study, i)] for i in range(N_SIMULATIONS)])
    crossed, independent = hits.mean(axis=0)
    return float(crossed), float(independent)


def test_array_path_is_the_one_compute_statistics_uses():
    rows = simulate_rows(MODERATE, seed=10_000 + 3)
    win = st.compute_statistics(rows, draws=DRAWS, seed=3)["results"]["all"]["overall"]["win_rate"]
    (lo, hi), (ilo, ihi) = win_rate_intervals(MODERATE, 3)
    assert (win["ci_low"], win["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert (win["ci_independent_votes"]["low"], win["ci_independent_votes"]["high"]) == (pytest.approx(ilo), pytest.approx(ihi))


def test_crossed_bootstrap_covers_with_moderate_participant_and_prompt_effects():
    crossed, independent = coverage(MODERATE)
    assert crossed >= 0.90, crossed
    assert crossed > independent


def test_independent_votes_interval_undercovers_when_participant_effects_are_strong():
    crossed, independent = coverage(STRONG_PARTICIPANTS)
    assert crossed >= 0.90, crossed
    # A nominal 95% interval that ignores who voted covers far less often.
    assert independent < 0.80, independent


def test_true_win_rate_matches_a_large_simulation():
    """The closed-form truth the coverage tests rely on agrees with a big simulated study."""
    study = SimulatedStudy(n_participants=2000, n_prompts=400, trials_per_participant=40, strata=("all",),
                           effect=0.4, sd_participant=0.5, sd_prompt=0.3)
    score = simulate_arrays(study, seed=1)["score"]
    assert (score > 0).sum() / (score != 0).sum() == pytest.approx(study.true_win_rate, abs=0.01)
