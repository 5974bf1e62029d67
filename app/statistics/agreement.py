"""Do a participant's answers follow the images? Agreement with the other raters, as evidence.

Gold pairs and repeats can be passed by a script that answers every real trial at random (it
tells the degraded twin from pixels, and a repeat from the images it has seen). What such a
script cannot do is answer the real pairs the way the other raters do. For each of a
participant's real ratings (no gold, no repeat, no duplicate) of a pair that others rated too,
with treatment-oriented score x (-2..+2):

- crowd-like: the sign of x given its size |x| follows the pair's answers among the other
  raters (leave this participant out; smoothed towards the others' answers over all pairs):
  P(+m | m) = p(+m) / (p(+m) + p(-m));
- content-blind: the answer as shown does not depend on which image is which. The server puts
  the treatment left or right at random (`app.assignment.plans`), so given |x| the sign is a
  fair coin, whatever the participant answers.

The evidence is the likelihood ratio of the signs, LR = prod 2 P(sign | |x|) over decisive
answers (a tie carries none). For a content-blind participant E[LR] = 1 whatever they answer
(given their answers, each factor averages 1 over the side), so by Markov's inequality
P(LR >= 1/alpha) <= alpha: a script answering real pairs blind (at random, always one side, a
human-looking histogram) is suggested APPROVE at most alpha of the time (the sides are a shuffled
balanced list rather than independent coins; tests/test_agreement.py measures the rate), and a
uniform random answerer, which often answers strongly against a clear crowd, far less often.
People who see what the others see gain up to log 2 per decisive answer on the crowd's side.

This is a review check, not an analysis exclusion: excluding people for disagreeing with the
crowd would pull the results towards the crowd's majority.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.statistics.jsonsafe import _num
from app.statistics.rows import Ratings, preference_mask
from app.statistics.scoring import SCORES

PRIOR_WEIGHT = 1.0  # pseudo-ratings pulling a pair's distribution towards the others' overall one


def crowd_agreement(r: Ratings, crowd: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per participant label: {"agreement_n", "agreement", "agreement_evidence"}.

    crowd: a boolean mask over `r`'s ratings whose answers stand for "the others" (e.g. the
    participants the exclusion rules keep); default every rating. agreement_n counts the
    participant's real trials on pairs others rated; agreement is the share of those answered
    in the direction the others lean (a tie, or a pair the others split evenly, counts half);
    agreement_evidence is log10 of the likelihood ratio (None without such trials).
    """
    mask = preference_mask(r)
    crowd = mask & (np.ones(len(r), dtype=bool) if crowd is None else crowd)
    n_pairs, k = max(r.pairs.size, 1), len(SCORES)
    cat = r.score.astype(np.int64) + 2  # 0..4
    counts = np.zeros((n_pairs, k))
    np.add.at(counts, (r.pair[crowd], cat[crowd]), 1.0)
    by_person = np.zeros((max(r.participants.size, 1), k))
    np.add.at(by_person, (r.participant[crowd], cat[crowd]), 1.0)
    overall = counts.sum(axis=0)
    real = np.flatnonzero(mask)
    real = real[np.argsort(r.participant[real], kind="stable")]  # each participant's real ratings together
    bounds = np.searchsorted(r.participant[real], np.arange(r.participants.size + 1))
    out: dict[str, dict[str, Any]] = {}
    for code, label in enumerate(r.participants):
        mine = real[bounds[code]:bounds[code + 1]]
        others = counts[r.pair[mine]].copy()  # (trials, 5)
        own = crowd[mine]
        others[own, cat[mine][own]] -= 1.0  # leave their own rating out
        n_others = others.sum(axis=1)
        keep = n_others > 0
        idx, others, n_others = mine[keep], others[keep], n_others[keep]
        row: dict[str, Any] = {"agreement_n": int(idx.size), "agreement": None, "agreement_evidence": None}
        if idx.size:
            base = overall - by_person[code] + 0.5  # the others over all pairs; no empty category
            p = (others + PRIOR_WEIGHT * base / base.sum()) / (n_others + PRIOR_WEIGHT)[:, None]
            x, rows = cat[idx], np.arange(idx.size)
            same, flipped = p[rows, x], p[rows, 4 - x]  # P(x) and P(-x) for this pair
            decisive = r.score[idx] != 0
            log_lr = np.sum(np.log(2 * same[decisive] / (same[decisive] + flipped[decisive])))
            row["agreement_evidence"] = _num(round(float(log_lr) / math.log(10), 6))
            lean = np.sign(others @ np.array(SCORES, dtype=float))
            row["agreement"] = _num(float(np.mean((np.sign(r.score[idx]) * lean + 1) / 2)))
        out[str(label)] = row
    return out
