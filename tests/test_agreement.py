"""Agreement with the other raters (app.statistics.agreement): a content-blind answerer reaches
a likelihood ratio of 1/alpha at most alpha of the time, whatever it answers; people who see the
images, who answer like the others, mostly do."""

from __future__ import annotations

import random

import numpy as np

from app.statistics import ratings_from_rows
from app.statistics.agreement import crowd_agreement


def _crowd(n_honest: int, n_blind: int, n_pairs: int = 30, per_person: int = 10, seed: int = 0,
           blind_answer=None) -> list[dict]:
    """Honest raters answer from each pair's latent preference (+-1.2, noise 1); content-blind
    ones answer as shown by `blind_answer(rng)` (default: uniform 1..5). Sides: a shuffled
    balanced list per person, as the server does."""
    rng = random.Random(seed)
    latent = [rng.choice([-1.2, 1.2]) for _ in range(n_pairs)]
    rows = []
    for person in range(n_honest + n_blind):
        blind = person >= n_honest
        sides = (["left", "right"] * per_person)[:per_person]
        rng.shuffle(sides)
        for pair, side in zip(rng.sample(range(n_pairs), per_person), sides):
            if blind:
                choice = blind_answer(rng) if blind_answer else rng.randint(1, 5)
                score = (3 - choice) if side == "left" else (choice - 3)
            else:
                score = max(-2, min(2, round(latent[pair] + rng.gauss(0, 1))))
                choice = 3 - score if side == "left" else 3 + score
            rows.append({"participant": f"{'b' if blind else 'h'}{person}", "pair": f"q{pair}",
                         "prompt_id": f"q{pair}", "treatment_side": side, "choice": choice, "score": score,
                         "is_gold": False, "is_repeat": False, "response_ms": 2000})
    return rows


def _evidence(rows, who):
    out = crowd_agreement(ratings_from_rows(rows))
    return np.array([v["agreement_evidence"] for k, v in out.items() if k.startswith(who)])


def test_a_random_answerer_never_gets_the_evidence():
    ev = np.concatenate([_evidence(_crowd(15, 5, seed=seed), "b") for seed in range(40)])
    assert ev.size == 200
    assert np.all(ev < np.log10(20))  # alpha 0.05: none of 200
    assert np.median(ev) < -1  # a uniform answerer often answers strongly against a clear crowd


def test_any_content_blind_strategy_passes_at_most_alpha_of_the_time():
    # Blind strategies that do better than uniform: always one side, one side mostly, a
    # human-looking histogram of mild answers; and a crowd whose pairs are only mildly one-sided.
    strategies = (lambda rng: 1, lambda rng: rng.choice([1, 1, 2, 3, 4]),
                  lambda rng: rng.choice([2, 2, 3, 4, 4, 1, 5]))
    for answer in strategies:
        ev = np.concatenate([_evidence(_crowd(12, 8, seed=seed, blind_answer=answer), "b") for seed in range(40)])
        rate = float(np.mean(ev >= np.log10(20)))
        assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / ev.size), (rate, ev.size)  # alpha + 2 MC SE
        assert np.mean(ev) < 0  # no blind strategy gains evidence on average


def test_people_who_see_the_images_mostly_get_the_evidence():
    # 20 real trials each; with 10 about a third get there (a log 2 gain per answer at most).
    rows = [_crowd(15, 5, per_person=20, seed=seed) for seed in range(10)]
    ev = np.concatenate([_evidence(r, "h") for r in rows])
    assert np.mean(ev >= np.log10(20)) >= 0.8, ev
    shares = [v["agreement"] for r in rows for k, v in crowd_agreement(ratings_from_rows(r)).items() if k[0] == "h"]
    assert np.mean(shares) > 0.75


def test_no_shared_pairs_no_evidence_and_the_crowd_mask():
    rows = _crowd(3, 0, n_pairs=30, per_person=10, seed=1)
    alone = [dict(r, pair=f"{r['participant']}-{r['pair']}") for r in rows]  # nobody shares a pair
    out = crowd_agreement(ratings_from_rows(alone))
    assert all(v == {"agreement_n": 0, "agreement": None, "agreement_evidence": None} for v in out.values())
    r = ratings_from_rows(rows)
    only_h0 = crowd_agreement(r, crowd=r.participant == 0)  # the others: h0's answers alone
    assert only_h0["h0"]["agreement_n"] == 0
    shared = {x["pair"] for x in rows if x["participant"] == "h0"} & {x["pair"] for x in rows if x["participant"] == "h1"}
    assert only_h0["h1"]["agreement_n"] == len(shared) > 0
