"""The shown tests' p-values: the wild cluster bootstrap of the report's t statistic (app/statistics/wild.py)."""

from __future__ import annotations

import numpy as np
import pytest

from app import statistics as st
from app.statistics import robust, significance, wild
from app.statistics.significance import Clusters, cluster_tests
from app.statistics.simulation import SimulatedStudy, simulate_rows


def votes(n_participants: int, seed: int, effect: float = 0.0, heavy: bool = False):
    """Scores in -2..2 from participants with their own leanings over 12 prompts in 3 strata."""
    rng = np.random.default_rng(seed)
    counts = np.full(n_participants, 12)
    if heavy:
        counts[:3] = 60
    participant = np.repeat(np.arange(n_participants), counts)
    prompt = rng.integers(0, 12, participant.size)
    lean = rng.normal(effect, 0.8, n_participants)[participant] + rng.normal(0, 0.4, 12)[prompt]
    latent = lean + rng.normal(0, 1, participant.size)
    score = np.digitize(latent, [-1.5, -0.4, 0.4, 1.5]) - 2
    return score.astype(float), np.char.add("p", participant.astype(str)), prompt, prompt % 3


def by_loop(a, b, participant, prompt, stratum, null, name, w, pool=None, pool_stratum=None):
    """t* draw by draw: the report's own two_way + t_test on each draw's votes theta0 b + w_g (a - theta0 b)."""
    keep = b != 0
    a, b, participant, prompt, stratum = (np.asarray(x)[keep] for x in (a, b, participant, prompt, stratum))
    codes, _ = robust._dense(participant)
    e = a - null * b
    out = []
    for row in w:
        est = robust.two_way(null * b + row[codes] * e, b, participant, prompt, stratum, pool=pool,
                             pool_stratum=pool_stratum)
        out.append(robust.t_test(est, null, name)["statistic"])
    return np.array(out, dtype=float)


@pytest.mark.parametrize("n_participants", [5, 30])
@pytest.mark.parametrize("name,null", [("win_rate", 0.5), ("mean_score", 0.0), ("tie_half_rate", 0.5)])
def test_every_draw_is_the_reports_statistic_on_that_draws_votes(n_participants, name, null):
    score, participant, prompt, stratum = votes(n_participants, seed=n_participants, heavy=True)
    a, b = robust.ratio_parts(score)[name]
    keep = b != 0
    cols = (a[keep], b[keep], participant[keep], prompt[keep], stratum[keep])
    w = wild.weights(np.unique(cols[2]).size, 60)
    fast = wild.bootstrap_t(*cols, null, name, w)
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, by_loop(a, b, participant, prompt, stratum, null, name, w), rtol=1e-9, atol=1e-12)


def test_a_stratum_with_the_pooled_prompt_variance_holds_it_fixed_in_every_draw():
    score, participant, prompt, stratum = votes(20, seed=3)
    a, b = robust.ratio_parts(score)["win_rate"]
    keep = b != 0
    pool = robust.prompt_pool(a[keep], b[keep], participant[keep], prompt[keep], stratum[keep])
    m = keep & (stratum == 1)
    w = wild.weights(np.unique(participant[m]).size, 40)
    fast = wild.bootstrap_t(a[m], b[m], participant[m], prompt[m], stratum[m], 0.5, "win_rate", w,
                            pooled_vq=pool.part("1")[0])
    slow = by_loop(a[m], b[m], participant[m], prompt[m], stratum[m], 0.5, "win_rate", w, pool=pool, pool_stratum="1")
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, slow, rtol=1e-9)


def test_p_value_counts_the_draws_at_least_as_extreme_and_is_the_same_for_the_same_votes():
    score, participant, prompt, stratum = votes(16, seed=8, effect=0.25)
    a, b = robust.ratio_parts(score)["win_rate"]
    est = robust.two_way(a, b, participant, prompt, stratum)
    t = robust.t_test(est, 0.5)["statistic"]
    p = wild.p_value(a, b, participant, prompt, stratum, est, 0.5, "win_rate", draws=199)
    t_star = by_loop(a, b, participant, prompt, stratum, 0.5, "win_rate", wild.weights(16, 199))
    assert p == pytest.approx((1 + np.sum(np.abs(t_star) >= abs(t) * (1 - 1e-9))) / 200)
    # the same votes in another order: the same p-value (participants are taken in sorted order)
    order = np.random.default_rng(1).permutation(score.size)
    shuffled = (a[order], b[order], participant[order], prompt[order], stratum[order])
    assert wild.p_value(*shuffled, robust.two_way(*shuffled), 0.5, "win_rate", draws=199) == p
    assert wild.p_value(a, b, participant, prompt, stratum, est, 0.5, "win_rate", draws=199) == p


def test_weights_are_rademacher_from_twelve_participants_and_webbs_six_points_below():
    small, big = wild.weights(5), wild.weights(12)
    assert small.shape == (wild.DRAWS, 5) and big.shape == (wild.DRAWS, 12)
    np.testing.assert_allclose(np.unique(small), wild.WEBB)
    assert set(np.unique(big).tolist()) == {-1.0, 1.0}
    assert np.array_equal(wild.weights(12), big) and not big.flags.writeable
    assert abs(big.mean()) < 0.02 and abs((small * small).mean() - 1) < 0.02  # mean 0, variance 1


