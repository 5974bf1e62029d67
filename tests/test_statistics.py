"""Every statistic of app.statistics against scipy, krippendorff or a hand computation."""

from __future__ import annotations

import itertools
import json

import krippendorff
import numpy as np
import pytest
from scipy import stats as sps

from app import statistics as st
from app.statistics.simulation import SimulatedStudy, simulate_rows


def row(participant, prompt, score, side="left", *, pair=None, gold=False, repeat=False, ms=2000,
        comparison="cfg-vs-sfg", stratum="middle"):
    """One export row; `choice` is derived from score and side the way the server shows it."""
    choice = 3 - score if side == "left" else 3 + score
    return {
        "study": "s", "study_version": 1, "participant": participant, "external_ids": {},
        "pair": pair or f"{comparison}/{prompt}", "pair_set": 1, "prompt_id": prompt, "prompt": f"text {prompt}",
        "stratum": stratum, "seed": 0, "treatment_side": side, "choice": choice, "score": score,
        "is_gold": gold, "is_repeat": repeat, "presented_at": None, "answered_at": None,
        "response_ms": ms, "comparison": comparison,
    }


# Three participants, four prompts; scores chosen by hand.
FIXED_SCORES = {
    ("a", "q1"): 2, ("a", "q2"): 1, ("a", "q3"): 0, ("a", "q4"): -1,
    ("b", "q1"): 1, ("b", "q2"): 2, ("b", "q3"): 1, ("b", "q4"): 0,
    ("c", "q1"): -2, ("c", "q2"): 1, ("c", "q3"): 2, ("c", "q4"): 1,
}


def fixed_rows():
    rows = []
    for i, ((p, q), s) in enumerate(FIXED_SCORES.items()):
        rows.append(row(p, q, s, "left" if i % 2 else "right", stratum="low" if q in ("q1", "q2") else "high",
                        comparison="A" if q != "q4" else "B"))
    # Quality-control rows that must not enter the preference results.
    rows.append(row("a", "q9", 2, "left", gold=True))   # passed gold
    rows.append(row("b", "q9", -1, "right", gold=True))  # failed gold
    rows.append(row("a", "q1", 1, "right", repeat=True, comparison="A"))  # same direction as 2
    rows.append(row("b", "q4", 1, "left", repeat=True, comparison="B"))   # 0 -> 1: different direction
    return rows


def test_distribution_and_point_estimates_by_hand():
    out = st.compute_statistics(fixed_rows(), draws=200, seed=1)
    overall = out["results"]["all"]["overall"]
    scores = np.array(list(FIXED_SCORES.values()))
    d = overall["distribution"]
    assert d["n"] == 12
    assert d["counts"] == {"-2": 1, "-1": 1, "0": 2, "1": 5, "2": 3}
    assert d["treatment_preferred"] == pytest.approx(8 / 12)
    assert d["no_preference"] == pytest.approx(2 / 12)
    assert d["baseline_preferred"] == pytest.approx(2 / 12)
    assert d["treatment_much_better"] == pytest.approx(3 / 12)
    assert d["baseline_much_better"] == pytest.approx(1 / 12)
    assert d["treatment_strong_within_preferred"] == pytest.approx(3 / 8)
    assert overall["win_rate"]["estimate"] == pytest.approx(8 / 10)
    assert overall["tie_half_rate"]["estimate"] == pytest.approx((8 + 1) / 12)
    assert overall["mean_score"]["estimate"] == pytest.approx(scores.mean())
    assert overall["n_participants"] == 3 and overall["n_prompts"] == 4 and overall["n_pairs"] == 4
    assert overall["ratings_per_pair"] == {"mean": 3.0, "min": 3, "max": 3}
    # Groups: comparison A has prompts q1..q3, B has q4; strata low = q1,q2.
    per_comp = out["results"]["all"]["per_comparison"]
    assert set(per_comp) == {"A", "B"}
    assert per_comp["B"]["distribution"]["counts"] == {"-2": 0, "-1": 1, "0": 1, "1": 1, "2": 0}
    assert per_comp["B"]["win_rate"]["estimate"] == pytest.approx(0.5)
    low = out["results"]["all"]["per_stratum"]["low"]
    assert low["mean_score"]["estimate"] == pytest.approx(np.mean([2, 1, 1, 2, -2, 1]))
    assert out["design"]["n_gold"] == 2 and out["design"]["n_repeats"] == 2
    json.dumps(out, allow_nan=False)  # JSON-ready: no NaN, no numpy types


