"""Peeking-safe monitoring, proved by simulation (see docs/monitoring.md).

    python3 benchmarks/monitoring.py [--sims 2000] [--seed 1] [--participants 60] [--json-out FILE]

Clustered design: 3 strata x 20 prompts, 1 seed per prompt, 20 ratings per participant,
participant / prompt / pair effects with sd 0.5 / 0.3 / 0.2 on the latent scale, 20% ties;
60 participants planned (1,200 ratings), a look after every 20 ratings (60 looks).

1. No true preference (win rate 0.5): the share of studies in which monitoring ever says
   "treatment preferred", with its Monte Carlo error; also what naive peeking (a fixed 1.96 at
   every look) would give.
2. True win rate 0.6: power of monitoring, the fixed plan with the same power, and the average
   ratings saved.
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

DESIGN = Design(n_strata=3, prompts_per_stratum=20, seeds_per_prompt=1, ratings_per_participant=20)
EFFECTS = dict(tie_rate=0.2, sd_participant=0.5, sd_prompt=0.3, sd_pair=0.2)


def naive_peeking(result: dict) -> float:
    """Share of null studies where z >= 1.96 at some look (no alpha spending)."""
    z = np.nan_to_num(result["_z"], nan=0.0)
    return float((z >= 1.959964).any(axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=2000, help="simulated studies per scenario (>= 1000 for the claim)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--participants", type=int, default=60, help="planned participants (x 20 ratings)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    null = Scenario(DESIGN, Effects(win_rate=0.5, **EFFECTS), n_participants=args.participants)
    h0 = run(null, args.sims, args.seed)
    naive = naive_peeking(h0)
    alt = Scenario(DESIGN, Effects(win_rate=0.6, **EFFECTS), n_participants=args.participants)
    h1 = savings(alt, args.sims, args.seed + 1)
    elapsed = time.perf_counter() - started

    t1 = h0["outcomes"]["treatment preferred"]
    ever = h0["ever_crosses_treatment_boundary"]
    print(f"design: {DESIGN}, effects: {EFFECTS}, planned {null.planned} ratings, looks every "
          f"{null.look_every} ratings ({h0['looks']} looks), {args.sims} simulated studies per scenario")
    print("no true preference (win rate 0.5):")
    print(f"  monitoring says 'treatment preferred': {t1['rate']:.4f} +- {t1['mc_error']:.4f} (Monte Carlo SE)")
    print(f"  upper boundary crossed at any look:    {ever['rate']:.4f} +- {ever['mc_error']:.4f}")
    print(f"  'baseline preferred': {h0['outcomes']['baseline preferred']['rate']:.4f}; "
          f"naive peeking (z >= 1.96 at any look): {naive:.4f}")
    print(f"  'no difference larger than {null.margin:g}': {h0['outcomes']['no difference']['rate']:.4f}; average "
          f"ratings used {h0['mean_ratings_used']:.0f} of {null.planned}")
    print("true win rate 0.6:")
    print(f"  power of monitoring: {h1['power_sequential']:.3f}; average ratings used "
          f"{h1['mean_ratings_used']:.0f} +- {h1['mean_ratings_used_mc_error']:.0f}")
    print(f"  fixed plan with the same power: {h1['fixed_ratings_same_power']:.0f} ratings; saved on average "
          f"{h1['ratings_saved']:.0f} ratings ({h1['share_saved']:.0%})")
    print(f"({elapsed:.1f} s)")
    if args.json_out:
        out = {"null": {k: v for k, v in h0.items() if not k.startswith("_")} | {"naive_peeking": naive},
               "win_rate_0.6": h1, "seconds": elapsed}
        args.json_out.write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
