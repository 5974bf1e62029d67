"""Probe: the win-rate test's level with a wild cluster bootstrap-t beside the report's t df test.

    PYTHONPATH=. python3 benchmarks/wild_bootstrap_probe.py [--scenario NAME] [--reps 1500] [--draws 199]
                                                           [--seed 301] [--at-truth]

Issue 23's last miss: with heavy raters (5 of 40 give 60% of the votes) the report's win-rate t
test rejects about 0.052 of null studies (docs/statistics.md). This probe simulates studies of one
scenario of `benchmarks/calibration.py` and tests win rate = 0.5 (or, with --at-truth, the
scenario's true value: one minus the coverage an inverted test would have) two ways on the same
studies:

- the report's test (`robust.two_way` + `robust.t_test`: CR2 two-way variance, the t statistic's df,
  arcsine scale);
- a wild cluster bootstrap-t: the null imposed (residuals a - theta0 of decisive votes), Rademacher
  weights per participant, the report's two-way V recomputed in every draw, p = (1 + #{|t*| >= |t|})
  / (draws + 1).

It is a probe for choosing the next method, not part of the report: the bootstrap has no interval
here (that needs test inversion or a bootstrap df) and costs `draws` variance computations per
study. Measured (docs/statistics.md): heavy raters 0.035 / 0.044 against the t df's 0.055 / 0.059
(seeds 301 / 302, 1,500 studies); Zipf logit at the truth 0.040 against 0.057 (seed 303, 1,000).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration  # the scenarios and their simulator

from app.statistics import robust


def two_way_v(a: np.ndarray, b: np.ndarray, participant, prompt, stratum) -> tuple[float, float]:
    """(theta, V): the report's two-way CR2 variance V_P + V_Q - V_PQ (no df needed for a bootstrap-t)."""
    theta, p_p, p_q, p_pq, _, _ = robust._parts(a, b, participant, prompt, stratum, robust.ADJUST)
    # robust.combine's V (its df is not used: Bell-McCaffrey's is passed, so the t df is never computed)
    v, _ = robust.combine(p_p.v, p_q.v, p_pq.v, p_p.df_bm, p_q.df_bm, "min")
    return theta, float(v[0]) / b.sum() ** 2


def wild_p_value(a, b, participant, prompt, stratum, theta0: float, draws: int, rng: np.random.Generator) -> float:
    """Two-sided wild cluster bootstrap-t p-value of theta = theta0 (decisive votes: b = 1)."""
    theta, v = two_way_v(a, b, participant, prompt, stratum)
    t = (theta - theta0) / math.sqrt(v)
    codes, g = robust._dense(participant)
    e0 = a - theta0 * b
    t_star = np.empty(draws)
    for k in range(draws):
        w = rng.choice([-1.0, 1.0], g)
        th, vs = two_way_v(theta0 * b + w[codes] * e0, b, participant, prompt, stratum)
        t_star[k] = (th - theta0) / math.sqrt(vs) if vs > 0 else 0.0
    return float((1 + np.sum(np.abs(t_star) >= abs(t))) / (draws + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="heavy raters latent P=40 null", help="a scenario name of calibration.grid()")
    ap.add_argument("--reps", type=int, default=1500)
    ap.add_argument("--draws", type=int, default=199)
    ap.add_argument("--seed", type=int, default=301)
    ap.add_argument("--at-truth", action="store_true", help="test the scenario's true win rate instead of 0.5")
    args = ap.parse_args()
    names = {s.name: s for s in calibration.grid()}
    if args.scenario not in names:
        ap.error(f"unknown scenario {args.scenario!r}; one of: {', '.join(names)}")
    s = names[args.scenario]
    theta0 = calibration.truth(s)[0]["win_rate"] if args.at_truth else 0.5
    rng = np.random.default_rng(args.seed)
    started = time.time()
    reject_t, reject_wild = [], []
    for _ in tqdm(range(args.reps), desc=s.name, unit="study"):
        d = calibration.simulate(s, rng)
        a, b = robust.ratio_parts(d["score"])["win_rate"]
        keep = b != 0
        cols = (a[keep], b[keep], d["participant"][keep], d["prompt"][keep], d["stratum"][keep])
        p_t = robust.t_test(robust.two_way(*cols), theta0)["p_value"]
        reject_t.append(p_t is not None and p_t < 0.05)
        reject_wild.append(wild_p_value(*cols, theta0, args.draws, rng) < 0.05)
    se = math.sqrt(0.05 * 0.95 / args.reps)
    print(f"{s.name}: {args.reps} studies, theta0 {theta0:.4f}, {args.draws} draws, seed {args.seed}")
    print(f"  report's t df test rejects   {np.mean(reject_t):.4f}")
    print(f"  wild cluster bootstrap-t     {np.mean(reject_wild):.4f}   (MC SE near 0.05: {se:.4f}; "
          f"{time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