def test_vote_level_tests_match_scipy():
    scores = np.array(list(FIXED_SCORES.values()))
    prompts = np.array([q for _, q in FIXED_SCORES])
    tests = st.significance_tests(scores, prompts)
    # Issue 23: the independent-votes tests are withdrawn (p_value None, never shown as evidence); the
    # number they would give is kept under p_value_assuming_independence and still matches scipy.
    for t in (tests["sign_test"], tests["wilcoxon"], tests["prompt_level"]["wilcoxon"], tests["prompt_level"]["t_test"]):
        assert t["p_value"] is None and t["shown_as_evidence"] is False and "independent" in t["withdrawn"]
    assert tests["sign_test"]["wins"] == 8 and tests["sign_test"]["losses"] == 2
    assert tests["sign_test"]["p_value_assuming_independence"] == pytest.approx(sps.binomtest(8, 10, 0.5).pvalue)
    assert "independent" in tests["sign_test"]["assumption"]
    # 12 votes with ties and zeros: exact, the same as scipy's (slow) permutation test over all sign flips.
    assert st.wilcoxon_method(scores) == "exact" and tests["wilcoxon"]["method"] == "exact"
    assert tests["wilcoxon"]["p_value_assuming_independence"] == pytest.approx(all_flips_p(scores))
    assert "independent" in tests["wilcoxon"]["assumption"]
    means = np.array([np.mean([2, 1, -2]), np.mean([1, 2, 1]), np.mean([0, 1, 2]), np.mean([-1, 0, 1])])
    pl = tests["prompt_level"]
    assert pl["n_prompts"] == 4
    assert pl["wilcoxon"]["p_value_assuming_independence"] == pytest.approx(all_flips_p(means))
    assert st.wilcoxon_method(np.array([0.5, -1.0, 2.0])) == "exact"
    assert pl["t_test"]["p_value_assuming_independence"] == pytest.approx(sps.ttest_1samp(means, 0).pvalue)


def test_shown_tests_use_the_headline_intervals_t_statistic():
    rows = simulate_rows(SimulatedStudy(n_participants=20, n_prompts=12, trials_per_participant=8, effect=0.2), seed=4)
    overall = st.compute_statistics(rows, draws=20)["results"]["all"]["overall"]
    for name, null, lo, span in (("win_rate", 0.5, 0.0, 1.0), ("mean_score", 0.0, -2.0, 4.0)):
        est, test = overall[name], overall["tests"][name]
        # on the interval's arcsine-square-root scale of (theta - lo) / span (issue 23)
        u, u0 = (est["estimate"] - lo) / span, (null - lo) / span
        t = (np.arcsin(np.sqrt(u)) - np.arcsin(np.sqrt(u0))) / (est["se"] / span / (2 * np.sqrt(u * (1 - u))))
        assert test["statistic"] == pytest.approx(t) and test["df"] == pytest.approx(est["df"])
        assert test["shown_as_evidence"] is True
        # the p-value is the larger of t(df)'s and the wild cluster bootstrap's (tests/test_wild.py checks
        # the bootstrap draw by draw): significant only when the interval excludes the null and the bootstrap agrees
        parts = test["p_value_parts"]
        assert parts["t_df"] == pytest.approx(2 * sps.t.sf(abs(t), est["df"]))
        assert 1 / 1000 <= parts["wild_bootstrap"] <= 1 and test["bootstrap_draws"] == 999
        assert test["p_value"] == max(parts["t_df"], parts["wild_bootstrap"])
        assert test["interval_excludes_null"] == (not est["ci_low"] <= null <= est["ci_high"])
        assert test["agrees_with_interval"] == ((test["p_value"] < 0.05) == test["interval_excludes_null"])
        if test["p_value"] < 0.05:
            assert test["interval_excludes_null"]


