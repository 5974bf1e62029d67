"""Choosing a prompt subset that is diverse and fair (evaluation protocol, section 1).

Pure functions on NumPy arrays: no torch, no files. The CLI (`sfgeval prompts ...`) does the I/O.

Conventions
- Embeddings are an array ``[N, D]`` (one row per prompt). Statistics are computed in float64
  whatever the input dtype.
- Covariances are unbiased (``ddof=1``), with no ridge by default (``eps = 0``). A subset smaller
  than the embedding width has a singular sample covariance; the distance needs no ridge for it,
  because the trace of the matrix square root comes from symmetric eigenvalues clipped at 0. An
  absolute ridge ``cov + eps * I`` is still available, but it is not harmless: on unit-norm
  512-d embeddings (per-dimension variance ~0.002) ``eps = 1e-6`` adds ``sqrt(eps * lambda)`` for
  every empty direction of a 100-200 prompt subset and lowers the distance by about 20%.
- The Fréchet distance is the squared 2-Wasserstein distance between Gaussians (the "FID" formula),
  in squared embedding units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SIZES = (100, 200, 500, 1000, 2000, 5000, 10000)
DEFAULT_DRAWS = 10
DEFAULT_EPS = 0.0
DEFAULT_PERCENTILES = (10.0, 50.0, 90.0)
DEFAULT_LABELS = ("low", "middle", "high")


@dataclass(frozen=True)
class ReferenceStats:
    """Gaussian statistics of the reference (full) set, with its covariance factorised once.

    ``cov == factor @ factor.T`` where ``factor = U diag(sqrt(lambda))`` from the symmetric
    eigendecomposition ``cov = U diag(lambda) U.T``. For any PSD ``S``, ``factor.T @ S @ factor``
    is orthogonally similar to ``cov^(1/2) S cov^(1/2)``, so its eigenvalues give
    ``tr((cov^(1/2) S cov^(1/2))^(1/2))`` without ever forming a non-symmetric product.
    """

    mean: np.ndarray  # [D] float64
    cov: np.ndarray  # [D, D] float64, regularised
    factor: np.ndarray  # [D, D] float64
    trace: float  # tr(cov)
    eps: float


def gaussian_stats(x: np.ndarray, eps: float = DEFAULT_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and regularised unbiased covariance ``[D, D]`` (float64) of rows of ``x [N, D]``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected embeddings of shape [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to estimate a covariance, got {x.shape[0]}")
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    cov[np.diag_indices_from(cov)] += eps
    return mean, cov


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    """``U diag(sqrt(max(lambda, 0)))`` for symmetric ``cov`` (tiny negative rounding clipped)."""
    lam, u = np.linalg.eigh(cov)
    return u * np.sqrt(np.clip(lam, 0.0, None))


def reference_stats(x: np.ndarray, eps: float = DEFAULT_EPS) -> ReferenceStats:
    """Statistics of the full set, computed and factorised once for many subset comparisons."""
    mean, cov = gaussian_stats(x, eps)
    return ReferenceStats(mean=mean, cov=cov, factor=_psd_factor(cov), trace=float(np.trace(cov)), eps=eps)


def _trace_sqrt_product(cov: np.ndarray, factor: np.ndarray) -> float:
    """``tr((A^(1/2) cov A^(1/2))^(1/2))`` where ``A = factor @ factor.T``; symmetric eigenvalues only."""
    m = factor.T @ cov @ factor
    m = (m + m.T) * 0.5  # exact symmetry for eigvalsh, rounding only
    lam = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def frechet_from_stats(mean: np.ndarray, cov: np.ndarray, ref: ReferenceStats) -> float:
    """Fréchet distance between N(mean, cov) and the reference Gaussian.

    ``|mean - ref.mean|^2 + tr(cov) + tr(ref.cov) - 2 tr((ref.cov^(1/2) cov ref.cov^(1/2))^(1/2))``.
    Clipped at 0: the exact value is non-negative, tiny negatives are rounding.
    """
    diff = np.asarray(mean, np.float64) - ref.mean
    d = float(diff @ diff) + float(np.trace(cov)) + ref.trace - 2.0 * _trace_sqrt_product(cov, ref.factor)
    return max(d, 0.0)


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians given by mean ``[D]`` and PSD covariance ``[D, D]``."""
    cov2 = np.asarray(cov2, np.float64)
    ref = ReferenceStats(
        mean=np.asarray(mean2, np.float64), cov=cov2, factor=_psd_factor(cov2), trace=float(np.trace(cov2)), eps=0.0
    )
    return frechet_from_stats(np.asarray(mean1, np.float64), np.asarray(cov1, np.float64), ref)


def frechet_to_reference(subset: np.ndarray, ref: ReferenceStats) -> float:
    """Fréchet distance between the Gaussian fit of ``subset [n, D]`` and the reference statistics.

    The subset covariance gets the same ridge ``ref.eps`` as the reference; works for ``n < D``.
    """
    mean, cov = gaussian_stats(subset, ref.eps)
    return frechet_from_stats(mean, cov, ref)


def _frechet_mapped(xs: np.ndarray, zs: np.ndarray, ridge: np.ndarray, ref: ReferenceStats) -> float:
    """`frechet_to_reference` for a subset whose rows are also given mapped, ``zs = xs @ ref.factor``."""
    n, d = xs.shape
    diff = xs.mean(axis=0) - ref.mean
    trace_s = float(xs.var(axis=0, ddof=1).sum()) + ref.eps * d
    zc = zs - zs.mean(axis=0)
    m = zc.T @ zc / (n - 1)
    m[np.diag_indices_from(m)] += ridge
    lam = np.linalg.eigvalsh(m)
    tr_sqrt = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    return max(float(diff @ diff) + trace_s + ref.trace - 2.0 * tr_sqrt, 0.0)


