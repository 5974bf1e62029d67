"""A participant's plan: the kinds and treatment sides of their trials, from a seeded RNG."""

from __future__ import annotations

import random
from typing import Any

from app.store.models import Study
from app.assignment.repeats import repeat_gap, repeat_places


def make_plan(study: Study, participant_seed: int) -> dict[str, Any]:
    """The trial kinds and treatment sides for one participant, from the seeded RNG.

    Returns {"kinds": [...], "sides": [...], "skipped": [], "repeat_gap": G}; index = trial
    position. A repeat comes at least G = `repeat_gap(n)` trials after its original.
    """
    rng = random.Random(f"plan:{study.seed}:{participant_seed}")
    n_main = study.pairs_per_participant
    n_gold = round(study.gold_rate * n_main)
    n_repeat = min(study.repeats, n_main)
    body = ["main"] * n_main + ["gold"] * n_gold
    rng.shuffle(body)
    # The first trial after practice is a main one: it reserves a pair, so a participant never
    # does checks first only to find that the study has no work left.
    first_main = body.index("main")
    body[0], body[first_main] = body[first_main], body[0]
    gap = repeat_gap(n_main + n_gold + n_repeat)
    for _ in range(n_repeat):
        places = repeat_places(body, gap)
        if places:
            body.insert(rng.choice(places), "repeat")
    kinds = ["practice"] * study.practice_trials + body
    sides = (["left", "right"] * (len(kinds) // 2 + 1))[: len(kinds)]
    rng.shuffle(sides)
    return {"kinds": kinds, "sides": sides, "skipped": [], "repeat_gap": gap}
