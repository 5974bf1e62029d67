"""Participant flow (CONSORT-style): who signed up, started, rated, finished, was excluded and analysed.

`participant_flow(session, study)` is the one place these counts are made: the progress page,
the statistics page, the report (its figure and table) and the paper's methods paragraph all
call it, so they agree by construction. Definitions (each a subset of the one above it):

- signed_up: participant records of the study (everyone who passed the consent page, including
  visitors turned away because the study was full);
- started: given at least one trial (the progress page's "participants started");
- practice_only: started but no rating outside practice trials (practice is never analysed);
- rated: at least one non-practice rating (what the exclusion rules see: `n_before`);
  of them `completed` finished the study and `partial` stopped early (both are analysed);
- excluded, per rule in the order the rules run: `exclusions.steps[*].removed`;
- kept: rated minus excluded (`n_after`);
- analysed: kept participants with at least one preference vote (gold and repeat trials alone
  give none): the `n_participants` of the results after exclusions.

Ratings follow the same path: `ratings.total` (non-practice), `gold`, `repeats`,
`duplicates`, `preference` (all participants), `analysable` (preference ratings of kept
participants), and `per_pair`: analysable ratings per pair id, which the progress page sets
against the target. Only reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.analysis.ratings import rating_rows
from app.statistics import apply_exclusions, normalise_rules, participant_quality, preference_mask, ratings_from_rows
from app.store.models import Participant, Study, Trial

STAGES = ("signed_up", "started", "rated", "kept", "analysed")


def participant_flow(session: Session, study: Study, rows: list[dict[str, Any]] | None = None,
                     exclusions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flow of `study` (see the module docstring). rows: `rating_rows(session, study)` if
    already loaded; exclusions: the statistics' `exclusions` if already computed (same rules)."""
    rows = rating_rows(session, study) if rows is None else rows
    signed_up = session.scalar(select(func.count(Participant.id)).where(Participant.study_id == study.id)) or 0
    started_ids = select(Trial.participant_id).where(Trial.study_id == study.id).distinct()
    started = session.scalar(select(func.count()).select_from(started_ids.subquery())) or 0
    finished_ids = set(session.scalars(
        select(Participant.id).where(Participant.study_id == study.id, Participant.finished_at.is_not(None),
                                     Participant.id.in_(started_ids))
    ))
    return flow_from_rows(rows, study.exclusion_rules or {}, study.min_response_ms or None,
                          signed_up=int(signed_up), started=int(started), finished={str(i) for i in finished_ids},
                          exclusions=exclusions)


