"""The one place that turns a raw answer into a score.

Choices are what the participant clicked, as shown: 1 left much better, 2 left slightly better,
3 no preference, 4 right slightly better, 5 right much better. The score is oriented treatment vs
baseline: +2 treatment much better ... -2 baseline much better (for gold trials: +2 = the intact
image much better, i.e. a pass).
"""

from __future__ import annotations

CHOICES = (1, 2, 3, 4, 5)
SCORES = (-2, -1, 0, 1, 2)
# Names of the five answers after un-flipping, most negative (baseline much better) first.
SCORE_NAMES = {
    -2: "baseline much better",
    -1: "baseline slightly better",
    0: "no preference",
    1: "treatment slightly better",
    2: "treatment much better",
}
SIDES = ("left", "right")


def score_from_choice(choice: int, treatment_side: str) -> int:
    """Un-flip `choice` (1..5 as shown) given where the treatment was shown; returns -2..+2."""
    if type(choice) is not int or choice not in CHOICES:
        raise ValueError(f"choice must be an integer from 1 to 5, got {choice!r}")
    if treatment_side not in SIDES:
        raise ValueError(f"treatment_side must be 'left' or 'right', got {treatment_side!r}")
    right_better = choice - 3
    return right_better if treatment_side == "right" else -right_better


def swap_side(side: str) -> str:
    return "left" if side == "right" else "right"
