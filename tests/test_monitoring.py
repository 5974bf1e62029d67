"""Peeking-safe monitoring: boundaries, the clustered estimator, recommendations, and a fast
version of the simulation in benchmarks/monitoring.py (type-I error under peeking, savings)."""

from __future__ import annotations

import numpy as np
import pytest

from app.statistics.clustered import Design, Effects, clustered_win_rate, report_interval, simulate_batch
from app.statistics.monitoring import DESIGN_ALPHA_ONE_SIDED, BASELINE, TREATMENT, boundaries, first_stops, monitor, obf_spending
from app.statistics.monitoring_sim import Scenario, run, savings

SMALL = Design(n_strata=2, prompts_per_stratum=15, seeds_per_prompt=1, ratings_per_participant=15)
CLUSTERED = dict(tie_rate=0.2, sd_participant=0.5, sd_prompt=0.3, sd_pair=0.2)


def test_spending_function_spends_alpha_by_the_end():
    assert float(obf_spending(1.0)) == pytest.approx(0.025)
    t = np.linspace(0.05, 1, 20)
    assert np.all(np.diff(obf_spending(t)) > 0)
    assert float(obf_spending(0.2)) < 1e-4  # O'Brien-Fleming-type: almost nothing spent early


@pytest.mark.parametrize("k, expected", [
    # Lan-DeMets O'Brien-Fleming spending, equally spaced looks, one-sided 0.025
    # (Jennison & Turnbull 2000, gsDesign sfLDOF).
    (4, [4.3326, 2.9631, 2.3590, 2.0141]),
    (5, [4.8769, 3.3569, 2.6803, 2.2898, 2.0310]),
])
def test_boundaries_match_published_values(k, expected):
    looks, b = boundaries(10, 10 * k)
    assert looks.tolist() == [10 * (i + 1) for i in range(k)]
    assert b == pytest.approx(expected, abs=2e-3)


def test_boundaries_look_every_20_end_at_the_plan():
    looks, b = boundaries(20, 250)
    assert looks[-1] == 250 and looks[-2] == 240 and len(looks) == 13
    assert np.all(np.diff(b[np.isfinite(b)]) < 0)
    assert 1.96 < b[-1] < 2.25


def test_clustered_se_is_the_binomial_one_without_random_effects():
    effects = Effects(win_rate=0.6, tie_rate=0.0, sd_participant=0, sd_prompt=0)
    b = simulate_batch(SMALL, effects, 40, 400, np.random.default_rng(3))
    est = clustered_win_rate(b["participant"], b["prompt"], b["score"])
    n = 40 * 15
    assert np.nanmean(est.se) == pytest.approx(np.sqrt(0.24 / n), rel=0.05)
    assert np.std(est.win_rate) == pytest.approx(np.sqrt(0.24 / n), rel=0.1)


def test_clustered_se_tracks_the_spread_of_estimates_with_random_effects():
    b = simulate_batch(SMALL, Effects(win_rate=0.6, **CLUSTERED), 40, 400, np.random.default_rng(4))
    est = clustered_win_rate(b["participant"], b["prompt"], b["score"], looks=[200, 600])
    spread = np.std(est.win_rate, axis=0)
    assert np.nanmean(est.se, axis=0) == pytest.approx(spread, rel=0.12)
    # and is wider than the independent-votes one
    assert np.all(np.nanmean(est.se, axis=0) > np.sqrt(0.24 / np.array([200 * 0.8, 600 * 0.8])))


def test_looks_give_the_same_numbers_as_separate_calls():
    b = simulate_batch(SMALL, Effects(**CLUSTERED), 10, 3, np.random.default_rng(5))
    both = clustered_win_rate(b["participant"], b["prompt"], b["score"], looks=[60, 150])
    part = clustered_win_rate(b["participant"][:, :60], b["prompt"][:, :60], b["score"][:, :60])
    assert both.win_rate[:, 0] == pytest.approx(part.win_rate[:, 0])
    assert both.se[:, 0] == pytest.approx(part.se[:, 0])


def test_fast_estimator_is_the_report_interval_study_by_study():
    """Issue 23: one statistics core: the monitoring/planning estimator equals the report's, with strata,
    heavy raters and at every look."""
    from app.statistics import robust
    from app.statistics.clustered import heavy_rater_counts

    design = Design(n_strata=3, prompts_per_stratum=5, seeds_per_prompt=8, ratings_per_participant=10)
    b = simulate_batch(design, Effects(win_rate=0.6, **CLUSTERED), 40, 20, np.random.default_rng(6),
                       counts=heavy_rater_counts(40, 10))
    est = clustered_win_rate(b["participant"], b["prompt"], b["score"], looks=[60, 400, b["score"].shape[1]],
                             stratum=b["stratum"])
    for i in range(20):
        for j, n in enumerate(est.n_ratings):
            args = (b["participant"][i, :n], b["prompt"][i, :n], b["score"][i, :n])
            w, lo, hi = report_interval(*args, stratum=b["stratum"][i, :n])
            assert est.win_rate[i, j] == pytest.approx(w)
            if np.isnan(lo):
                assert np.isnan(est.se[i, j])
                continue
            low, high = robust.bounds(w, est.se[i, j], est.df[i, j], "win_rate", 0.95)
            assert (low, high) == (pytest.approx(lo), pytest.approx(hi))


