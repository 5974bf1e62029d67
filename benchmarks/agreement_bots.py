"""How often a random answerer that passes gold and repeats still reaches APPROVE's agreement evidence.

    PYTHONPATH=. python3 benchmarks/agreement_bots.py [--pairs 40 60] [--crowds 1000]

The crowd of `tests/test_trust.py::test_a_bot_passing_gold_and_repeats_but_random_on_real_pairs_is_never_approved`
without the web app: 30 participants, a third of them bots answering every real pair uniformly at
random, the others a pair's visible preference (+-1.3, half each) plus N(0, 1) noise rounded to
the 5-point scale; each rates `--pairs` of 60 pairs drawn at random, sides at random. Evidence from
`app.statistics.agreement.crowd_agreement` (every participant stands for the crowd, as no one is
excluded there); APPROVE needs log10 LR >= log10(20). Prints, per pairs-per-participant, the share
of bots and of honest raters reaching it (10 bots and 20 people per crowd).
"""

from __future__ import annotations

import argparse
import math
import random

from tqdm import tqdm

from app.statistics.agreement import crowd_agreement
from app.statistics.rows import ratings_from_rows

THRESHOLD = math.log10(20)  # 1 / approve_agreement_alpha (0.05)


def vote(participant: str, pair: int, score: int, side: str) -> dict:
    """One export row (choice derived from score and side the way the server shows it)."""
    return {"participant": participant, "pair": f"x{pair}", "prompt_id": f"q{pair}", "treatment_side": side,
            "choice": 3 - score if side == "left" else 3 + score, "score": score, "is_gold": False,
            "is_repeat": False, "comparison": "cfg-vs-sfg", "stratum": "middle", "response_ms": 2000}


def crowd(pairs_each: int, seed: int) -> tuple[list[dict], set[str]]:
    rng = random.Random(seed)
    latent = {p: rng.choice([-1.3, 1.3]) for p in range(60)}
    rows, bots = [], set()
    for i in range(30):
        pid, is_bot = f"p{i}", i % 3 == 2
        if is_bot:
            bots.add(pid)
        for p in rng.sample(range(60), pairs_each):
            side = rng.choice(["left", "right"])
            if is_bot:
                choice = rng.randint(1, 5)
                score = choice - 3 if side == "right" else 3 - choice
            else:
                score = max(-2, min(2, round(latent[p] + rng.gauss(0, 1))))
            rows.append(vote(pid, p, score, side))
    return rows, bots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[40, 60], help="real pairs per participant (of 60)")
    ap.add_argument("--crowds", type=int, default=1000)
    args = ap.parse_args()
    for k in args.pairs:
        hits = {"bot": 0, "person": 0}
        seen = {"bot": 0, "person": 0}
        for c in tqdm(range(args.crowds), desc=f"{k} pairs each", unit="crowd"):
            rows, bots = crowd(k, 1000 * k + c)
            for pid, r in crowd_agreement(ratings_from_rows(rows)).items():
                kind = "bot" if pid in bots else "person"
                seen[kind] += 1
                hits[kind] += r["agreement_evidence"] is not None and r["agreement_evidence"] >= THRESHOLD
        print(f"{k} real pairs each: bots reaching the evidence {hits['bot']}/{seen['bot']} = "
              f"{hits['bot'] / seen['bot']:.4f}; people {hits['person']}/{seen['person']} = "
              f"{hits['person'] / seen['person']:.4f}")


if __name__ == "__main__":
    main()