def test_holm_adjusted_p_values_next_to_raw_ones_and_a_primary_comparison():
    from statsmodels.stats.multitest import multipletests

    rows = []
    for i, (label, effect) in enumerate((("A", 0.5), ("B", 0.1), ("C", 0.25))):
        study = SimulatedStudy(n_participants=20, n_prompts=12, trials_per_participant=8, effect=effect,
                               comparisons=(label,))
        rows += [dict(r, participant=f"{label}{r['participant']}") for r in simulate_rows(study, seed=i)]
    out = st.compute_statistics(rows, draws=20, primary_comparison="B")["results"]["all"]
    comps = out["per_comparison"]
    raw = [comps[k]["tests"]["win_rate"]["p_value"] for k in "ABC"]
    expected = multipletests(raw, method="holm")[1]
    # Holm by hand: sorted p times (m - rank), running maximum, capped at 1.
    order = np.argsort(raw)
    by_hand = np.empty(3)
    running = 0.0
    for rank, j in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * raw[j]))
        by_hand[j] = running
    for k, e, h in zip("ABC", expected, by_hand):
        assert comps[k]["tests"]["win_rate"]["p_holm"] == pytest.approx(e) == pytest.approx(h)
        assert comps[k]["tests"]["win_rate"]["p_holm"] >= comps[k]["tests"]["win_rate"]["p_value"]
        assert comps[k]["primary"] == (k == "B")
    assert out["multiplicity"]["primary"] == "B" and out["multiplicity"]["family"] == ["A", "B", "C"]
    assert out["overall"]["tests"]["win_rate"]["p_holm"] is None  # pooled over different comparisons
    assert all(g["role"] == "secondary" for g in out["per_stratum"].values())
    single = st.compute_statistics(fixed_rows()[:8], draws=20)["results"]["all"]
    only = next(iter(single["per_comparison"]))
    assert single["multiplicity"]["primary"] == only


def all_flips_p(x):
    """Reference two-sided p of the Pratt signed-rank test: every one of the 2^m sign flips listed."""
    x = np.asarray(x, dtype=float)
    ranks = sps.rankdata(np.abs(x))[x != 0]
    signs = np.array(list(itertools.product((0, 1), repeat=ranks.size)))
    t_null, t_obs, centre = signs @ ranks, ranks[x[x != 0] > 0].sum(), ranks.sum() / 2
    return np.mean(np.abs(t_null - centre) >= abs(t_obs - centre) - 1e-9)


def test_wilcoxon_is_exact_with_ties_up_to_20_values_and_says_which():
    """Issue 9.3: ten prompt means with ties and a zero: exact p, not the normal approximation."""
    means = np.array([0.5, 1.0, -0.5, 1.0, 0.0, 1.5, 0.5, -1.0, 2.0, 1.0])
    exact = all_flips_p(means)
    approx = sps.wilcoxon(means, zero_method="pratt", method="approx").pvalue
    out = st.significance_tests(np.repeat(means, 3), np.repeat(np.arange(10), 3))["prompt_level"]["wilcoxon"]
    assert out["method"] == "exact" and "exact" in out["test"]
    assert out["p_value_assuming_independence"] == pytest.approx(exact, abs=1e-12) and abs(exact - approx) > 0.01
    # scipy's permutation test enumerates all sign flips too (slowly: only a small sample here).
    small = np.array([0.5, 1.0, -0.5, 1.0, 0.0, 1.5])
    assert st.pratt_exact_pvalue(small)[1] == pytest.approx(
        sps.wilcoxon(small, zero_method="pratt", method=sps.PermutationMethod(n_resamples=10**4)).pvalue)
    for seed in range(5):  # random samples with ties and zeros, n = 5..17
        x = np.round(np.random.default_rng(seed).normal(0.3, 1, 5 + 3 * seed) * 2) / 2
        assert st.pratt_exact_pvalue(x)[1] == pytest.approx(all_flips_p(x))
    big = np.random.default_rng(0).normal(0.2, 1, 21)
    out = st.significance_tests(big, np.arange(21))["prompt_level"]["wilcoxon"]
    assert out["method"] == "approx" and "approximation" in out["test"]
    assert out["p_value_assuming_independence"] == pytest.approx(
        sps.wilcoxon(big, zero_method="pratt", method="approx").pvalue)


