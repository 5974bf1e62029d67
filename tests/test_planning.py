"""Sample-size planning: closed-form agreement without random effects, pilot estimates, the CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from app.cli import main
from app.statistics.clustered import Design, Effects, simulate_batch
from app.statistics.planning import PlanRequest, closed_form_participants, effects_from_pilot, plan

NO_RANDOM_EFFECTS = Effects(win_rate=0.6, tie_rate=0.0, sd_participant=0.0, sd_prompt=0.0, sd_pair=0.0)


@pytest.mark.parametrize("target", [{"power": 0.8}, {"power": None, "half_width": 0.05}])
def test_matches_the_binomial_closed_form_without_random_effects(target):
    req = PlanRequest(effects=NO_RANDOM_EFFECTS, sims=400, seed=1, **target)
    result = plan(req)
    binomial = closed_form_participants(req)
    assert result["binomial_participants"] == pytest.approx(binomial)
    assert result["participants_exact"] == pytest.approx(binomial, rel=0.05)


def test_random_effects_need_more_participants_and_defaults_are_fast():
    started = time.perf_counter()
    result = plan(PlanRequest())  # default design, win rate 0.6, 80% power, 200 studies per point
    assert time.perf_counter() - started < 30
    assert result["participants"] > 2 * result["binomial_participants"]
    assert result["ratings"] == 20 * result["participants"]
    table = result["table"]
    assert [r["participants"] for r in table] == sorted(r["participants"] for r in table)
    assert table[-1]["half_width"] < table[0]["half_width"] and table[-1]["power"] > table[0]["power"]
    # Seeded: the same request gives the same plan.
    assert plan(PlanRequest())["table"] == table


def test_a_prompt_floor_makes_a_tight_half_width_unreachable():
    few_prompts = Design(n_strata=1, prompts_per_stratum=8, ratings_per_participant=8)
    result = plan(PlanRequest(design=few_prompts, effects=Effects(sd_prompt=1.5), power=None, half_width=0.02,
                         sims=50))
    assert result["participants"] is None and "prompts" in result["note"]


def test_report_estimator_runs_through_the_adapter():
    result = plan(PlanRequest(estimator="report", sims=20, grid=(10, 40)))
    assert [r["participants"] for r in result["table"]] == [10, 40]
    assert result["table"][1]["half_width"] < result["table"][0]["half_width"]


def test_pilot_estimates_recover_the_simulated_components():
    design = Design(n_strata=3, prompts_per_stratum=20, seeds_per_prompt=2, ratings_per_participant=20)
    truth = Effects(win_rate=0.62, tie_rate=0.2, sd_participant=0.6, sd_prompt=0.4, sd_pair=0.3)
    b = simulate_batch(design, truth, 400, 1, np.random.default_rng(3))
    rows = [{"participant": f"p{p}", "prompt_id": f"q{q}", "pair": f"x{x}", "score": int(s) * 2,
             "is_gold": False, "is_repeat": False}
            for p, q, x, s in zip(b["participant"][0], b["prompt"][0], b["pair"][0], b["score"][0])]
    rows.append({**rows[0], "is_gold": True, "score": -2})  # gold trials are left out
    est = effects_from_pilot(rows)
    e = est["effects"]
    assert est["n_ratings"] == 8000 and est["n_prompts"] == 60
    assert e.tie_rate == pytest.approx(0.2, abs=0.02)
    assert e.win_rate == pytest.approx(0.62, abs=0.05)
    assert e.sd_participant == pytest.approx(0.6, abs=0.1)
    assert e.sd_prompt == pytest.approx(0.4, abs=0.15)
    assert e.sd_pair == pytest.approx(0.3, abs=0.15)


def test_pilot_without_clustering_finds_small_components():
    b = simulate_batch(Design(), NO_RANDOM_EFFECTS, 200, 1, np.random.default_rng(4))
    rows = [{"participant": p, "prompt_id": q, "pair": x, "score": int(s), "is_gold": False, "is_repeat": False}
            for p, q, x, s in zip(b["participant"][0], b["prompt"][0], b["pair"][0], b["score"][0])]
    e = effects_from_pilot(rows)["effects"]
    assert max(e.sd_participant, e.sd_prompt) < 0.2


def test_pilot_needs_enough_ratings():
    with pytest.raises(ValueError, match="at least 20"):
        effects_from_pilot([{"participant": 1, "prompt_id": 1, "pair": 1, "score": 1, "is_gold": False,
                             "is_repeat": False}])


def test_cli_prints_participants_ratings_cost_and_writes_files(tmp_path):
    res = CliRunner().invoke(main, ["plan", "--win-rate", "0.65", "--price-per-rating", "0.1", "--sims", "100",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    n, ratings, cost = res.stdout.split()
    assert int(ratings) == 20 * int(n) and float(cost) == pytest.approx(0.1 * int(ratings))
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["participants"] == int(n)
    assert (tmp_path / "plan.csv").read_text().startswith("participants,ratings,half_width,power,sims")
    assert (tmp_path / "plan.svg").read_text().startswith("<svg")


@pytest.mark.parametrize("args, message", [
    (["--win-rate", "1.2"], "win rate"),
    (["--half-width", "0.05", "--power", "0.9"], "either"),
    (["--ratings-per-participant", "100"], "exceed the number of pairs"),
    (["--win-rate", "0.4"], "above 0.5"),
    (["--win-rate", "0.501"], "lies beyond"),
    (["--prompts-per-stratum", "1000000"], "too many pairs"),
])
def test_cli_rejects_bad_inputs(args, message):
    res = CliRunner().invoke(main, ["plan", *args])
    assert res.exit_code != 0 and message in res.output


def test_cli_pilot_from_a_study_in_the_database(sqlite_url, tmp_path):
    res = CliRunner().invoke(main, ["plan", "--pilot", "nope", "--database-url", sqlite_url])
    assert res.exit_code != 0 and "no study with slug 'nope'" in res.output
