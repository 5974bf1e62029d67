"""Time the full statistics of a study: 50,000 ratings, 500 participants, 600 pairs, 1,000 draws.

    python3 benchmarks/bench_statistics.py [--repeats 3] [--draws 1000]

Reports the median wall time of `app.statistics.compute_statistics` (everything the report and
the live page show, with exclusion rules on, so results are computed with and without
exclusions) against the 2 s target, and, side by side in the same run, the crossed bootstrap
computed per draw with explicit per-vote weights versus the aggregated matrix form it uses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import statistics as st  # noqa: E402
from app.simulation import SimulatedStudy, simulate_rows  # noqa: E402

TARGET_S = 2.0
RULES = {"fail_gold": True, "min_gold_pass_rate": 0.5, "min_response_ms": 800, "max_fast_share": 0.5,
         "straight_lining": True, "min_consistency": 0.3, "max_side_bias": 0.9}


def per_vote_bootstrap(participant, prompt, scores, wp, wq):
    """Reference: one pass over all votes per draw (what the matrix form avoids)."""
    out = np.empty(wp.shape[0])
    for b in range(wp.shape[0]):
        w = wp[b, participant] * wq[b, prompt]
        out[b] = (w * (scores > 0)).sum() / (w * (scores != 0)).sum()
    return out


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()

    # 500 participants x 100 trials over 600 pairs (2 comparisons x 300 prompts, 3 strata),
    # plus gold trials and repeats on top, with a few bad participants for the rules to find.
    study = SimulatedStudy(n_participants=500, n_prompts=300, trials_per_participant=100,
                           comparisons=("cfg-vs-sfg-a10", "cfg-vs-sfg-a5"), gold_per_participant=3,
                           repeats_per_participant=2)
    rows = simulate_rows(study, seed=1, always_left=3, too_fast=2)
    main_rows = sum(not r["is_gold"] and not r["is_repeat"] for r in rows)
    print(f"ratings: {len(rows)} ({main_rows} preference ratings), participants: {study.n_participants}, "
          f"pairs: {study.n_prompts * len(study.comparisons)}, bootstrap draws: {args.draws}")

    full = timed(lambda: st.compute_statistics(rows, exclusion_rules=RULES, draws=args.draws, seed=0), args.repeats)
    print(f"compute_statistics (full, with and without exclusions): {full:.3f} s "
          f"(target < {TARGET_S:.0f} s: {'met' if full < TARGET_S else 'MISSED'})")

    r = st.ratings_from_rows(rows)
    m = st.preference_mask(r)
    wp, wq = st.bootstrap_weights(r.participants.size, r.prompts.size, args.draws, 0)
    p, q, s = r.participant[m], r.prompt[m], r.score[m]
    matrix = timed(lambda: st.crossed_bootstrap_estimates(p, q, s, wp, wq), args.repeats)
    naive = timed(lambda: per_vote_bootstrap(p, q, s, wp, wq), 1)
    same = np.allclose(per_vote_bootstrap(p, q, s, wp[:20], wq[:20]),
                       st.crossed_bootstrap_estimates(p, q, s, wp[:20], wq[:20])["win_rate"], rtol=1e-5)
    print(f"crossed bootstrap, overall group: matrix form {matrix:.3f} s vs per-vote weights {naive:.3f} s "
          f"({naive / matrix:.0f}x faster, same values: {same})")


if __name__ == "__main__":
    main()