def test_monitor_says_treatment_preferred_on_a_clear_study_and_records_the_first_stop():
    b = simulate_batch(SMALL, Effects(win_rate=0.75, **CLUSTERED), 40, 1, np.random.default_rng(7))
    out = monitor(b["participant"][0], b["prompt"][0], b["score"][0], planned=600)
    assert out["recommendation"] == TREATMENT
    stop = out["stop"]
    assert stop["recommendation"] == TREATMENT and stop["n_ratings"] == 20 * stop["look"]
    assert stop["statistic"]["z"] >= stop["statistic"]["boundary"]
    assert "boundary" in stop["rule"]
    # The vectorised rule used by the simulation finds the same look.
    looks, bounds = boundaries(20, 600, DESIGN_ALPHA_ONE_SIDED)
    est = clustered_win_rate(b["participant"], b["prompt"], b["score"], looks=looks.tolist())
    code, at = first_stops(est.win_rate, est.se, est.n_participants, est.n_prompts, bounds, 0.05, est.df)[0]
    assert (code, at + 1) == (1, stop["look"])


def test_monitor_says_continue_early_and_counts_more_ratings():
    b = simulate_batch(SMALL, Effects(win_rate=0.55, **CLUSTERED), 6, 1, np.random.default_rng(8))
    out = monitor(b["participant"][0], b["prompt"][0], b["score"][0], planned=1200)
    assert out["stop"] is None
    assert out["recommendation"].startswith("continue: about ")
    more = int(out["recommendation"].split()[2])
    assert 0 < more <= 1200 - 90 and (90 + more) % 20 == 0  # up to a planned look
    # Look 4 of 60: O'Brien-Fleming spends nothing yet, the repeated interval is unbounded.
    assert out["current"]["look"] == 4 and out["current"]["boundary"] is None and out["current"]["interval_low"] is None


def test_monitor_says_no_difference_when_the_interval_is_tight_around_half():
    b = simulate_batch(SMALL, Effects(win_rate=0.5, tie_rate=0.2), 400, 1, np.random.default_rng(9))
    out = monitor(b["participant"][0], b["prompt"][0], b["score"][0], planned=6000, look_every=100, margin=0.1)
    assert out["recommendation"] == "stop: no difference larger than 0.1"
    st = out["stop"]["statistic"]
    assert 0.4 < st["win_rate"] - st["boundary"] * st["se"] and st["win_rate"] + st["boundary"] * st["se"] < 0.6


def test_monitor_baseline_preferred_and_before_first_look():
    b = simulate_batch(SMALL, Effects(win_rate=0.25, **CLUSTERED), 40, 1, np.random.default_rng(10))
    assert monitor(b["participant"][0], b["prompt"][0], b["score"][0], planned=600)["recommendation"] == BASELINE
    early = monitor(b["participant"][0][:7], b["prompt"][0][:7], b["score"][0][:7], planned=600)
    assert early["recommendation"] == "continue: about 13 more ratings before the first look"


def test_peeking_after_every_20_ratings_keeps_type_one_error():
    """Fast version of benchmarks/monitoring.py: 400 null studies, 30 looks each."""
    res = run(Scenario(SMALL, Effects(win_rate=0.5, **CLUSTERED), n_participants=40), sims=400, seed=11)
    wrong = res["outcomes"]["treatment preferred"]
    assert wrong["rate"] + 2 * wrong["mc_error"] <= 0.05 + 0.02
    assert wrong["rate"] <= 0.05
    # Naive peeking (1.96 at every look) on the same studies is far worse: the boundaries matter.
    assert (np.nan_to_num(res["_z"]) >= 1.96).any(axis=1).mean() > 0.12


def test_monitoring_saves_ratings_at_equal_power_when_treatment_is_better():
    design = Design(n_strata=3, prompts_per_stratum=20, seeds_per_prompt=1, ratings_per_participant=20)
    res = savings(Scenario(design, Effects(win_rate=0.6, **CLUSTERED), n_participants=60), sims=300, seed=12)
    assert 0.6 < res["power_sequential"] < 1
    assert res["fixed_ratings_same_power"] <= 1200
    assert res["ratings_saved"] > 0.1 * res["fixed_ratings_same_power"]


