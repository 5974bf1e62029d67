"""The K-arm ranking (app.statistics.ranking) and its place in statistics.json: small and fast."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import statistics as st
from app.statistics.ranking import holm, pair_contrast, rank_arms, ranking_entries, win_matrix
from app.statistics.robust import ratio_parts, two_way

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import ranking_calibration as rc  # noqa: E402


def votes(seed=0, n=900, k_participants=30, k_prompts=18):
    rng = np.random.default_rng(seed)
    part = rng.integers(0, k_participants, n)
    prompt = rng.integers(0, k_prompts, n)
    score = rng.choice([-2, -1, 0, 1, 2], n, p=[0.15, 0.15, 0.2, 0.25, 0.25])
    return part, prompt, prompt % 3, score


def test_two_arms_strength_is_logit_win_rate_and_interval_its_delta_method_twin():
    part, prompt, stratum, score = votes()
    n = score.size
    rk = rank_arms(["sfg"] * n, ["cfg"] * n, score, part, prompt, stratum)
    a, b = ratio_parts(score)["win_rate"]
    est = two_way(a, b, part, prompt, stratum)
    theta = est.theta
    c = rk.strengths["sfg"]
    assert rk.reference == "cfg" and rk.arms == ["cfg", "sfg"]
    assert c.estimate == pytest.approx(math.log(theta / (1 - theta)), abs=1e-9)
    assert c.se == pytest.approx(math.sqrt(est.v) / (theta * (1 - theta)), rel=1e-9)
    assert c.df == pytest.approx(est.df, rel=1e-9)
    entries = ranking_entries(rk)
    assert [e["arm"] for e in entries] == ["sfg", "cfg"]
    top = entries[0]
    assert top["ci_low"] < top["strength"] < top["ci_high"] and top["rank"] == top["rank_low"] == top["rank_high"] == 1
    assert entries[1] | {} == entries[1] and entries[1]["strength"] == 0.0 and entries[1]["reference"]


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, None, 0.03, 0.5, 0.004]
    got = holm(p)
    kept = [x for x in p if x is not None]
    want = iter(multipletests(kept, method="holm")[1])
    for g, x in zip(got, p):
        assert (g is None) == (x is None)
        if x is not None:
            assert g == pytest.approx(next(want))


def test_three_arms_recover_the_order_and_rank_intervals_nest():
    sc = rc.Scenario("t", (0, 0.6, 0.3), n_participants=60, n_prompts=30, unbalanced=False)
    d = rc.simulate(sc, np.random.default_rng(3))
    names = ["cfg", "sfg", "pag"]
    rk = rank_arms([names[i] for i in d["t"]], [names[i] for i in d["b"]], d["score"], d["participant"],
                   d["prompt"], d["stratum"], reference="cfg")
    assert rk.reason is None
    entries = ranking_entries(rk)
    assert [e["arm"] for e in entries] == ["sfg", "pag", "cfg"]
    for e in entries:
        assert e["rank_low"] <= e["rank"] <= e["rank_high"]
        assert e["ci_low"] <= e["strength"] <= e["ci_high"]
    truth = rc.true_strengths(sc)
    for i, a in enumerate(names):
        lo, hi = (0.0, 0.0) if i == 0 else rk.strengths[a].interval(0.99)
        assert lo <= truth[i] <= hi
    # Contrasts are antisymmetric; estimates are differences of strengths.
    ab, ba = pair_contrast(rk, "sfg", "pag"), pair_contrast(rk, "pag", "sfg")
    assert ab.estimate == pytest.approx(-ba.estimate) and ab.se == ba.se
    assert ab.estimate == pytest.approx(rk.strengths["sfg"].estimate - rk.strengths["pag"].estimate)
    wm = win_matrix([names[i] for i in d["t"]], [names[i] for i in d["b"]], d["score"])
    assert wm["sfg"]["cfg"]["wins"] + wm["cfg"]["sfg"]["wins"] == wm["sfg"]["cfg"]["decisive"]


def test_no_ranking_when_an_arm_always_wins_or_arms_are_not_connected():
    part, prompt, stratum, _ = votes(n=40)
    rk = rank_arms(["a"] * 40, ["b"] * 40, np.ones(40), part, prompt, stratum)
    assert rk.reason and ranking_entries(rk) == []
    t = ["a"] * 20 + ["c"] * 20
    b = ["b"] * 20 + ["d"] * 20
    score = np.tile([1, -1], 20)
    assert "connect" in rank_arms(t, b, score, part, prompt, stratum).reason


def row(participant, prompt, score, comparison, arms):
    side = "left" if sum(map(ord, participant + prompt)) % 2 else "right"
    return {"study": "s", "study_version": 1, "participant": participant, "external_ids": {},
            "pair": f"{comparison}/{prompt}", "pair_set": 1, "prompt_id": prompt, "prompt": f"text {prompt}",
            "stratum": "s", "seed": 0, "treatment_side": side, "choice": 3 - score if side == "left" else 3 + score,
            "score": score, "is_gold": False, "is_repeat": False, "presented_at": None, "answered_at": None,
            "response_ms": 2000, "comparison": comparison,
            **({"treatment_arm": arms[0], "baseline_arm": arms[1]} if arms else {})}


def sim_rows(sc, names, seed, with_arms=True):
    d = rc.simulate(sc, np.random.default_rng(seed))
    pairs = sc.pairs()
    out = []
    for p, q, c, s in zip(d["participant"], d["prompt"], d["comp"], d["score"]):
        t, b = pairs[c]
        out.append(row(f"p{p}", f"q{q}", int(s), f"{names[t]}-vs-{names[b]}", (names[t], names[b]) if with_arms else None))
    return out


def test_two_arm_statistics_are_unchanged_by_the_ranking():
    sc = rc.Scenario("t", (0, 0.3), n_participants=20, n_prompts=12, unbalanced=True)
    with_arms = st.compute_statistics(sim_rows(sc, ["cfg", "sfg"], 1), draws=20)
    without = st.compute_statistics(sim_rows(sc, ["cfg", "sfg"], 1, with_arms=False), draws=20)
    added = {"ranking", "ranking_detail", "win_matrix"}
    for key in ("all", "after_exclusions"):
        a, b = with_arms["results"][key], without["results"][key]
        assert {k: v for k, v in a.items() if k not in added} == {k: v for k, v in b.items() if k not in added}
    assert without["ranking"] == []
    ranking = with_arms["ranking"]
    assert [e["arm"] for e in ranking] == ["sfg", "cfg"] or [e["arm"] for e in ranking] == ["cfg", "sfg"]
    comp = with_arms["results"]["all"]["per_comparison"]["sfg-vs-cfg"]["win_rate"]["estimate"]
    sfg = next(e for e in ranking if e["arm"] == "sfg")
    assert sfg["strength"] == pytest.approx(math.log(comp / (1 - comp)))
    assert set(sfg) >= {"arm", "strength", "ci_low", "ci_high", "rank", "rank_low", "rank_high"}


def test_k_arm_statistics_gain_ranking_and_joint_holm():
    sc = rc.Scenario("t", (0, 0.4, 0.2, 0.1), n_participants=30, n_prompts=12, comparisons="vs-baseline")
    names = ["cfg", "sfg", "pag", "apg"]
    stats = st.compute_statistics(sim_rows(sc, names, 2), draws=20)
    res = stats["results"]["all"]
    assert [e["arm"] for e in stats["ranking"]][:1] == ["sfg"] and len(stats["ranking"]) == 4
    detail = res["ranking_detail"]
    assert detail["reference"] == "cfg" and "joint" in detail["p_holm"]
    for label, t in detail["comparisons"].items():
        wr = res["per_comparison"][label]["tests"]["win_rate"]
        assert wr["p_holm"] == t["p_holm"] and wr["p_holm"] >= t["p_value"]
        assert "p_holm_win_rate_tests" in wr
    assert res["win_matrix"]["sfg"]["cfg"]["decisive"] > 0


def test_benchmark_help_and_a_tiny_run(capsys):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ranking_calibration.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0 and "--reps" in out.stdout
    rc.main(["--reps", "3", "--only", "null K=3"])
    table = capsys.readouterr().out
    assert "null K=3" in table and "FWER" in table


def test_planner_sizes_a_k_arm_study_as_its_comparisons():
    from click.testing import CliRunner

    from app.cli import main
    from app.statistics.arm_planning import n_comparisons, per_comparison_request, plan_arms
    from app.statistics.planning import PlanRequest

    assert n_comparisons(4, "vs-baseline") == 3 and n_comparisons(4, "all-pairs") == 6
    req = PlanRequest(sims=20)
    sub = per_comparison_request(req, 3)
    assert sub.alpha == pytest.approx(0.05 / 3) and sub.design.ratings_per_participant == 20 // 3
    out = plan_arms(req, 4, "vs-baseline")
    n = out["participants"]
    assert out["arms"]["n_comparisons"] == 3 and out["ratings"] == n * 6 * 3
    # Three comparisons at a third of the level each need more participants than one comparison.
    from app.statistics.planning import plan

    assert n > plan(req)["participants"]
    res = CliRunner().invoke(main, ["plan", "--arms", "3", "--sims", "20"])
    assert res.exit_code == 0, res.output
    assert "2 comparisons" in res.output