def test_degenerate_inputs_give_none_not_errors():
    tests = st.significance_tests(np.zeros(5), np.array(["q"] * 5))
    assert tests["sign_test"]["p_value_assuming_independence"] is None
    assert tests["wilcoxon"]["p_value_assuming_independence"] is None
    assert st.point_estimates(np.array([0, 0]))["win_rate"] is None
    out = st.compute_statistics([], draws=10)
    assert out["results"]["all"]["overall"] is None
    json.dumps(out, allow_nan=False)


def test_quality_control_by_hand():
    r = st.ratings_from_rows(fixed_rows())
    q = st.quality_summary(r, min_response_ms=None)
    # Side bias over preference rows, as shown: choices 1,2 are left.
    choices = [3 - s if i % 2 else 3 + s for i, s in enumerate(FIXED_SCORES.values())]
    left = sum(c <= 2 for c in choices)
    right = sum(c >= 4 for c in choices)
    assert q["side_bias"]["left"] == left and q["side_bias"]["right"] == right
    assert q["side_bias"]["p_value"] == pytest.approx(sps.binomtest(left, left + right, 0.5).pvalue)
    assert q["consistency"]["n_repeats"] == 2
    assert q["consistency"]["same_direction"] == pytest.approx(0.5)
    assert q["consistency"]["exact"] == pytest.approx(0.0)
    # Consistency: a repeat agrees when within one step (default): 2 -> 1 and 0 -> 1 both do.
    assert q["consistency"]["tolerance"] == 1 and q["consistency"]["within_tolerance"] == pytest.approx(1.0)
    assert q["consistency"]["per_participant_counts"] == {"1": 2}
    exact = st.quality_summary(r, min_response_ms=None, tolerance=0)
    assert exact["consistency"]["per_participant_counts"] == {"0": 2}
    assert q["gold"] == {"n": 2, "pass_rate": 0.5}
    by_id = {p["participant"]: p for p in q["participants"]}
    assert by_id["a"]["consistency"] == 1.0 and by_id["b"]["consistency"] == 1.0
    assert by_id["c"]["consistency"] is None and by_id["c"]["gold_pass_rate"] is None
    assert by_id["a"]["gold_pass_rate"] == 1.0 and by_id["b"]["gold_pass_rate"] == 0.0


def test_krippendorff_alpha_matches_reliability_matrix_form():
    r = st.ratings_from_rows(fixed_rows())
    # Raters x units matrix built independently of the value-count form used by the module.
    participants, prompts = ["a", "b", "c"], ["q1", "q2", "q3", "q4"]
    data = np.array([[FIXED_SCORES[(p, q)] for q in prompts] for p in participants], dtype=float)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=[-2, -1, 0, 1, 2])
    got = st.krippendorff_alpha(r)
    assert got["n_pairs"] == 4 and got["n_ratings"] == 12
    assert got["alpha"] == pytest.approx(expected)
    # Perfect agreement: alpha = 1.
    agree = [row(p, q, s) for p in "abc" for q, s in (("q1", 2), ("q2", -1), ("q3", 0))]
    assert st.krippendorff_alpha(st.ratings_from_rows(agree))["alpha"] == pytest.approx(1.0)


def test_response_times_match_numpy():
    ms = np.array([100, 250, 900, 1200, 3000, 4500, 8000], dtype=float)
    out = st.response_times(ms, min_response_ms=1000)
    assert out["median_ms"] == pytest.approx(np.median(ms))
    assert out["q1_ms"] == pytest.approx(np.percentile(ms, 25))
    assert out["p90_ms"] == pytest.approx(np.percentile(ms, 90))
    assert out["mean_ms"] == pytest.approx(ms.mean())
    assert out["share_under_min"] == pytest.approx(3 / 7)