def test_five_participants_can_reject_which_sign_flips_alone_never_could(monkeypatch):
    """With Rademacher signs 5 participants have 32 patterns: the data's own pattern and its mirror
    give |t*| = |t|, so p >= about 2/32 whatever the data. Webb's six points let a clear effect reject."""
    score, participant, prompt, stratum = votes(5, seed=13, effect=1.2)
    a, b = robust.ratio_parts(score)["win_rate"]
    est = robust.two_way(a, b, participant, prompt, stratum)
    p = wild.p_value(a, b, participant, prompt, stratum, est, 0.5, "win_rate")
    assert robust.t_test(est, 0.5)["p_value"] < 0.01 and p < 0.01
    signs = np.where(np.random.default_rng(0).random((wild.DRAWS, 5)) < 0.5, -1.0, 1.0)
    monkeypatch.setattr(wild, "weights", lambda g, draws=wild.DRAWS: signs)
    assert wild.p_value(a, b, participant, prompt, stratum, est, 0.5, "win_rate") > 0.05


def test_no_interval_no_p_value_and_the_reason_says_why():
    score = np.array([2.0, 1.0, -1.0, 1.0])
    one = np.array(["p1"] * 4)
    prompt, stratum = np.array([0, 1, 2, 3]), np.zeros(4, dtype=int)
    win = robust.two_way(*robust.ratio_parts(score)["win_rate"], one, prompt, stratum)
    mean = robust.two_way(*robust.ratio_parts(score)["mean_score"], one, prompt, stratum)
    out = cluster_tests(win, mean, score, Clusters(one, prompt, stratum))
    for key in ("win_rate", "mean_score"):
        assert out[key]["p_value"] is None and "fewer than 2 participants" in out[key]["reason"]
        assert "interval_excludes_null" not in out[key]


def test_report_p_values_are_the_bootstrap_ones_overall_and_per_stratum():
    rows = simulate_rows(SimulatedStudy(n_participants=14, n_prompts=12, trials_per_participant=10, effect=0.3), seed=2)
    res = st.compute_statistics(rows, draws=20)["results"]["all"]
    r = st.ratings_from_rows(rows)
    pref = st.preference_mask(r)
    a, b = robust.ratio_parts(r.score[pref])["win_rate"]
    est = robust.two_way(a, b, r.participant[pref], r.prompt[pref], r.stratum[pref])
    boot = wild.p_value(a, b, r.participant[pref], r.prompt[pref], r.stratum[pref], est, 0.5, "win_rate")
    shown = res["overall"]["tests"]["win_rate"]
    assert shown["p_value_parts"]["wild_bootstrap"] == boot
    assert shown["p_value"] == max(boot, robust.t_test(est, 0.5)["p_value"])
    for group in res["per_stratum"].values():
        test = group["tests"]["win_rate"]
        assert test["p_value"] is None or test["p_value"] == max(test["p_value_parts"]["t_df"],
                                                                 test["p_value_parts"]["wild_bootstrap"])
        assert "wild cluster bootstrap" in test["test"]


def test_the_shown_test_is_significant_only_when_the_interval_and_the_bootstrap_both_are():
    """Over many small studies with an effect near the line: p < 0.05 exactly when both references
    reject, and never while the interval holds the null."""
    seen = {"both": 0, "interval only": 0}
    for seed in range(40):
        rows = simulate_rows(SimulatedStudy(n_participants=8, n_prompts=9, trials_per_participant=9, effect=0.35),
                             seed=seed)
        test = st.compute_statistics(rows, draws=20)["results"]["all"]["overall"]["tests"]["win_rate"]
        if test["p_value"] is None:
            continue
        t_rej, b_rej = test["p_value_parts"]["t_df"] < 0.05, test["p_value_parts"]["wild_bootstrap"] < 0.05
        assert (test["p_value"] < 0.05) == (t_rej and b_rej)
        assert test["interval_excludes_null"] == t_rej
        seen["both"] += t_rej and b_rej
        seen["interval only"] += t_rej and not b_rej
    assert seen["both"] > 0


def test_with_many_effective_clusters_the_test_is_t_df_and_the_bootstrap_is_not_run(monkeypatch):
    """df >= 50: t(df) holds there (balanced designs with 120-200 participants cover 0.941-0.957), so the
    999 bootstrap variance computations are skipped; below, they run."""
    calls = []
    real = significance.bootstrap_p_value
    monkeypatch.setattr(significance, "bootstrap_p_value", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = simulate_rows(SimulatedStudy(n_participants=150, n_prompts=90, trials_per_participant=12, effect=0.1),
                         seed=3)
    test = st.compute_statistics(rows, draws=20)["results"]["all"]["overall"]["tests"]["win_rate"]
    assert test["df"] >= significance.BOOTSTRAP_BELOW_DF
    assert test["p_value_parts"]["wild_bootstrap"] is None and test["bootstrap_draws"] == 0
    assert test["p_value"] == test["p_value_parts"]["t_df"] and "not run" in test["p_value_parts"]["note"]
    few = simulate_rows(SimulatedStudy(n_participants=12, n_prompts=12, trials_per_participant=10, effect=0.1), seed=3)
    calls.clear()
    test = st.compute_statistics(few, draws=20)["results"]["all"]["overall"]["tests"]["win_rate"]
    assert test["df"] < significance.BOOTSTRAP_BELOW_DF and test["p_value_parts"]["wild_bootstrap"] is not None
    assert calls


def test_the_report_marks_a_test_that_the_bootstrap_does_not_confirm():
    from app.reporting.report import render_report

    rows = simulate_rows(SimulatedStudy(n_participants=12, n_prompts=12, trials_per_participant=10, effect=0.3), seed=5)
    stats = st.compute_statistics(rows, draws=20)
    assert "†</span>" not in render_report(stats).split('<table class="tests">')[1]
    for res in stats["results"].values():
        res["overall"]["tests"]["win_rate"]["agrees_with_interval"] = False
    html = render_report(stats)
    assert 'title="the 95% interval reaches the other verdict">†</span>' in html
    assert "wild cluster bootstrap" in html
