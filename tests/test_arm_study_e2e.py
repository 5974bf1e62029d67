"""Issue 26 end to end: a 4-arm study (cfg, sfg, pag, apg) on the tiny model, from `generate --arms`
through `sfgeval import`, `sfgeval study create` with all-pairs comparisons, simulated participants
over HTTP, to `sfgeval report` with the ranking, the win matrix and nfe per arm."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from app.cli import main  # noqa: E402
from app.studies.config import get_study  # noqa: E402
from sampler.arms import parse_arms  # noqa: E402
from sampler.generate import GenerationSettings  # noqa: E402
from sampler.params import SamplerParams  # noqa: E402
from sampler.sets import generate_sets  # noqa: E402
from tests.test_arm_studies import run_participants  # noqa: E402

ARMS = ("cfg", "sfg", "pag", "apg")


def test_four_arm_study_end_to_end_on_the_tiny_model(tmp_path, tiny_sfg, tiny_model_dir, client, session, settings):
    arms = parse_arms([{"name": a, "method": a, "params": {}} for a in ARMS], SamplerParams(num_inference_steps=2))
    prompts = ["a cat on a mat", "a red car", "a bowl of fruit", "a house by a lake"]
    generate_sets(prompts, tmp_path / "set", arms=arms, model_dir=tiny_model_dir, pipeline=tiny_sfg,
                  settings=GenerationSettings(num_inference_steps=2, height=64, width=64), progress=False)
    url = settings.database_url
    runner = CliRunner()
    imported = runner.invoke(main, ["import", str(tmp_path / "set"), "--database-url", url])
    assert imported.exit_code == 0, imported.output
    pair_set = int(imported.stdout.strip().splitlines()[-1])
    config = tmp_path / "study.json"
    config.write_text(json.dumps({
        "title": "Four guidance methods", "slug": "four-arms", "pair_sets": [pair_set], "comparisons": "all-pairs",
        "state": "open", "pairs_per_participant": 6, "ratings_per_pair": 2, "gold_rate": 0.2, "repeats": 0,
        "min_response_ms": 0, "exclusion_rules": {"fail_gold": True}}))
    created = runner.invoke(main, ["study", "create", str(config), "--database-url", url])
    assert created.exit_code == 0, created.output
    session.expire_all()
    study = get_study(session, "four-arms")
    assert len(study.comparisons) == 6
    images, seen = run_participants(client, session, study, {"cfg": 0.0, "sfg": 1.0, "pag": 0.6, "apg": 0.3},
                                    n_participants=10)
    assert len({len(c) for c, _ in images.values()}) == 1 and max(seen) >= 3
    out = tmp_path / "report"
    reported = runner.invoke(main, ["report", "four-arms", "--out", str(out), "--draws", "20", "--database-url", url])
    assert reported.exit_code == 0, reported.output
    stats = json.loads((out / "statistics.json").read_text())
    ranking = stats["ranking"] or stats["results"]["all"]["ranking"]
    assert {e["arm"] for e in ranking} == set(ARMS)
    for e in ranking:
        assert e["rank_low"] <= e["rank"] <= e["rank_high"]
    html = (out / "report.html").read_text()
    section = html[html.index('id="arm-ranking"'):]
    assert "Row arm preferred" in section and "nfe" in section
    header = (out / "ratings.csv").read_text().splitlines()[0]
    assert "treatment_arm" in header and "baseline_arm" in header
