"""Fréchet distance, the diversity sweep and percentile strata (sampler/subsample.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from sampler import subsample


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _closed_form(m1, s1, m2, s2) -> float:
    # Independent reference: the textbook formula with scipy's general matrix square root.
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def test_frechet_matches_closed_form_for_known_gaussians():
    rng = np.random.default_rng(1)
    d = 12
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    expected = _closed_form(m1, s1, m2, s2)
    assert expected > 1.0
    assert subsample.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)
    # Commuting case with a hand-computable answer: diagonal covariances.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    hand = 1.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # |dmu|^2 = 1, sum (sqrt a - sqrt b)^2 = 2
    got = subsample.frechet_distance(np.zeros(3), np.diag(a), np.array([1.0, 0, 0]), np.diag(b))
    assert got == pytest.approx(hand) and hand == pytest.approx(3.0)


def test_frechet_of_sample_stats_matches_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    y = rng.normal(loc=0.5, size=(300, 8))
    ref = subsample.reference_stats(x, eps=1e-6)
    my, sy = subsample.gaussian_stats(y, eps=1e-6)
    assert subsample.frechet_to_reference(y, ref) == pytest.approx(_closed_form(my, sy, ref.mean, ref.cov), rel=1e-8)


def _exact_rank_deficient(sub: np.ndarray, full: np.ndarray) -> float:
    """No ridge at all: tr((A^1/2 B A^1/2)^1/2) = sum of sqrt of the eigenvalues of A B (real, >= 0)."""
    a, b = np.cov(full, rowvar=False), np.cov(sub, rowvar=False)
    lam = np.clip(np.linalg.eigvals(a @ b).real, 0, None)
    diff = sub.mean(axis=0) - full.mean(axis=0)
    return float(diff @ diff + np.trace(a) + np.trace(b) - 2 * np.sqrt(lam).sum())


def test_default_has_no_ridge_and_a_fixed_ridge_would_shrink_the_distance():
    """Issue 9.8: unit-norm 512-d embeddings, subsets of 100-200: the default is the exact distance."""
    rng = np.random.default_rng(8)
    full = rng.normal(size=(1500, 512)) * np.linspace(0.2, 2.0, 512)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    assert subsample.DEFAULT_EPS == 0.0
    ref = subsample.reference_stats(full)
    for size, row in zip((100, 200), subsample.diversity_sweep(full, sizes=(100, 200), draws=1, base_seed=2)):
        sub = full[subsample.draw_subset(len(full), size, row.seed)]
        exact = _exact_rank_deficient(sub, full)
        assert row.frechet_distance == pytest.approx(exact, rel=1e-6)
        assert subsample.frechet_to_reference(sub, ref) == pytest.approx(exact, rel=1e-6)
        ridged = subsample.frechet_to_reference(sub, subsample.reference_stats(full, eps=1e-6))
        assert ridged < 0.98 * exact  # the old fixed ridge biased it downwards


def test_frechet_is_zero_for_identical_sets():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16))
    ref = subsample.reference_stats(x)
    assert subsample.frechet_to_reference(x, ref) == pytest.approx(0.0, abs=1e-9)
    assert subsample.frechet_to_reference(x[::-1].copy(), ref) == pytest.approx(0.0, abs=1e-9)


def test_subset_smaller_than_width_is_finite_and_matches_regularised_closed_form():
    rng = np.random.default_rng(4)
    d = 64
    full = rng.normal(size=(2000, d)) / np.sqrt(d)
    ref = subsample.reference_stats(full, eps=1e-6)
    for n in (3, 10, 40):
        sub = full[rng.choice(len(full), n, replace=False)]
        got = subsample.frechet_to_reference(sub, ref)
        assert np.isfinite(got) and got > 0
        ms, ss = subsample.gaussian_stats(sub, eps=1e-6)
        assert np.linalg.matrix_rank(ss - 1e-6 * np.eye(d)) < d  # the raw covariance is singular
        assert got == pytest.approx(_closed_form(ms, ss, ref.mean, ref.cov), rel=1e-6)
    # The sweep's mapped-rows shortcut gives the same distances for subsets narrower than D.
    for r in subsample.diversity_sweep(full, sizes=(3, 10, 40), draws=2, base_seed=1, eps=1e-6):
        sub = full[subsample.draw_subset(len(full), r.size, r.seed)]
        assert r.frechet_distance == pytest.approx(subsample.frechet_to_reference(sub, ref), rel=1e-9)
    # Float32 input gives the float64 answer (statistics are always float64).
    sub = full[:10]
    assert subsample.frechet_to_reference(sub.astype(np.float32), ref) == pytest.approx(
        subsample.frechet_to_reference(sub.astype(np.float32).astype(np.float64), ref), rel=1e-12
    )


def test_sweep_is_seeded_resumable_and_shrinks_with_size():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1500, 8))
    rows = subsample.diversity_sweep(x, sizes=(20, 1000), draws=4, base_seed=7)
    assert [(r.size, r.draw) for r in rows] == [(20, d) for d in range(4)] + [(1000, d) for d in range(4)]
    assert len({r.seed for r in rows}) == 8
    again = subsample.diversity_sweep(x, sizes=(20, 1000), draws=4, base_seed=7)
    assert again == rows
    # A recorded seed alone reproduces its row.
    r = rows[5]
    ref = subsample.reference_stats(x)
    assert subsample.frechet_to_reference(x[subsample.draw_subset(len(x), r.size, r.seed)], ref) == pytest.approx(
        r.frechet_distance
    )
    # Done cells are skipped.
    rest = subsample.diversity_sweep(x, sizes=(20, 1000), draws=4, base_seed=7, skip=[(q.size, q.draw, q.seed) for q in rows[:3]])
    assert rest == rows[3:]
    summary = subsample.summarise_sweep(rows)
    assert [s["size"] for s in summary] == [20, 1000]
    assert summary[0]["mean"] > summary[1]["mean"]
    assert summary[0]["min"] <= summary[0]["mean"] <= summary[0]["max"]
    with pytest.raises(ValueError, match="between 2 and the number of prompts"):
        subsample.diversity_sweep(x, sizes=(2000,), draws=1)


def test_draw_subset_reproducible_and_distinct():
    a = subsample.draw_subset(100, 30, seed=11)
    assert len(set(a.tolist())) == 30 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, subsample.draw_subset(100, 30, seed=11))
    assert not np.array_equal(a, subsample.draw_subset(100, 30, seed=12))
    with pytest.raises(ValueError, match="subset size 101"):
        subsample.draw_subset(100, 101, seed=0)


def test_percentile_strata_picks_nearest_prompts():
    # Scores 0..100 in shuffled order: the 10th/50th/90th percentiles are exactly 10, 50, 90.
    shuffled = np.random.default_rng(0).permutation(101).astype(float)
    picks = subsample.percentile_strata(shuffled, k=3)
    by_label = {lab: sorted(shuffled[p.index] for p in picks if p.label == lab) for lab in ("low", "middle", "high")}
    assert by_label == {"low": [9, 10, 11], "middle": [49, 50, 51], "high": [89, 90, 91]}
    for p in picks:
        assert p.score == shuffled[p.index]
        assert p.target == {"low": 10.0, "middle": 50.0, "high": 90.0}[p.label]
    assert [p.label for p in picks] == ["low"] * 3 + ["middle"] * 3 + ["high"] * 3
    # k=2: 9 and 11 tie at distance 1 from the target; the lower prompt index wins (deterministic).
    picks2 = subsample.percentile_strata(shuffled, k=2)
    low = {p.index for p in picks2 if p.label == "low"}
    i9, i11 = int(np.where(shuffled == 9)[0][0]), int(np.where(shuffled == 11)[0][0])
    i10 = int(np.where(shuffled == 10)[0][0])
    assert low == {i10, min(i9, i11)}


def test_percentile_strata_configurable_and_collisions_resolved_by_distance():
    scores = [0.0, 1.0, 2.0, 2.1, 3.0, 10.0]
    # Targets for percentiles 40 and 60 are 2.0 and 2.1 (linear interpolation). Prompt 3 (2.1) is
    # 0.1 from "a" but 0 from "b", so it goes to "b"; "a" then takes 1.0 (distance 1.0, which ties
    # 3.0 but 3.0 already went to "b" at distance 0.9).
    picks = subsample.percentile_strata(scores, k=2, percentiles=(40, 60), labels=("a", "b"))
    a = sorted(p.index for p in picks if p.label == "a")
    b = sorted(p.index for p in picks if p.label == "b")
    assert a == [1, 2] and b == [3, 4]
    with pytest.raises(ValueError, match="need 6 prompts"):
        subsample.percentile_strata(scores[:5], k=2)
    with pytest.raises(ValueError, match="labels"):
        subsample.percentile_strata(scores, k=1, percentiles=(10, 90), labels=("x",))
