"""Power of the report's shown test at the size the planner recommends.

    python3 benchmarks/shown_test_power.py [--sims 1000] [--seed 11] [--win-rate 0.6] [--power 0.8]

The planner (`app.statistics.planning.plan`) sizes a study so that the report's interval lies above
0.5 with the target power (its power curve and its realised-power check count studies whose
t(df) interval, on the arcsine scale, excludes 0.5 upwards). The p-value the report shows
(`significance.shown_test`) is the larger of that t(df) test's and the same statistic's wild
cluster bootstrap's when the interval's df is below 50, so the two verdicts can differ near the
line. This benchmark plans a study, simulates `--sims` fresh
studies of the recommended size (the planner's own simulator, another seed), and prints the share
that the interval calls (what the plan promises) beside the share the shown test calls (p < alpha,
estimate above 0.5), with Monte Carlo standard errors and the share of studies where they
disagree.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.statistics import robust
from app.statistics.clustered import Effects, simulate_batch
from app.statistics.planning import PlanRequest, plan
from app.statistics.significance import BOOTSTRAP_BELOW_DF, Clusters, shown_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--win-rate", type=float, default=0.6)
    ap.add_argument("--power", type=float, default=0.8)
    args = ap.parse_args()
    started = time.time()
    req = PlanRequest(effects=Effects(win_rate=args.win_rate), power=args.power)
    n = plan(req)["participants"]
    m = req.design.ratings_per_participant
    batch = simulate_batch(req.design, req.effects, n, args.sims, np.random.default_rng([args.seed, n]))
    by_interval, by_test, dfs = [], [], []
    for i in tqdm(range(args.sims), desc=f"{n} participants", unit="study"):
        a, b = robust.ratio_parts(batch["score"][i])["win_rate"]
        cols = (batch["participant"][i], batch["prompt"][i], batch["stratum"][i])
        est = robust.two_way(a, b, *cols)
        t = robust.t_test(est, 0.5)
        above = est.theta is not None and est.theta > 0.5
        by_interval.append(above and t["p_value"] is not None and t["p_value"] < req.alpha)
        p = shown_test(est, 0.5, "win_rate", a, b, Clusters(*cols), req.alpha)["p_value"]
        by_test.append(above and p is not None and p < req.alpha)
        dfs.append(est.df if est.df is not None else np.nan)
    x, y = np.array(by_interval), np.array(by_test)
    se = math.sqrt(args.power * (1 - args.power) / args.sims)
    print(f"plan: win rate {args.win_rate}, target power {args.power}: {n} participants x {m} ratings"
          f"; {args.sims} fresh studies, "
          f"seed {args.seed}, {time.time() - started:.0f} s")
    print(f"  interval above 0.5 (what the plan counts)   {x.mean():.3f}   (MC SE {se:.3f})")
    print(f"  shown test: p < {req.alpha}                     {y.mean():.3f}   (the bootstrap ran in "
          f"{np.mean(np.array(dfs) < BOOTSTRAP_BELOW_DF):.3f} of studies: df below {BOOTSTRAP_BELOW_DF:.0f})")
    print(f"  they disagree in {np.mean(x != y):.3f} of studies (interval only {np.mean(x & ~y):.3f}, "
          f"test only {np.mean(~x & y):.3f})")


if __name__ == "__main__":
    main()