def flow_from_rows(rows: list[dict[str, Any]], exclusion_rules: dict[str, Any], min_response_ms: float | None, *,
                   signed_up: int | None, started: int | None, finished: set[str] | None,
                   exclusions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flow from rating rows alone (`sfgeval analyze` has no database: the stages it cannot
    know are None)."""
    rules = normalise_rules(exclusion_rules, min_response_ms)
    if rows:
        r = ratings_from_rows(rows)
        if exclusions is None:
            # The same inputs as `app.statistics.compute_statistics`, so the same participants go.
            quality = participant_quality(r, rules.get("min_response_ms", min_response_ms),
                                          rules["consistency_tolerance"])
            exclusions = apply_exclusions(quality, rules)
        kept = np.isin(r.participants[r.participant], [str(p) for p in exclusions["kept"]])
        pref = preference_mask(r)
        rated_ids = {str(p) for p in r.participants.tolist()}
        analysed = int(np.unique(r.participant[pref & kept]).size)
        pair_counts = np.bincount(r.pair[pref & kept], minlength=r.pairs.size)
        per_pair = {str(k): int(n) for k, n in zip(r.pairs.tolist(), pair_counts.tolist())}
        ratings = {"total": len(r), "gold": int(r.is_gold.sum()), "repeats": int((r.is_repeat & ~r.is_gold).sum()),
                   "duplicates": int(r.duplicate.sum()), "preference": int(pref.sum()),
                   "analysable": int((pref & kept).sum())}
    else:
        exclusions = exclusions or apply_exclusions([], rules)
        rated_ids, analysed, per_pair = set(), 0, {}
        ratings = {"total": 0, "gold": 0, "repeats": 0, "duplicates": 0, "preference": 0, "analysable": 0}
    rated = len(rated_ids)
    steps = [{"rule": s["rule"], "description": s.get("description", s["rule"]), "removed": int(s.get("removed") or 0),
              "applied": bool(s.get("applied", True))} for s in exclusions.get("steps", [])]
    n_excluded = sum(s["removed"] for s in steps)
    completed = len(rated_ids & finished) if finished is not None else None
    return {
        "signed_up": signed_up,
        "not_started": None if signed_up is None or started is None else signed_up - started,
        "started": started,
        "practice_only": None if started is None else started - rated,
        "rated": rated,
        "completed": completed,
        "partial": None if completed is None else rated - completed,
        "exclusions": steps,
        "excluded": n_excluded,
        "kept": rated - n_excluded,
        "analysed": analysed,
        "kept_without_preference_votes": rated - n_excluded - analysed,
        "ratings": ratings,
        "per_pair": per_pair,
    }


def flow_rows(flow: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    """The flow as (stage, count, note) rows, top to bottom: the table and the figure's boxes."""
    out: list[tuple[str, int | None, str]] = []
    if flow.get("signed_up") is not None:
        out.append(("Signed up (consented)", flow["signed_up"], ""))
        out.append(("  not given a trial (study full or left)", flow["not_started"], "removed"))
    if flow.get("started") is not None:
        out.append(("Started (given a trial)", flow["started"], ""))
        out.append(("  practice only (no study rating)", flow["practice_only"], "removed"))
    note = ""
    if flow.get("completed") is not None:
        note = f"{flow['completed']} completed, {flow['partial']} stopped early"
    out.append(("Rated at least one study trial", flow["rated"], note))
    for s in flow["exclusions"]:
        out.append((f"  excluded: {s['description']}", s["removed"] if s["applied"] else 0,
                    "removed" if s["applied"] else "rule not applied"))
    out.append(("Kept after exclusions", flow["kept"], ""))
    if flow.get("kept_without_preference_votes"):
        out.append(("  kept, but no preference vote (only gold or repeat trials)",
                    flow["kept_without_preference_votes"], "removed"))
    out.append(("Analysed", flow["analysed"], f"{flow['ratings']['analysable']} preference ratings"))
    return out


def study_progress_with_flow(session: Session, study: Study) -> dict[str, Any]:
    """`app.studies.progress.study_progress` plus the flow and what exclusions leave analysable.

    Adds `flow` (this module's counts, `per_pair` left out), per pair `analysable` (preference
    ratings of kept participants), `pairs_complete_analysable`, `analysable_ratings`
    (sum over pairs, capped at the target), `shortfall` (analysable ratings missing to reach the
    target) and `top_up` (the target per pair that would cover the largest gap, or None when
    nothing is missing). `participants_started` is the flow's `started` by construction.
    """
    from app.studies.progress import study_progress

    data = study_progress(session, study)
    flow = participant_flow(session, study)
    per_pair = flow.pop("per_pair")
    target = data["ratings_per_pair"]
    gaps = []
    for p in data["per_pair"]:
        p["analysable"] = int(per_pair.get(str(p["pair_id"]), 0))
        gaps.append(max(0, target - p["analysable"]))
    data["flow"] = flow
    data["participants_started"] = flow["started"]
    data["analysable_ratings"] = sum(min(p["analysable"], target) for p in data["per_pair"])
    data["pairs_complete_analysable"] = sum(p["analysable"] >= target for p in data["per_pair"])
    data["shortfall"] = sum(gaps)
    data["top_up"] = ({"ratings_per_pair": target + max(gaps), "largest_gap": max(gaps),
                       "pairs_short": sum(g > 0 for g in gaps)} if gaps and max(gaps) > 0 else None)
    return data