def test_more_ratings_estimate_is_the_right_size():
    """At 400 ratings, "about N more" against the ratings actually needed until the stop."""
    design, effects = Design(), Effects(win_rate=0.6, **CLUSTERED)
    b = simulate_batch(design, effects, 80, 30, np.random.default_rng(5))
    predicted, actual = [], []
    for i in range(30):
        args = (b["participant"][i], b["prompt"][i], b["score"][i])
        full = monitor(*args, planned=1600)
        early = monitor(*(a[:400] for a in args), planned=1600)
        if full["stop"] and full["stop"]["recommendation"] == TREATMENT and early["stop"] is None:
            predicted.append(int(early["recommendation"].split()[2]))
            actual.append(full["stop"]["n_ratings"] - 400)
    assert len(predicted) >= 15
    assert 0.5 < np.median(predicted) / np.median(actual) < 2


def test_very_large_plans_space_their_looks():
    b = simulate_batch(SMALL, Effects(**CLUSTERED), 10, 1, np.random.default_rng(13))
    out = monitor(b["participant"][0], b["prompt"][0], b["score"][0], planned=100_000)
    assert out["look_every"] == 400 and out["recommendation"] == "continue: about 250 more ratings before the first look"


def test_heavy_raters_and_few_prompts_keep_two_sided_type_one_error():
    """Fast version of benchmarks/monitoring.py (which runs 4,000 null studies per design): heavy raters
    (5 of 40 give 60%) and 15 prompts, both directions counted."""
    from app.statistics.clustered import heavy_rater_counts  # noqa: F401  (the design the scenario uses)

    heavy = Scenario(Design(3, 20, 2, 10), Effects(win_rate=0.5, **CLUSTERED), n_participants=40, heavy=True)
    few = Scenario(Design(3, 5, 4, 20), Effects(win_rate=0.5, **CLUSTERED), n_participants=40)
    for sc, seed in ((heavy, 21), (few, 22)):
        res = run(sc, sims=400, seed=seed)
        two = res["two_sided_stop"]
        assert two["rate"] <= 0.05 + 2 * two["mc_error"], two
    assert heavy.planned == 5 * 105 + 35 * 10


def test_monitor_uses_the_reports_duplicate_rule_and_strata():
    b = simulate_batch(SMALL, Effects(win_rate=0.7, **CLUSTERED), 30, 1, np.random.default_rng(14))
    p, q, s, pair = b["participant"][0], b["prompt"][0], b["score"][0], b["pair"][0]
    base = monitor(p, q, s, planned=450, stratum=b["stratum"][0], pair=pair)
    # A double submission (same participant and pair, later, opposite answer) changes nothing.
    dup = monitor(np.r_[p, p[:5]], np.r_[q, q[:5]], np.r_[s, -s[:5]], planned=450,
                  stratum=np.r_[b["stratum"][0], b["stratum"][0][:5]], pair=np.r_[pair, pair[:5]])
    assert dup["n_duplicates_dropped"] == 5 and dup["current"] == base["current"]
    # The statistic is the report's interval at that look (same strata).
    n = base["current"]["n_ratings"]
    w, lo, hi = report_interval(p[:n], q[:n], s[:n], stratum=b["stratum"][0][:n])
    assert base["current"]["win_rate"] == pytest.approx(w)
    assert "0.025 on each side" in base["method"] and base["alpha_two_sided"] == 0.05


def test_planned_total_is_locked_once_ratings_exist():
    from app.statistics.monitoring import lock_planned_total

    assert lock_planned_total(None, 600, 0) == {"planned": 600, "locked": False, "lock_now": False,
                                                "refused_change": None}
    first = lock_planned_total(None, 600, 1)
    assert first["planned"] == 600 and first["lock_now"]
    later = lock_planned_total(600, 180, 180)  # cut to "ratings so far" near a boundary: refused
    assert later["planned"] == 600 and not later["lock_now"]
    assert later["refused_change"]["configured"] == 180 and "locked" in later["refused_change"]["note"]
    assert lock_planned_total(600, 600, 900)["refused_change"] is None


def test_a_recorded_stop_is_immutable_and_the_post_hoc_state_is_shown_beside_it():
    from app.statistics.monitoring import monitor_comparisons

    b = simulate_batch(SMALL, Effects(win_rate=0.75, **CLUSTERED), 40, 1, np.random.default_rng(7))
    rows = [{"rating_id": i, "participant": f"p{p}", "prompt_id": f"q{q}", "comparison": "A", "score": int(s),
             "is_gold": False, "is_repeat": False}
            for i, (p, q, s) in enumerate(zip(b["participant"][0], b["prompt"][0], b["score"][0]))]
    now = monitor_comparisons(rows, {"A": 600})["A"]
    recorded = now["stop"]
    assert recorded["recommendation"] == TREATMENT
    # Later, exclusions remove most participants: the data alone would no longer stop.
    kept = {f"p{i}" for i in range(4)}
    after = monitor_comparisons(rows, {"A": 600}, participants=kept, recorded_stops={"A": recorded})["A"]
    assert after["stop"] == recorded and after["recorded"] is True and after["recommendation"] == TREATMENT
    assert after["post_hoc"]["stop"] is None and after["post_hoc"]["recommendation"] != TREATMENT
