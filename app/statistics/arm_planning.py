"""Sizing a study over K arms from the two-arm planner (`app.statistics.planning`).

A K-arm study shows C comparisons (C = K - 1 for `vs-baseline`, K(K-1)/2 for `all-pairs`) and the
app hands out pairs least-rated first, so every comparison gets the same share of the ratings and
each participant rates about m / C pairs of each comparison (m = ratings per participant). Each
comparison is therefore the planner's two-arm design with m / C ratings per participant, and the
participants needed are the same N for the study as for one such comparison. Every comparison is
planned at alpha / C (Bonferroni): Holm over the comparisons is never stricter than that, so the
target power holds for each comparison whose effect is at least the expected one, after the
multiplicity adjustment the report applies (p_holm). Total ratings = N x m.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.statistics.planning import PlanRequest, plan


def n_comparisons(n_arms: int, comparisons: str = "vs-baseline") -> int:
    if n_arms < 2:
        raise ValueError("a study compares at least 2 arms")
    if comparisons == "vs-baseline":
        return n_arms - 1
    if comparisons == "all-pairs":
        return n_arms * (n_arms - 1) // 2
    raise ValueError("comparisons must be vs-baseline or all-pairs")


def per_comparison_request(req: PlanRequest, n_comp: int) -> PlanRequest:
    """The two-arm request one comparison of a C-comparison study amounts to (see the module docstring)."""
    m = max(1, req.design.ratings_per_participant // n_comp)
    return replace(req, design=replace(req.design, ratings_per_participant=m), alpha=req.alpha / n_comp)


def plan_arms(req: PlanRequest, n_arms: int, comparisons: str = "vs-baseline",
              progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """A JSON-ready plan for a K-arm study: the per-comparison plan with study-wide totals."""
    c = n_comparisons(n_arms, comparisons)
    if c == 1:
        return plan(req, progress)
    sub = per_comparison_request(req, c)
    out = plan(sub, progress)
    n = out["participants"]
    m = req.design.ratings_per_participant
    out["arms"] = {"n_arms": n_arms, "comparisons": comparisons, "n_comparisons": c,
                   "ratings_per_participant_per_comparison": sub.design.ratings_per_participant,
                   "alpha_per_comparison": sub.alpha, "rule": __doc__.split("\n\n")[1].replace("\n", " ")}
    out["ratings"] = None if n is None else n * sub.design.ratings_per_participant * c
    out["ratings_per_comparison"] = None if n is None else n * sub.design.ratings_per_participant
    out["cost"] = (None if n is None or req.price_per_rating is None
                   else round(out["ratings"] * req.price_per_rating, 2))
    if m % c:
        out["arms"]["note"] = (f"{m} ratings per participant do not split evenly over {c} comparisons; planned with "
                               f"{sub.design.ratings_per_participant} per comparison")
    return out
