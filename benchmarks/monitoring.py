"""Peeking-safe monitoring, proved by simulation (see docs/monitoring.md).

    python3 benchmarks/monitoring.py [--sims 4000] [--seed 1] [--power-sims 1000] [--only NAME] [--json-out FILE]

Three designs, each with participant / prompt / pair effects sd 0.5 / 0.3 / 0.2 on the latent
scale and 20% ties, a look after every 20 preference ratings up to the planned total:

- balanced: 3 strata x 20 prompts, 1 seed, 60 participants x 20 ratings (1,200 ratings, 60 looks);
- heavy raters: 3 strata x 20 prompts, 2 seeds, 40 participants of whom 5 give 60% of the votes
  (105 each, the others 10), arriving interleaved (875 ratings, 44 looks);
- 15 prompts: 3 strata x 5 prompts, 4 seeds, 60 participants x 20 ratings (1,200 ratings).

Under no true preference (win rate 0.5): the two-sided type-I error (monitoring stops with
"treatment preferred" or "baseline preferred") with its Monte Carlo SE and one-sided 95% upper
bound (rate + 1.645 SE), each side's share, and naive peeking (|z| >= 1.96 at any look). In the
balanced design with true win rate 0.6: power, the fixed plan with the same power, ratings saved.
Monitoring runs the report's estimator (`app.statistics.robust` via `app.statistics.clustered`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.statistics.clustered import Design, Effects  # noqa: E402
from app.statistics.monitoring_sim import Scenario, run, savings  # noqa: E402

EFFECTS = dict(tie_rate=0.2, sd_participant=0.5, sd_prompt=0.3, sd_pair=0.2)
DESIGNS = {
    "balanced": dict(design=Design(3, 20, 1, 20), n_participants=60),
    "heavy raters": dict(design=Design(3, 20, 2, 10), n_participants=40, heavy=True),
    "15 prompts": dict(design=Design(3, 5, 4, 20), n_participants=60),
}


def naive_peeking(result: dict) -> float:
    """Share of null studies where |z| >= 1.96 at some look (no alpha spending)."""
    z = np.nan_to_num(result["_z"], nan=0.0)
    return float((np.abs(z) >= 1.959964).any(axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=4000, help="null studies per design (>= 4000 for the claim)")
    ap.add_argument("--power-sims", type=int, default=1000, help="studies at win rate 0.6 (balanced design)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="", help="run only designs whose name contains this")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    out = {}
    print(f"{args.sims} null studies per design; effects {EFFECTS}; looks every 20 ratings\n")
    print("| design | planned ratings | looks | two-sided type-I (MC SE) | 95% upper bound | 'treatment' | "
          "'baseline' | naive peeking |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (name, kw) in enumerate(DESIGNS.items()):
        if args.only not in name:
            continue
        sc = Scenario(effects=Effects(win_rate=0.5, **EFFECTS), **kw)
        t0 = time.perf_counter()
        h0 = run(sc, args.sims, args.seed + 10 * i)
        two = h0["two_sided_stop"]
        upper = two["rate"] + 1.645 * two["mc_error"]
        naive = naive_peeking(h0)
        print(f"| {name} | {sc.planned} | {h0['looks']} | {two['rate']:.4f} ({two['mc_error']:.4f}) | {upper:.4f} | "
              f"{h0['outcomes']['treatment preferred']['rate']:.4f} | {h0['outcomes']['baseline preferred']['rate']:.4f}"
              f" | {naive:.3f} |", flush=True)
        print(f"    ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        out[name] = {k: v for k, v in h0.items() if not k.startswith("_")} | {"naive_peeking": naive,
                                                                               "upper_bound_95": upper}
    if args.power_sims and args.only in "balanced":
        sc = Scenario(effects=Effects(win_rate=0.6, **EFFECTS), **DESIGNS["balanced"])
        h1 = savings(sc, args.power_sims, args.seed + 99)
        print(f"\nbalanced, true win rate 0.6 ({args.power_sims} studies): power of monitoring "
              f"{h1['power_sequential']:.3f}; average ratings used {h1['mean_ratings_used']:.0f} +- "
              f"{h1['mean_ratings_used_mc_error']:.0f}; fixed plan with the same power "
              f"{h1['fixed_ratings_same_power']:.0f} ratings; saved {h1['ratings_saved']:.0f} "
              f"({h1['share_saved']:.0%})")
        out["win_rate_0.6"] = h1
    elapsed = time.perf_counter() - started
    print(f"({elapsed:.0f} s)")
    if args.json_out:
        args.json_out.write_text(json.dumps(out | {"seconds": elapsed}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
