"""`sfgeval prompts encode|diversity|select|strata` on a tiny random-weight open_clip model."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from app.cli import main
from tests.tiny_metric_models import (
    register_tiny_clip,
    save_tiny_clip,
    write_tiny_manifest,
)

PROMPTS = [f"a photo of {n} {thing}" for n in ("one", "two", "three", "four", "five", "six") for thing in
           ("cats", "dogs", "red buses", "bowls of soup", "bicycles", "clocks on a wall", "surfers", "kites")]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-clip")
    name = register_tiny_clip(d)
    return {"name": name, "a": save_tiny_clip(d / "clip_a.pt", seed=0), "b": save_tiny_clip(d / "clip_b.pt", seed=1)}


@pytest.fixture()
def prompt_csv(tmp_path):
    path = tmp_path / "prompts.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "source", "prompt", "evaluation_seed"])
        for i, p in enumerate(PROMPTS):
            # Padding and an inner newline as in coco_30k.csv: read with csv and stripped.
            w.writerow([f"{i:012d}", "test", f"  {p}\nindoors " if i == 3 else f" {p} ", 1000 + i])
    return path


def _run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res


def _ok(*args):
    res = _run(*args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def _encode(tiny_clip, prompt_csv, out, weights="a"):
    return _ok("prompts", "encode", "--prompts", prompt_csv, "--clip-model", tiny_clip["name"],
               "--clip-weights", tiny_clip[weights], "--out", out, "--batch-size", 16, "--device", "cpu")


def test_encode_embeds_every_prompt_and_caches(tiny_clip, prompt_csv, tmp_path, monkeypatch):
    out = tmp_path / "work" / "embeddings.npz"
    _encode(tiny_clip, prompt_csv, out)
    meta = json.loads(out.with_suffix(".json").read_text())
    with np.load(out) as data:
        emb, ids = data["embeddings"], list(data["prompt_ids"])
    assert emb.shape == (len(PROMPTS), 32) and emb.dtype == np.float32
    assert ids[0] == "000000000000" and len(set(ids)) == len(PROMPTS)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert meta["model"]["model"] == tiny_clip["name"] and meta["count"] == len(PROMPTS)

    # The embeddings are the model's, for the stripped prompts.
    from sampler.clip import encode_texts, load_open_clip

    clip = load_open_clip(tiny_clip["name"], tiny_clip["a"], "cpu")
    direct = encode_texts(clip, [PROMPTS[0], PROMPTS[3] + "\nindoors"], progress=False)
    np.testing.assert_allclose(emb[[0, 3]], direct, atol=1e-5)

    # Second run: reused, nothing encoded.
    import sampler.clip

    def boom(*a, **k):
        raise AssertionError("encode_texts called although the cache is valid")

    monkeypatch.setattr(sampler.clip, "encode_texts", boom)
    stamp = out.stat().st_mtime_ns
    res = _encode(tiny_clip, prompt_csv, out)
    assert "cached" in res.output and out.stat().st_mtime_ns == stamp
    monkeypatch.undo()

    # Another checkpoint of the same architecture invalidates the cache.
    res = _encode(tiny_clip, prompt_csv, out, weights="b")
    assert "wrote" in res.output
    with np.load(out) as data:
        emb_b = data["embeddings"]
    assert not np.allclose(emb_b, emb, atol=1e-3)
    assert json.loads(out.with_suffix(".json").read_text())["model"]["weights_fingerprint"] != meta["model"]["weights_fingerprint"]

    # A changed prompt file invalidates it too.
    with open(prompt_csv, "a", newline="") as f:
        csv.writer(f).writerow(["999", "test", "a brand new prompt", 1])
    res = _encode(tiny_clip, prompt_csv, out, weights="b")
    assert "wrote" in res.output and f"{len(PROMPTS) + 1} prompts" in res.output


def test_encode_weight_errors_name_the_expected_file(tiny_clip, prompt_csv, tmp_path):
    out = tmp_path / "e.npz"
    base = ["prompts", "encode", "--prompts", prompt_csv, "--clip-model", tiny_clip["name"], "--out", out, "--device", "cpu"]
    res = _run(*base, "--clip-weights", tmp_path / "nope.bin")
    assert res.exit_code != 0 and "nope.bin does not exist" in res.output and "open_clip" in res.output
    bad = tmp_path / "bad.bin"
    bad.write_text("not a checkpoint")
    res = _run(*base, "--clip-weights", bad)
    assert res.exit_code != 0 and "is not a loadable open_clip" in res.output
    res = _run(*base, "--clip-weights", tmp_path)
    assert res.exit_code != 0 and "open_clip_pytorch_model.bin" in res.output
    res = _run("prompts", "encode", "--prompts", prompt_csv, "--clip-model", "ViT-nonexistent", "--clip-weights", tiny_clip["a"], "--out", out)
    assert res.exit_code != 0 and "unknown open_clip architecture" in res.output
    assert not out.exists()


def test_diversity_csv_plot_and_resume(tiny_clip, prompt_csv, tmp_path):
    emb = tmp_path / "embeddings.npz"
    _encode(tiny_clip, prompt_csv, emb)
    out = tmp_path / "div"
    args = ("prompts", "diversity", "--embeddings", emb, "--sizes", "4,12,40", "--draws", 3, "--seed", 5, "--out", out)
    _ok(*args)
    with open(out / "diversity.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["size"], r["draw"]) for r in rows] == [(s, d) for s in ("4", "12", "40") for d in ("0", "1", "2")]
    from sampler import subsample

    assert [int(r["seed"]) for r in rows] == [subsample.subset_seed(5, int(r["size"]), int(r["draw"])) for r in rows]
    with np.load(emb) as data:
        x = data["embeddings"]
    ref = subsample.reference_stats(x)
    r = rows[4]
    assert float(r["frechet_distance"]) == pytest.approx(
        subsample.frechet_to_reference(x[subsample.draw_subset(len(x), int(r["size"]), int(r["seed"]))], ref)
    )
    with open(out / "diversity_summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [s["size"] for s in summary] == ["4", "12", "40"]
    assert float(summary[0]["mean"]) > float(summary[2]["mean"])
    assert (out / "diversity.png").stat().st_size > 1000

    # Re-run: nothing to do. Killed half-way: only the missing draws are computed, same result.
    res = _ok(*args)
    assert "already" in res.output
    original = (out / "diversity.csv").read_text().splitlines()
    # The kill also cut the last line in the middle of a number: that row is recomputed.
    (out / "diversity.csv").write_text("\n".join(original[:5]) + "\n" + original[5][:12])
    _ok(*args)
    assert sorted((out / "diversity.csv").read_text().splitlines()) == sorted(original)
    # Another base seed starts over.
    _ok(*args[:-4], "--seed", 6, "--out", out)
    with open(out / "diversity.csv") as f:
        assert {int(r["seed"]) for r in csv.DictReader(f)} == {subsample.subset_seed(6, s, d) for s in (4, 12, 40) for d in range(3)}
    res = _run("prompts", "diversity", "--embeddings", emb, "--sizes", "4,1000", "--out", out)
    assert res.exit_code != 0 and "size 1000" in res.output
    res = _run("prompts", "diversity", "--embeddings", tmp_path / "none.npz", "--out", out)
    assert res.exit_code != 0 and "run `sfgeval prompts encode` first" in res.output


def test_select_writes_a_prompt_file_the_generator_reads(prompt_csv, tmp_path):
    from sampler.prompts import read_prompts

    out = tmp_path / "subset.csv"
    _ok("prompts", "select", "--prompts", prompt_csv, "--size", 10, "--seed", 3, "--out", out)
    first = out.read_text()
    subset = read_prompts(out)
    source = {r.prompt_id: r for r in read_prompts(prompt_csv)}
    assert len(subset) == 10 and len({r.prompt_id for r in subset}) == 10
    for r in subset:
        assert r.prompt == source[r.prompt_id].prompt and r.seed == source[r.prompt_id].seed
    ids = [r.prompt_id for r in subset]
    assert ids == sorted(ids)  # source order kept
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 3
    _ok("prompts", "select", "--prompts", prompt_csv, "--size", 10, "--seed", 3, "--out", out)
    assert out.read_text() == first
    _ok("prompts", "select", "--prompts", prompt_csv, "--size", 10, "--seed", 4, "--out", out)
    assert out.read_text() != first
    res = _run("prompts", "select", "--prompts", prompt_csv, "--size", 1000, "--out", out)
    assert res.exit_code != 0 and "subset size 1000" in res.output


def test_strata_scores_baseline_images_and_labels_percentiles(tiny_clip, tmp_path, monkeypatch):
    from sampler import subsample
    from sampler.clip import clip_scores, load_open_clip
    from sampler.manifest import iter_records
    from sampler.prompts import read_prompts

    pairs = write_tiny_manifest(tmp_path / "pairs", [(f"p{i}", PROMPTS[i]) for i in range(12)], seeds=(0, 1), size=32)
    out = tmp_path / "work" / "strata.csv"
    base = ("prompts", "strata", "--manifest", pairs, "--clip-model", tiny_clip["name"], "--clip-weights", tiny_clip["a"])
    args = (*base, "--k", 2, "--out", out, "--device", "cpu")
    _ok(*args)
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["prompt_id", "prompt", "stratum", "clip_score", "seed"]
        rows = list(reader)
    assert [r["stratum"] for r in rows] == ["low"] * 2 + ["middle"] * 2 + ["high"] * 2

    # Independent recomputation: mean over seeds of the baseline image's CLIP score, then percentiles.
    clip = load_open_clip(tiny_clip["name"], tiny_clip["a"], "cpu")
    recs = [r for _, r in iter_records(pairs)]
    s = clip_scores(clip, [pairs / r.baseline.file for r in recs], [r.prompt for r in recs], progress=False)
    ids = sorted({r.prompt_id for r in recs}, key=lambda p: int(p[1:]))
    means = [np.mean([v for r, v in zip(recs, s) if r.prompt_id == pid]) for pid in ids]
    expected = subsample.percentile_strata(means, 2)
    assert [(ids[p.index], p.label) for p in expected] == [(r["prompt_id"], r["stratum"]) for r in rows]
    for p, r in zip(expected, rows):
        assert float(r["clip_score"]) == pytest.approx(p.score, abs=1e-4)
        assert r["prompt"] == PROMPTS[int(r["prompt_id"][1:])]
    # The generator's reader keeps the stratum.
    assert [p.stratum for p in read_prompts(out)] == [r["stratum"] for r in rows]

    # A kill while writing the cache cut its last row: only that image is scored again.
    cache = out.parent / "clip_scores.csv"
    full = cache.read_text()
    cache.write_text(full[: full.rstrip("\n").rfind("\n") + 1] + full.rstrip("\n").rsplit("\n", 1)[1][:20])
    res = _ok(*args)
    assert len(cache.read_text().splitlines()) == len(full.splitlines())
    with open(out, newline="") as f:
        assert [r["prompt_id"] for r in csv.DictReader(f)] == [r["prompt_id"] for r in rows]

    # Re-run with another k: scores come from the cache, no image is scored again.
    import sampler.clip

    monkeypatch.setattr(sampler.clip, "clip_scores", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rescored")))
    res = _ok(*base, "--k", 1, "--percentiles", "25,75", "--labels", "lower,upper", "--out", out, "--device", "cpu")
    assert "already scored" in res.output
    with open(out, newline="") as f:
        assert [r["stratum"] for r in csv.DictReader(f)] == ["lower", "upper"]
    res = _run(*base, "--k", 5, "--out", out)
    assert res.exit_code != 0 and "need 15 prompts, only 12" in res.output
    res = _run(*base, "--percentiles", "10,90", "--out", out)
    assert res.exit_code != 0 and "2 percentiles but 3 labels" in res.output
    # A missing image is reported before any model work.
    victim = pairs / recs[0].baseline.file
    shutil.move(victim, tmp_path / "moved.png")
    res = _run(*args)
    assert res.exit_code != 0 and recs[0].baseline.file in res.output


def test_strata_cache_keys_scores_by_image_and_prompt(tiny_clip, tmp_path):
    """Issue 9.9: one identical (e.g. black safety-checker) image for several prompts: one score per prompt."""
    import json

    from sampler.clip import clip_scores, load_open_clip
    from sampler.manifest import MANIFEST_NAME

    pairs = write_tiny_manifest(tmp_path / "pairs", [(f"p{i}", PROMPTS[i]) for i in range(6)], size=32)
    lines = [json.loads(line) for line in (pairs / MANIFEST_NAME).read_text().splitlines()]
    for rec in lines:  # every prompt's baseline image is the first one, byte for byte
        rec["baseline"] = dict(lines[0]["baseline"])
    (pairs / MANIFEST_NAME).write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    out = tmp_path / "work" / "strata.csv"
    args = ("prompts", "strata", "--manifest", pairs, "--clip-model", tiny_clip["name"], "--clip-weights",
            tiny_clip["a"], "--k", 1, "--percentiles", "0,100", "--labels", "low,high", "--out", out, "--device", "cpu")
    _ok(*args)
    with open(out.parent / "clip_scores.csv", newline="") as f:
        cached = {r["prompt"]: float(r["clip_score"]) for r in csv.DictReader(f)}
    image = pairs / lines[0]["baseline"]["file"]
    clip = load_open_clip(tiny_clip["name"], tiny_clip["a"], "cpu")
    expected = clip_scores(clip, [image] * 6, PROMPTS[:6], progress=False)
    assert sorted(cached) == sorted(PROMPTS[:6])
    assert [cached[p] for p in PROMPTS[:6]] == pytest.approx(list(expected), abs=1e-4)
    assert len({round(v, 4) for v in cached.values()}) > 1  # one shared score would hide the prompts' differences
    with open(out, newline="") as f:
        picked = {r["prompt"]: float(r["clip_score"]) for r in csv.DictReader(f)}
    assert picked == {p: pytest.approx(cached[p], abs=1e-4) for p in picked}
    assert sorted(picked.values()) == pytest.approx([min(expected), max(expected)], abs=1e-4)
