"""The headline intervals (two-way cluster-robust, app/statistics/robust.py) and the independent-votes ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from app import statistics as st
from app.statistics import robust
from app.statistics.simulation import SimulatedStudy, simulate_rows
from tests.test_statistics import row


def by_hand(a, b, participant, prompt, stratum):
    """V_P + V_Q - V_PQ with plain loops: cluster totals of the linearised residuals."""
    theta = sum(a) / sum(b)
    e = [(ai - theta * bi) / sum(b) for ai, bi in zip(a, b)]

    def part(keys, strata):
        totals, stratum_of = {}, {}
        for k, h, ei in zip(keys, strata, e):
            totals[k] = totals.get(k, 0.0) + ei
            stratum_of[k] = h
        v = 0.0
        for h in set(stratum_of.values()):
            members = [totals[k] for k in totals if stratum_of[k] == h]
            g = len(members)
            if g > 1:
                mean = sum(members) / g
                v += g / (g - 1) * sum((t - mean) ** 2 for t in members)
        return v

    v_p = part(participant, [0] * len(e))
    v_q = part(prompt, stratum)
    v_pq = part(list(zip(participant, prompt)), stratum)
    return theta, v_p + v_q - v_pq


def test_robust_variance_matches_a_hand_computation():
    rng = np.random.default_rng(3)
    n = 300
    participant = rng.integers(0, 12, n)
    prompt = rng.integers(0, 9, n)
    stratum = prompt % 3  # a prompt belongs to one stratum
    scores = rng.integers(-2, 3, n)
    for name, (a, b) in robust.ratio_parts(scores).items():
        keep = b != 0 if name == "win_rate" else np.ones(n, bool)
        theta, v, df = robust.robust_variance(a[keep], b[keep], participant[keep], prompt[keep], stratum[keep])
        t_hand, v_hand = by_hand(a[keep].tolist(), b[keep].tolist(), participant[keep].tolist(),
                                 prompt[keep].tolist(), stratum[keep].tolist())
        assert theta == pytest.approx(t_hand) and v == pytest.approx(v_hand, rel=1e-9)
        assert 1 <= df
    out = robust.robust_intervals(scores, participant, prompt, stratum)
    win = out["win_rate"]
    half = sps.t.ppf(0.975, win["df"]) * win["se"]
    assert (win["ci_low"], win["ci_high"]) == (pytest.approx(win["estimate"] - half), pytest.approx(win["estimate"] + half))


def test_strata_are_fixed_prompts_vary_only_within_them():
    """Issue 9.4: two strata with different but internally constant prompt means add no prompt variance."""
    participant = np.repeat(np.arange(10), 4)
    prompt = np.tile([0, 1, 2, 3], 10)
    stratum = prompt // 2
    scores = np.where(stratum == 0, 1, -1)  # every vote in stratum 0 is +1, in stratum 1 is -1
    _, parts = robust.variance_parts(scores.astype(float), np.ones(40), participant, prompt, stratum)
    assert parts[1][0] == pytest.approx(0.0, abs=1e-15) and parts[1][1] == 2  # V_Q, df = 4 prompts - 2 strata
    # Unstratified, the same prompts would count the strata's difference as prompt variance.
    _, pooled = robust.variance_parts(scores.astype(float), np.ones(40), participant, prompt, np.zeros(40))
    assert pooled[1][0] > 0.1


def test_only_participants_and_prompts_with_preference_votes_count():
    """Issue 9.4: people and prompts seen only on gold trials change neither interval."""
    rows = simulate_rows(SimulatedStudy(n_participants=15, n_prompts=12, trials_per_participant=8), seed=2)
    extra = [row(f"gold-only-{i}", f"gq{i}", 2, gold=True, stratum="low") for i in range(10)]
    a = st.compute_statistics(rows, draws=200, seed=4)["results"]["all"]["overall"]
    b = st.compute_statistics(rows + extra, draws=200, seed=4)["results"]["all"]["overall"]
    for name in ("win_rate", "tie_half_rate", "mean_score"):
        assert a[name] == b[name]
    assert a["n_participants"] == 15


def test_stratified_bootstrap_keeps_each_strata_prompt_count():
    strata = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    _, wq = st.bootstrap_weights(5, 9, 300, seed=1, prompt_strata=strata)
    for h, size in ((0, 3), (1, 2), (2, 4)):
        assert np.all(wq[:, strata == h].sum(axis=1) == size)
    assert wq[:, strata == 0].std() > 0  # still random within the stratum


def test_tie_half_independent_interval_is_the_t_interval_of_vote_values_and_covers():
    """Issue 9.2: each vote is worth 1, 1/2 or 0; not 2n Bernoulli half-trials."""
    rows = [row(f"p{i}", f"q{i}", s) for i, s in enumerate([2, 1, 0, 0, -1, 1, 0, 2, -2, 1, 0, 1])]
    got = st.compute_statistics(rows, draws=20)["results"]["all"]["overall"]["tie_half_rate"]["ci_independent_votes"]
    v = np.array([1, 1, 0.5, 0.5, 0, 1, 0.5, 1, 0, 1, 0.5, 1])
    lo, hi = sps.t.interval(0.95, v.size - 1, loc=v.mean(), scale=sps.sem(v))
    assert (got["low"], got["high"]) == (pytest.approx(lo), pytest.approx(hi))
    # Independent votes (P(win, tie, loss) = .45, .3, .25), 60 per study: coverage near 95%, the
    # 2n-half-trials interval under-covered. 2000 studies: Monte Carlo SE 0.005.
    rng = np.random.default_rng(0)
    truth = 0.45 + 0.5 * 0.3
    values = rng.choice([1.0, 0.5, 0.0], p=[0.45, 0.3, 0.25], size=(2000, 60))
    hits = []
    for x in values:
        lo, hi = st.estimates._t_interval(x, 0.95)
        hits.append(lo <= truth <= hi)
    assert 0.935 <= np.mean(hits) <= 0.965


def test_one_participant_on_one_prompt_has_no_interval():
    out = st.compute_statistics([row("a", "q1", 1), row("a", "q1", 2, pair="other-seed")], draws=10)
    win = out["results"]["all"]["overall"]["win_rate"]
    assert win["estimate"] == 1.0 and win["ci_low"] is None and win["ci_high"] is None