def subset_seed(base_seed: int, size: int, draw: int) -> int:
    """The recorded seed of draw ``draw`` at subset size ``size``: independent streams per cell."""
    return int(np.random.SeedSequence([int(base_seed), int(size), int(draw)]).generate_state(1)[0])


def draw_subset(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct indices out of ``range(n)``, sorted, reproducible from ``seed`` alone."""
    if not 0 < size <= n:
        raise ValueError(f"subset size {size} must be between 1 and the number of prompts ({n})")
    return np.sort(np.random.default_rng(int(seed)).choice(n, size=size, replace=False))


@dataclass(frozen=True)
class SweepRow:
    """One draw of the diversity sweep; ``seed`` alone reproduces the subset with `draw_subset`."""

    size: int
    draw: int
    seed: int
    frechet_distance: float


def diversity_sweep(
    embeddings: np.ndarray,
    sizes: Sequence[int] = DEFAULT_SIZES,
    draws: int = DEFAULT_DRAWS,
    base_seed: int = 0,
    eps: float = DEFAULT_EPS,
    skip: Iterable[tuple[int, int, int]] = (),
    on_row: Callable[[SweepRow], None] | None = None,
) -> list[SweepRow]:
    """Fréchet distance between random subsets and the full set, ``draws`` times per size.

    The full set's statistics are computed and factorised once, and every row is mapped through
    the factor once, so a subset costs its covariance plus one symmetric eigenvalue problem.
    ``skip`` holds ``(size, draw,
    seed)`` cells already done (they are not recomputed or returned); ``on_row`` is called after
    each new row, e.g. to append it to a file and advance a progress bar.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    n = x.shape[0]
    for s in sizes:
        if not 2 <= s <= n:
            raise ValueError(f"subset size {s} must be between 2 and the number of prompts ({n})")
    if draws < 1:
        raise ValueError("draws must be at least 1")
    ref = reference_stats(x, eps)
    # Covariance is linear: cov(X B) = B^T cov(X) B. Mapping every row through the reference
    # factor once turns each subset's B^T S B (two D^3 products) into the covariance of its
    # mapped rows; B^T (eps I) B = eps diag(lambda) since the factor's columns are orthogonal.
    z = x @ ref.factor  # [N, D]
    ridge = eps * np.einsum("ij,ij->j", ref.factor, ref.factor)  # eps * lambda
    done = set(skip)
    rows: list[SweepRow] = []
    for size in sizes:
        for draw in range(draws):
            seed = subset_seed(base_seed, size, draw)
            if (size, draw, seed) in done:
                continue
            idx = draw_subset(n, size, seed)
            row = SweepRow(size, draw, seed, _frechet_mapped(x[idx], z[idx], ridge, ref))
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def summarise_sweep(rows: Iterable[SweepRow]) -> list[dict[str, float]]:
    """Per size: draws, mean, standard deviation (ddof=1; 0 for one draw), min and max, by size."""
    by_size: dict[int, list[float]] = {}
    for r in rows:
        by_size.setdefault(r.size, []).append(r.frechet_distance)
    out = []
    for size in sorted(by_size):
        v = np.asarray(by_size[size])
        out.append(
            {
                "size": size,
                "draws": len(v),
                "mean": float(v.mean()),
                "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "min": float(v.min()),
                "max": float(v.max()),
            }
        )
    return out


@dataclass(frozen=True)
class StratumPick:
    """A prompt chosen for a stratum: its index in the score list, its label, and the target score."""

    index: int
    label: str
    percentile: float
    target: float
    score: float


def percentile_strata(
    scores: Sequence[float],
    k: int,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    labels: Sequence[str] = DEFAULT_LABELS,
) -> list[StratumPick]:
    """The ``k`` prompts nearest each percentile of ``scores``, one label per percentile.

    Targets are ``numpy.percentile(scores, p)`` (linear interpolation). Each prompt goes to at most
    one stratum. Collisions are resolved globally by distance: all (prompt, stratum) candidates are
    taken in order of ``|score - target|``, ties broken by stratum order then prompt index, and a
    candidate is accepted while its stratum has fewer than ``k`` prompts and the prompt is still
    free. So a prompt near two targets goes to the nearer one, and the other stratum takes its
    next-nearest prompt. Returns picks ordered by stratum, then distance.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError("scores must be a non-empty list of numbers")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if len(percentiles) != len(labels):
        raise ValueError(f"{len(percentiles)} percentiles but {len(labels)} labels")
    if len(set(labels)) != len(labels):
        raise ValueError("stratum labels must be distinct")
    if k < 1:
        raise ValueError("k must be at least 1")
    if k * len(percentiles) > len(s):
        raise ValueError(f"{len(percentiles)} strata of k={k} need {k * len(percentiles)} prompts, only {len(s)} scored")
    for p in percentiles:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is outside 0..100")
    targets = np.percentile(s, percentiles)
    dist = np.abs(s[None, :] - targets[:, None])  # [strata, prompts]
    order = np.lexsort((np.tile(np.arange(len(s)), len(targets)), np.repeat(np.arange(len(targets)), len(s)), dist.ravel()))
    taken = np.zeros(len(s), dtype=bool)
    counts = [0] * len(targets)
    picks: list[StratumPick] = []
    for flat in order:
        j, i = divmod(int(flat), len(s))
        if counts[j] >= k or taken[i]:
            continue
        taken[i] = True
        counts[j] += 1
        picks.append(StratumPick(i, labels[j], float(percentiles[j]), float(targets[j]), float(s[i])))
        if all(c >= k for c in counts):
            break
    picks.sort(key=lambda p: (labels.index(p.label), abs(p.score - p.target), p.index))
    return picks
