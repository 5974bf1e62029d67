"""Objective metrics: PickScore win rate, and `sfgeval metrics table` on tiny random-weight models."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from app.cli import main
from sampler.metrics import center_crop_box, win_rate
from tests.tiny_metric_models import (
    register_tiny_clip,
    save_random_inception,
    save_tiny_clip,
    save_tiny_pickscore,
    write_reference_images,
    write_tiny_manifest,
)


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_win_rate_counts_ties_separately():
    t = [1.0, 2.0, 3.0, 3.0, 0.5, 7.0, 7.0]
    b = [0.0, 2.0, 1.0, 3.0, 1.0, 7.0, 6.0]
    w = win_rate(t, b)
    assert (w.n, w.wins, w.ties, w.losses) == (7, 3, 3, 1)
    assert w.win_rate == pytest.approx(3 / 7) and w.tie_rate == pytest.approx(3 / 7) and w.loss_rate == pytest.approx(1 / 7)
    lo, hi = _wilson(3, 7)
    assert (w.ci_low, w.ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    # A tolerance turns near-equal scores into ties, from both sides.
    w2 = win_rate([1.0, 1.05, 0.96, 2.0], [1.0, 1.0, 1.0, 1.0], tie_tolerance=0.1)
    assert (w2.wins, w2.ties, w2.losses) == (1, 3, 0)
    # All wins: the interval stays inside [0, 1] and excludes 0.5.
    w3 = win_rate([1.0] * 20, [0.0] * 20)
    assert w3.win_rate == 1.0 and w3.ci_high == pytest.approx(1.0) and 0.5 < w3.ci_low < 1.0
    with pytest.raises(ValueError):
        win_rate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        win_rate([], [])


def test_center_crop_box():
    assert center_crop_box(640, 480) == (80, 0, 560, 480)
    assert center_crop_box(480, 641) == (0, 80, 480, 560)
    assert center_crop_box(5, 5) == (0, 0, 5, 5)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("metric-weights")
    name = register_tiny_clip(d)
    return {
        "clip_name": name,
        "clip": save_tiny_clip(d / "clip.pt", seed=0),
        "pickscore": save_tiny_pickscore(d / "pickscore", seed=0),
        "inception": save_random_inception(d / "pt_inception-2015-12-05-6726825d.pth", seed=0),
    }


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_metrics_table_on_a_tiny_manifest(weights, tmp_path):
    pairs = write_tiny_manifest(tmp_path / "pairs", [("p1", "a cat on a mat"), ("p2", "a red bus")], seeds=(0, 1), size=40)
    from sampler.manifest import iter_records

    recs = [r for _, r in iter_records(pairs)]
    # Reference = the baseline images themselves (plus nothing else): FID(cfg) must be ~0.
    ref = tmp_path / "ref"
    ref.mkdir()
    for r in recs:
        shutil.copy(pairs / r.baseline.file, ref / r.baseline.file)
    out = tmp_path / "metrics"
    args = ("metrics", "table", "--manifest", pairs, "--reference", ref, "--inception-weights", weights["inception"],
            "--clip-model", weights["clip_name"], "--clip-weights", weights["clip"], "--pickscore", weights["pickscore"],
            "--out", out, "--batch-size", 3, "--device", "cpu", "--fid-features", 64)
    # 64-d features: torchmetrics' eigvals of a 2048x2048 product costs minutes on 2 CPU cores.
    res = _run(*args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    for name in ("metrics.csv", "metrics.json", "metrics.md"):
        assert (out / name).is_file()
    with open(out / "metrics.csv", newline="") as f:
        rows = {r["arm"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"cfg", "sfg"}
    cfg, sfg = rows["cfg"], rows["sfg"]
    assert cfg["role"] == "baseline" and sfg["role"] == "treatment" and cfg["images"] == sfg["images"] == "4"
    fid_cfg, fid_sfg = float(cfg["fid"]), float(sfg["fid"])
    assert fid_sfg > 0 and abs(fid_cfg) < 1e-3 * fid_sfg
    for r in (cfg, sfg):
        assert float(r["is_mean"]) >= 1.0 and r["is_splits"] == "2"
    # CLIP score: mean of 100 x cosine of each image with its own prompt.
    from sampler.clip import clip_scores, load_open_clip

    clip = load_open_clip(weights["clip_name"], weights["clip"], "cpu")
    direct = clip_scores(clip, [pairs / r.treatment.file for r in recs], [r.prompt for r in recs], progress=False)
    assert float(sfg["clip_score"]) == pytest.approx(float(np.mean(direct)), abs=1e-4)
    # PickScore win rate only on the treatment line, and consistent with its counts.
    assert cfg["pickscore_win_rate"] == ""
    n, wins, ties, losses = (int(sfg[k]) for k in ("pickscore_pairs", "pickscore_wins", "pickscore_ties", "pickscore_losses"))
    assert n == 4 and wins + ties + losses == 4
    assert float(sfg["pickscore_win_rate"]) == pytest.approx(wins / 4)
    assert float(sfg["pickscore_win_ci_low"]) <= wins / 4 <= float(sfg["pickscore_win_ci_high"])

    data = json.loads((out / "metrics.json").read_text())
    assert data["settings"]["resize"] == "pil-bicubic" and data["settings"]["reference_images"] == 4
    assert data["settings"]["fid_features"] == 64
    assert [r["arm"] for r in data["rows"]] == ["cfg", "sfg"]
    md = (out / "metrics.md").read_text()
    assert md.startswith("| Method | Role | Images | FID ↓ | CLIP score ↑ | IS ↑ | PickScore win rate ↑ (95% CI) | Ties |")
    assert f"| sfg | treatment | 4 | {fid_sfg:.2f} |" in md

    # Another run against the same reference reuses its statistics (no reference pass): a manifest
    # holding two of the same baseline images still has FID ~0 for its baseline arm.
    import sampler.metrics

    small = tmp_path / "small"
    small.mkdir()
    lines = (pairs / "manifest.jsonl").read_text().splitlines()[:2]
    (small / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    for r in recs[:2]:
        for side in (r.baseline, r.treatment):
            shutil.copy(pairs / side.file, small / side.file)
    seen = []
    real_batches = sampler.metrics.inception_batches
    sampler.metrics.inception_batches = lambda paths, *a, **k: (seen.append(list(paths)), real_batches(paths, *a, **k))[1]
    try:
        res = _run("metrics", "table", "--manifest", small, "--reference", ref, "--inception-weights", weights["inception"],
                   "--out", out, "--batch-size", 4, "--device", "cpu", "--fid-features", 64)
    finally:
        sampler.metrics.inception_batches = real_batches
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "reusing reference statistics" in res.output
    assert sorted(len(p) for p in seen) == [2, 2]  # the two arms only
    with open(out / "metrics.csv", newline="") as f:
        again = {r["arm"]: r for r in csv.DictReader(f)}
    assert float(again["sfg"]["fid"]) > 0 and again["cfg"]["images"] == "2"
    # Two images: one IS split, no spread; written as empty / null, never NaN.
    assert again["cfg"]["is_splits"] == "1" and again["cfg"]["is_std"] == ""
    assert json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def test_identical_arms_tie_on_pickscore(weights, tmp_path):
    pairs = write_tiny_manifest(tmp_path / "same", [("a", "a cat"), ("b", "a dog"), ("c", "a kite")],
                                seeds=(0,), size=36, treatment_equals_baseline=True)
    out = tmp_path / "m"
    res = _run("metrics", "table", "--manifest", pairs, "--pickscore", weights["pickscore"], "--out", out, "--device", "cpu")
    assert res.exit_code == 0, res.output + repr(res.exception)
    data = json.loads((out / "metrics.json").read_text())
    sfg = next(r for r in data["rows"] if r["arm"] == "sfg")
    assert (sfg["pickscore_wins"], sfg["pickscore_ties"], sfg["pickscore_losses"]) == (0, 3, 0)
    assert sfg["pickscore_win_rate"] == 0.0 and sfg["pickscore_tie_rate"] == 1.0
    assert sfg["fid"] is None and sfg["clip_score"] is None  # not asked for
    assert "| sfg | treatment | 3 | — | — | — | 0.0% (" in (out / "metrics.md").read_text()


def test_metrics_errors_name_the_expected_files(weights, tmp_path):
    pairs = write_tiny_manifest(tmp_path / "pairs", [("p1", "a cat")], seeds=(0, 1), size=32)
    base = ("metrics", "table", "--manifest", pairs, "--out", tmp_path / "o", "--device", "cpu")
    res = _run(*base, "--inception-weights", tmp_path / "missing.pth")
    assert res.exit_code != 0 and "missing.pth does not exist" in res.output and "pt_inception-2015-12-05-6726825d.pth" in res.output
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    res = _run(*base, "--inception-weights", bad)
    assert res.exit_code != 0 and "is not torch-fidelity InceptionV3 weights" in res.output
    res = _run(*base, "--pickscore", tmp_path / "nopick")
    assert res.exit_code != 0 and "PickScore_v1 model folder" in res.output
    empty = tmp_path / "emptypick"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    res = _run(*base, "--pickscore", empty)
    assert res.exit_code != 0 and "missing model.safetensors" in res.output
    res = _run(*base)
    assert res.exit_code != 0 and "at least one of" in res.output
    res = _run(*base, "--reference", tmp_path, "--pickscore", weights["pickscore"])
    assert res.exit_code != 0 and "--reference (FID) needs --inception-weights" in res.output
    res = _run(*base, "--reference", tmp_path / "noref", "--inception-weights", weights["inception"])
    assert res.exit_code != 0 and "reference image folder not found" in res.output
    # A manifest whose image was altered is refused before any model runs.
    from sampler.manifest import iter_records

    rec = next(r for _, r in iter_records(pairs))
    (pairs / rec.treatment.file).write_bytes(b"tampered")
    res = _run(*base, "--pickscore", weights["pickscore"])
    assert res.exit_code != 0 and "does not match its sha256" in res.output


def test_reference_images_of_any_size_are_cropped(tmp_path):
    """Non-square references of mixed sizes go through every resize mode."""
    from sampler.metrics import inception_batches

    ref = write_reference_images(tmp_path / "ref", 3, size=(64, 40))
    write_reference_images(tmp_path / "ref2", 2, seed=9, size=(30, 50))
    files = sorted(ref.iterdir()) + sorted((tmp_path / "ref2").iterdir())
    shapes = [tuple(b.shape) for _, b in inception_batches(files, "pil-bicubic", 8)]
    assert shapes == [(5, 3, 299, 299)]
    shapes = sorted(tuple(b.shape) for _, b in inception_batches(files, "tf1", 8))
    assert shapes == [(2, 3, 30, 30), (3, 3, 40, 40)]
    shapes = [tuple(b.shape) for _, b in inception_batches(files, "torch-antialias", 2)]
    assert shapes == [(2, 3, 299, 299), (2, 3, 299, 299), (1, 3, 299, 299)]
