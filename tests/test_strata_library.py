"""The library behind `sfgeval prompts strata` and `metrics table`, called directly (no CLIP model:
a deterministic scorer stands in for it)."""

from __future__ import annotations

import csv
import hashlib

import pytest

from sampler.prompts import read_prompts
from sampler.strata import ScoreCache, StrataError, model_key, run_strata
from tests.tiny_metric_models import write_tiny_manifest


def _scorer(calls):
    def score(paths, prompts, label):
        calls.extend(zip([p.name for p in paths], prompts))
        # A fixed function of the image bytes and the prompt.
        return [int(hashlib.sha256(p.read_bytes() + t.encode()).hexdigest()[:6], 16) / 2**24 * 40 for p, t in zip(paths, prompts)]

    return score


def test_strata_cache_is_keyed_by_image_prompt_and_model(tmp_path):
    pairs = write_tiny_manifest(tmp_path / "pairs", [(f"p{i}", f"prompt {i}") for i in range(9)], seeds=(5, 6), size=16)
    calls: list = []
    out = tmp_path / "w" / "strata.csv"
    rows, targets, scored = run_strata(pairs, {"model": "A"}, _scorer(calls), 2, [10, 50, 90], ["low", "mid", "high"], out)
    assert scored == 18 and len(calls) == 18 and len(rows) == 6
    # Each prompt carries its first seed: the seed of its scored image.
    assert all(r.seed == 5 for r in rows) and [p.seed for p in read_prompts(out)] == [5] * 6
    assert [p.stratum for p in read_prompts(out)] == [r.stratum for r in rows]

    # Same model: nothing scored again. Another model: everything scored, in the same cache file.
    calls.clear()
    assert run_strata(pairs, {"model": "A"}, _scorer(calls), 1, [50], ["mid"], out)[2] == 0 and calls == []
    assert run_strata(pairs, {"model": "B"}, _scorer(calls), 1, [50], ["mid"], out)[2] == 18
    cache = list(csv.DictReader(open(tmp_path / "w" / "clip_scores.csv", newline="")))
    assert {r["model"] for r in cache} == {model_key({"model": "A"}), model_key({"model": "B"})} and len(cache) == 36

    # The same image under another prompt is another key.
    c = ScoreCache(tmp_path / "w" / "clip_scores.csv")
    from sampler.manifest import iter_records

    rec = next(r for _, r in iter_records(pairs))
    assert c.get(rec, model_key({"model": "A"})) is not None
    assert c.get(rec.model_copy(update={"prompt": "another prompt"}), model_key({"model": "A"})) is None


def test_strata_errors(tmp_path):
    pairs = write_tiny_manifest(tmp_path / "pairs", [("a", "x"), ("b", "y")], size=16)
    with pytest.raises(StrataError, match="expects the folder written by `sfgeval generate`"):
        run_strata(pairs / "manifest.jsonl", {}, _scorer([]), 1, [50], ["mid"], tmp_path / "s.csv")
    with pytest.raises(StrataError, match="2 percentiles but 1 labels"):
        run_strata(pairs, {}, _scorer([]), 1, [10, 90], ["mid"], tmp_path / "s.csv")
    with pytest.raises(ValueError, match="need 3 prompts, only 2"):
        run_strata(pairs, {}, _scorer([]), 3, [50], ["mid"], tmp_path / "s.csv")


def test_metrics_table_request_is_checked_before_anything_loads(tmp_path):
    pytest.importorskip("torch")
    from sampler.metrics_table import TableError, TableRequest, compute_table

    pairs = write_tiny_manifest(tmp_path / "pairs", [("a", "x")], size=16)
    with pytest.raises(TableError, match="give at least one of"):
        compute_table(TableRequest(manifests=(str(pairs),), out=str(tmp_path / "m")))
    with pytest.raises(TableError, match="--reference \\(FID\\) needs --inception-weights"):
        compute_table(TableRequest(manifests=(str(pairs),), out=str(tmp_path / "m"), reference=str(tmp_path),
                                   pickscore_dir=str(tmp_path)))
    assert not (tmp_path / "m").exists()