def test_crossed_bootstrap_matches_explicit_vote_weights():
    rng = np.random.default_rng(5)
    n, P, Q, B = 300, 12, 9, 25
    part, prompt = rng.integers(0, P, n), rng.integers(0, Q, n)
    scores = rng.integers(-2, 3, n)
    wp, wq = st.bootstrap_weights(P, Q, B, seed=11)
    assert wp.shape == (B, P) and wq.shape == (B, Q)
    assert np.all(wp.sum(1) == P) and np.all(wq.sum(1) == Q)
    got = st.crossed_bootstrap_estimates(part, prompt, scores, wp, wq)
    for b in range(B):
        w = wp[b, part].astype(float) * wq[b, prompt]  # a vote's multiplicity in draw b
        wins, dec = (w * (scores > 0)).sum(), (w * (scores != 0)).sum()
        assert got["win_rate"][b] == pytest.approx(wins / dec, rel=1e-5)
        assert got["tie_half_rate"][b] == pytest.approx((wins + 0.5 * (w.sum() - dec)) / w.sum(), rel=1e-5)
        assert got["mean_score"][b] == pytest.approx((w * scores).sum() / w.sum(), rel=1e-5)
    # Weights of one copy each reproduce the point estimate.
    ones = st.crossed_bootstrap_estimates(part, prompt, scores, np.ones((1, P), np.float32), np.ones((1, Q), np.float32))
    assert ones["win_rate"][0] == pytest.approx(st.point_estimates(scores)["win_rate"])


