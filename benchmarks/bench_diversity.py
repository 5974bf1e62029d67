"""Time of the `prompts diversity` step against the same sweep done naively with scipy.linalg.sqrtm.

Both sides compute the Fréchet distance between each random subset and the full set of
random unit-norm embeddings (30,000 x 1024 by default, like ViT-g-14 text embeddings of
MS-COCO-30K), for the same subsets (same recorded seeds), float64, same eps ridge.

- ours: `sampler.subsample.diversity_sweep`: the full set's covariance is factorised once
  (symmetric eigendecomposition); per subset one symmetric eigenvalue problem.
- naive: the textbook formula per subset, ``scipy.linalg.sqrtm(cov_subset @ cov_full)`` (a
  general, non-symmetric square root via a complex Schur decomposition), with the full set's
  mean and covariance computed once (so the comparison isolates the square root, not I/O).

Both sides also include computing each subset's mean and covariance. Timings (wall-clock and
process CPU time) come from one process: ours, naive, ours again; ours reports the faster of
its two runs (the first also warms caches).

    python benchmarks/bench_diversity.py                         # defaults: 30000x1024, sizes 100..10000, 10 draws
    python benchmarks/bench_diversity.py --draws 2               # fewer draws for a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampler import subsample


def naive_sweep(x: np.ndarray, sizes, draws: int, base_seed: int, eps: float) -> list[float]:
    import scipy.linalg

    mean_full, cov_full = subsample.gaussian_stats(x, eps)
    out = []
    for size in sizes:
        for draw in range(draws):
            seed = subsample.subset_seed(base_seed, size, draw)
            sub = x[subsample.draw_subset(len(x), size, seed)]
            mean, cov = subsample.gaussian_stats(sub, eps)
            covmean = scipy.linalg.sqrtm(cov @ cov_full)
            covmean = covmean.real if np.iscomplexobj(covmean) else covmean
            diff = mean - mean_full
            out.append(float(diff @ diff + np.trace(cov) + np.trace(cov_full) - 2 * np.trace(covmean)))
    return out


def _threads() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())
    except ImportError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--sizes", default="100,200,500,1000,2000,5000,10000")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rng = np.random.default_rng(args.seed)
    # Correlated, unit-norm rows: closer to CLIP embeddings than isotropic noise.
    x = rng.standard_normal((args.n, args.dim)) @ (rng.standard_normal((args.dim, args.dim)) / np.sqrt(args.dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - w, time.process_time() - c

    ours, w1, c1 = timed(lambda: subsample.diversity_sweep(x, sizes, args.draws, args.seed, args.eps))
    result = {
        "n": args.n, "dim": args.dim, "sizes": sizes, "draws": args.draws, "cells": len(ours), "eps": args.eps,
        "threads": _threads(),
    }
    if args.skip_naive:
        result.update(ours_wall_s=round(w1, 2), ours_cpu_s=round(c1, 2))
    else:
        naive, wn, cn = timed(lambda: naive_sweep(x, sizes, args.draws, args.seed, args.eps))
        _, w2, c2 = timed(lambda: subsample.diversity_sweep(x, sizes, args.draws, args.seed, args.eps))
        w_ours, c_ours = min(w1, w2), min(c1, c2)
        d_ours = np.array([r.frechet_distance for r in ours])
        d_naive = np.array(naive)
        result.update(
            ours_wall_s=round(w_ours, 2),
            naive_wall_s=round(wn, 2),
            ratio_wall_naive_over_ours=round(wn / w_ours, 2),
            # CPU time (all threads) is less sensitive to other load on a shared machine.
            ours_cpu_s=round(c_ours, 2),
            naive_cpu_s=round(cn, 2),
            ratio_cpu_naive_over_ours=round(cn / c_ours, 2),
            max_rel_diff=float(np.max(np.abs(d_ours - d_naive) / np.abs(d_naive))),
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