def test_percentile_interval_and_seed_recorded():
    draws = np.arange(1001, dtype=float)
    lo, hi = st.percentile_interval(np.concatenate([draws, [np.nan]]))
    assert (lo, hi) == (pytest.approx(25.0), pytest.approx(975.0))
    rows = simulate_rows(SimulatedStudy(n_participants=15, n_prompts=10, trials_per_participant=8), seed=3)
    a = st.compute_statistics(rows, draws=100, seed=42)
    b = st.compute_statistics(rows, draws=100, seed=42)
    c = st.compute_statistics(rows, draws=100, seed=43)
    assert a["bootstrap"]["seed"] == 42 and a["bootstrap"]["draws"] == 100
    win = lambda s: s["results"]["all"]["overall"]["win_rate"]  # noqa: E731
    assert win(a) == win(b)
    # The seed drives the bootstrap cross-check; the headline interval is analytic.
    assert win(a)["ci_bootstrap"]["low"] != win(c)["ci_bootstrap"]["low"]
    assert (win(a)["ci_low"], win(a)["ci_high"]) == (win(c)["ci_low"], win(c)["ci_high"])
    assert win(a)["ci_low"] < win(a)["estimate"] < win(a)["ci_high"]
    assert win(a)["ci_bootstrap"]["low"] < win(a)["estimate"] < win(a)["ci_bootstrap"]["high"]
    ind = win(a)["ci_independent_votes"]
    wins = sum(r["score"] > 0 for r in rows if not r["is_gold"] and not r["is_repeat"])
    dec = sum(r["score"] != 0 for r in rows if not r["is_gold"] and not r["is_repeat"])
    ci = sps.binomtest(wins, dec).proportion_ci(method="wilson")
    assert (ind["low"], ind["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_gold_and_repeats_stay_out_of_preference_results():
    base = [row("a", "q1", 1), row("b", "q1", -1)]
    qc = [row("a", "q2", 2, gold=True), row("a", "q1", 2, repeat=True)]
    a = st.compute_statistics(base, draws=20)["results"]["all"]["overall"]
    b = st.compute_statistics(base + qc, draws=20)["results"]["all"]["overall"]
    assert a["distribution"] == b["distribution"]
    assert a["win_rate"]["estimate"] == b["win_rate"]["estimate"] == 0.5


RULES = {"fail_gold": True, "min_gold_pass_rate": 0.5, "min_response_ms": 800, "max_fast_share": 0.5,
         "straight_lining": True, "min_consistency": 0.3, "max_side_bias": 0.9}


def test_always_left_and_too_fast_participants_are_caught():
    study = SimulatedStudy(n_participants=30, n_prompts=40, trials_per_participant=20, gold_per_participant=2,
                           gold_pass_probability=1.0, repeats_per_participant=2, sd_noise=0.3)
    rows = simulate_rows(study, seed=7, always_left=1, too_fast=1)
    # Only the speed and side-bias rules: each must catch its participant and nobody else.
    only = {"min_response_ms": 800, "max_fast_share": 0.5, "max_side_bias": 0.9}
    out = st.compute_statistics(rows, exclusion_rules=only, draws=50, seed=1)
    assert [(s["rule"], s["participants"]) for s in out["exclusions"]["steps"]] == [
        ("too_fast", ["p0028"]), ("side_bias", ["p0029"])]
    assert out["exclusions"]["kept"] == [f"p{i:04d}" for i in range(28)]
    # All rules, in order: the always-left participant (who answers 1 or 2, so is no
    # straight-liner) is caught by some rule, the fast one by the speed rule.
    out = st.compute_statistics(rows, exclusion_rules=RULES, draws=50, seed=1)
    steps = {s["rule"]: s for s in out["exclusions"]["steps"]}
    assert [s["rule"] for s in out["exclusions"]["steps"]] == list(st.RULE_ORDER)
    assert steps["too_fast"]["participants"] == ["p0028"]
    assert "p0029" in out["exclusions"]["excluded"]
    assert "p0029" not in steps["straight_lining"]["participants"]
    # Sequential counts add up.
    assert out["exclusions"]["n_before"] - sum(s["removed"] for s in out["exclusions"]["steps"]) == out["exclusions"]["n_after"]
    assert steps["side_bias"]["remaining"] == out["exclusions"]["n_after"]
    after = out["results"]["after_exclusions"]["overall"]
    assert after["n_participants"] == out["exclusions"]["n_after"] < out["results"]["all"]["overall"]["n_participants"]
    # Without rules nothing is removed and both result sets are the same.
    plain = st.compute_statistics(rows, draws=50, seed=1)
    assert plain["exclusions"]["steps"] == [] and plain["results"]["after_exclusions"] == plain["results"]["all"]


def test_each_rule_on_hand_made_participants():
    rows = []
    for i in range(6):  # honest, varied answers
        rows += [row("ok", f"q{i}", [2, -1, 0, 1, -2, 1][i], "left" if i % 2 else "right")]
    rows += [row("gold", f"q{i}", 1, "left" if i % 2 else "right") for i in range(6)]
    rows += [row("gold", "g1", -2, "left", gold=True)]  # failed gold
    rows += [row("flat", f"q{i}", 0) for i in range(6)]  # always "no preference"
    rows += [row("incons", f"q{i}", 2, "left" if i % 2 else "right") for i in range(6)]
    rows += [row("incons", "q0", -2, "left", repeat=True)]  # repeat reversed
    r = st.ratings_from_rows(rows)
    rules = st.normalise_rules({"fail_gold": True, "straight_lining": True, "min_consistency": 0.5,
                                "consistency_min_repeats": 1})
    ex = st.apply_exclusions(st.participant_quality(r, None), rules)
    assert [(s["rule"], s["participants"]) for s in ex["steps"]] == [
        ("fail_gold", ["gold"]), ("straight_lining", ["flat"]), ("low_consistency", ["incons"])]
    assert ex["kept"] == ["ok"]


def test_bad_input_is_reported_clearly():
    good = row("a", "q1", 1)
    with pytest.raises(st.StatisticsInputError, match="missing column"):
        st.compute_statistics([{k: v for k, v in good.items() if k != "score"}])
    with pytest.raises(st.StatisticsInputError, match="row 1: choice 7"):
        st.compute_statistics([good, dict(good, choice=7)])
    with pytest.raises(st.StatisticsInputError, match="score must be an integer"):
        st.compute_statistics([dict(good, score="x")])
    with pytest.raises(st.StatisticsInputError, match="row 2: treatment_side must be 'left' or 'right', got 'top'"):
        st.compute_statistics([good, good, dict(good, treatment_side="top")])
    with pytest.raises(st.StatisticsInputError, match="unknown exclusion rule"):
        st.compute_statistics([good], exclusion_rules={"max_sidebias": 0.9})
    with pytest.raises(st.StatisticsInputError, match="max_side_bias must be a number between 0.5 and 1"):
        st.compute_statistics([good], exclusion_rules={"max_side_bias": 9})


def test_csv_style_strings_are_accepted():
    rows = [{k: ("true" if v is True else "false" if v is False else str(v)) for k, v in r.items()} for r in fixed_rows()]
    a = st.compute_statistics(rows, draws=30, seed=2)
    b = st.compute_statistics(fixed_rows(), draws=30, seed=2)
    assert a["results"]["all"]["overall"]["distribution"] == b["results"]["all"]["overall"]["distribution"]
    assert a["results"]["all"]["quality"]["gold"] == b["results"]["all"]["quality"]["gold"]


def test_rule_switches_follow_the_study_config():
    """None / absent switches a rule off; the speed rule falls back to the study's minimum time."""
    rows = [row("slow", f"q{i}", [1, -1, 0, 2, -2, 1][i], "left" if i % 2 else "right", ms=3000) for i in range(6)]
    rows += [row("fast", f"q{i}", [1, -1, 0, 2, -2, 1][i], "left" if i % 2 else "right", ms=200) for i in range(6)]
    off = st.compute_statistics(rows, exclusion_rules={"min_response_ms": 800, "max_fast_share": None}, draws=10)
    assert off["exclusions"]["steps"] == []
    study_min = st.compute_statistics(rows, exclusion_rules={"min_response_ms": None, "max_fast_share": 0.5},
                                      min_response_ms=800, draws=10)
    assert [(s["rule"], s["participants"]) for s in study_min["exclusions"]["steps"]] == [("too_fast", ["fast"])]
    assert "800 ms" in study_min["exclusions"]["steps"][0]["description"]
    # Without any threshold the speed rule cannot apply, and the report says so.
    steps = st.compute_statistics(rows, exclusion_rules={"max_fast_share": 0.5}, draws=10)["exclusions"]["steps"]
    assert [(s["rule"], s["applied"], s["removed"]) for s in steps] == [("too_fast", False, 0)]
    assert steps[0]["description"].startswith("not applied: max_fast_share is set but there is no min_response_ms")


def test_cell_sums_add_up_to_each_groups_own_bootstrap():
    """Groups assembled from (comparison x stratum) cells equal the bootstrap of the group alone."""
    rng = np.random.default_rng(9)
    n, P, Q, B = 400, 15, 12, 30
    part, prompt, scores = rng.integers(0, P, n), rng.integers(0, Q, n), rng.integers(-2, 3, n)
    cell = rng.integers(0, 4, n)
    wp, wq = st.bootstrap_weights(P, Q, B, seed=3)
    cells, sums = st.crossed_bootstrap_sums(part, prompt, scores, wp, wq, cell)
    assert list(cells) == [0, 1, 2, 3] and sums.shape == (B, 4, st.N_COMPONENTS)
    for group in ([0], [1, 3], [0, 1, 2, 3]):
        sel = np.isin(cell, group)
        alone = st.crossed_bootstrap_estimates(part[sel], prompt[sel], scores[sel], wp, wq)
        combined = st.estimates_from_sums(sums[:, np.isin(cells, group)].sum(axis=1))
        for name in alone:
            np.testing.assert_allclose(combined[name], alone[name], rtol=1e-5)
    # Explicit check of one cell's first draw: weight = participant copies x prompt copies.
    sel = cell == 2
    w = wp[0, part[sel]].astype(float) * wq[0, prompt[sel]]
    np.testing.assert_allclose(sums[0, 2], [w.sum(), (w * (scores[sel] != 0)).sum(), (w * (scores[sel] > 0)).sum(),
                                            (w * scores[sel]).sum()], rtol=1e-5)


def test_results_do_not_depend_on_row_order():
    rows = simulate_rows(SimulatedStudy(n_participants=20, n_prompts=12, trials_per_participant=8,
                                        repeats_per_participant=1, gold_per_participant=1), seed=5)
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    rules = {"max_side_bias": 0.9, "min_consistency": 0.5}
    a = st.compute_statistics(rows, exclusion_rules=rules, draws=50, seed=1)
    b = st.compute_statistics(shuffled, exclusion_rules=rules, draws=50, seed=1)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
