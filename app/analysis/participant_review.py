"""One row per participant for approving or rejecting crowd workers (Prolific, MTurk).

Quality figures come from the statistics' own per-participant checks (`app.statistics`:
gold pass rate, too-fast share, consistency on repeats, side bias, straight-lining) and the
study's exclusion rules, applied in the same order as the report, and agreement with the other
raters (`app.statistics.agreement`: do the answers on real trials follow the images?). The
suggested decision: finished, kept and agreeing beyond chance -> APPROVE; finished and kept but
with no such evidence (likelihood ratio under 1 / `approve_agreement_alpha`) -> REVIEW, with why: a script that
passes gold and repeats but answers real trials at random lands here, never on APPROVE; finished
but excluded -> REJECT with the rules as the reason; not finished -> no decision (returned or
timed out on the platform's side). A decision the researcher sets on the page (`set_review`)
overrides the suggestion; decisions.csv lists only APPROVE and REJECT rows.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.csvsafe import csv_text
from app.store.models import Participant, Rating, Study, Trial
from app.studies.pacing import ended_full, ending, fast_shares
from app.analysis.ratings import checked_rows, rating_rows
from app.statistics.agreement import crowd_agreement
from app.statistics import (
    apply_exclusions,
    normalise_rules,
    participant_quality,
    ratings_from_rows,
)

CROWD_COLUMNS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId", "hitId")


def _seconds(start: datetime | None, end: datetime | None) -> int | None:
    return int((end - start).total_seconds()) if start and end else None


def participant_rows(session: Session, study: Study) -> list[dict[str, Any]]:
    """Every participant given at least one trial (visitors turned away are not listed), oldest first."""
    rows, _ = checked_rows(study, rating_rows(session, study, criteria=True))  # gold: the criterion it checks
    rules = normalise_rules(study.exclusion_rules or {}, study.min_response_ms or None)
    ratings = ratings_from_rows(rows) if rows else None
    quality = participant_quality(ratings, rules.get("min_response_ms")) if ratings is not None else []
    exclusions = apply_exclusions(quality, rules)
    agreement: dict[str, dict[str, Any]] = {}
    if ratings is not None:
        kept = np.isin(ratings.participants, [str(k) for k in exclusions["kept"]])
        agreement = crowd_agreement(ratings, crowd=kept[ratings.participant])
    reasons: dict[str, list[str]] = {}
    for step in exclusions["steps"]:
        for pid in step["participants"]:
            reasons.setdefault(str(pid), []).append(step["description"])
    by_id = {str(q["participant"]): q for q in quality}
    last_answer = dict(
        session.execute(
            select(Trial.participant_id, func.max(Rating.answered_at))
            .join(Rating, Rating.trial_id == Trial.id).where(Trial.study_id == study.id)
            .group_by(Trial.participant_id)
        ).all()
    )
    started = select(Trial.participant_id).where(Trial.study_id == study.id).distinct()
    fast = fast_shares(session, study)
    out = []
    for p in session.scalars(
        select(Participant).where(Participant.study_id == study.id, Participant.id.in_(started))
        .order_by(Participant.created_at, Participant.id)
    ):
        q = by_id.get(str(p.id), {})
        why = reasons.get(str(p.id), [])
        finished = p.finished_at is not None
        agree = agreement.get(str(p.id), {"agreement_n": 0, "agreement": None, "agreement_evidence": None})
        doubt = _doubt(agree, rules) if finished and not why else None
        suggested = ("REJECT" if why else "REVIEW" if doubt else "APPROVE") if finished else ""
        review = p.review or {}
        decision = review.get("decision", suggested)
        out.append({
            "participant": p.id,
            **{k: (p.external_ids or {}).get(k) for k in CROWD_COLUMNS},
            "started_at": p.created_at.isoformat(timespec="seconds"),
            "finished_at": p.finished_at.isoformat(timespec="seconds") if finished else None,
            "seconds": _seconds(p.created_at, p.finished_at or last_answer.get(p.id)),
            "n_ratings": q.get("n_ratings", 0),
            "fast_share": q.get("fast_share"),
            "gold_n": q.get("gold_n", 0),
            "gold_pass_rate": q.get("gold_pass_rate"),
            "repeats_n": q.get("repeats_n", 0),
            "consistency": q.get("consistency"),
            **agree,
            "excluded": bool(why),
            "exclusion_reasons": why,
            "suggested": suggested,
            "decision": decision,
            "reason": review["reason"] if review else ("; ".join(why) if decision == "REJECT" else doubt or ""),
            "overridden": bool(review),
            # Exactly what they were shown: no code when it was withheld (too fast) or the study
            # filled up under them and gives no code then (app.studies.pacing.ending).
            "ending": (ending(session, study, p, fast.get(p.id, (0, 0))) if finished else None),
            "study_full": ended_full(p),
        })
    for row in out:
        row["completion_code"] = study.completion_code if row["ending"] == "code" else None
    return out


def _doubt(agree: dict[str, Any], rules: dict[str, Any]) -> str | None:
    """Why a finished, kept participant is not suggested APPROVE (None: nothing against it)."""
    alpha, need = rules.get("approve_agreement_alpha"), rules["approve_agreement_min_trials"]
    if alpha is None:
        return None
    n = agree["agreement_n"]
    if n < need:
        return (f"only {n} real trial(s) on pairs other raters judged (at least {need} needed to check that "
                "the answers follow the images): check before approving")
    if alpha == 0:
        return "approve_agreement_alpha is 0: every participant is reviewed by hand"
    if agree["agreement_evidence"] < math.log10(1 / alpha):
        return (f"answers on real trials do not follow the other raters beyond chance ({agree['agreement']:.0%} "
                f"the others' way over {n} trials; likelihood ratio {lr_text(agree['agreement_evidence'])} against "
                f"answering blind, {1 / alpha:g} needed): check before approving")
    return None


def lr_text(evidence: float | None) -> str:
    """A likelihood ratio given as log10, for people: 0.03, 4.2, 250, 1e+04."""
    if evidence is None:
        return "—"
    return f"{10 ** evidence:.2g}" if evidence < 3 else f"1e+{int(evidence)}"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    return csv_text(header, rows)  # no formulas, no forged rows (app.store.csvsafe)


def decisions_csv(rows: list[dict[str, Any]]) -> str:
    """Finished participants with a crowd id, as Prolific's bulk review takes them: participant
    id, submission (session) id, APPROVE/REJECT and the reason for a rejection. MTurk workers
    appear under their workerId and assignmentId. A REVIEW suggestion is not a decision: such
    rows appear once the researcher decides (the page counts them)."""
    out = [
        [r["PROLIFIC_PID"] or r["workerId"], r["SESSION_ID"] or r["assignmentId"] or "", r["decision"], r["reason"]]
        for r in rows if r["decision"] in DECISIONS and (r["PROLIFIC_PID"] or r["workerId"])
    ]
    return _csv(["participant_id", "submission_id", "decision", "reason"], out)


def completion_codes_csv(rows: list[dict[str, Any]]) -> str:
    """Exactly the participants who were shown the completion code, with it."""
    out = [[r["PROLIFIC_PID"] or r["workerId"] or "", r["participant"], r["completion_code"], r["finished_at"]]
           for r in rows if r["completion_code"]]
    return _csv(["crowd_id", "participant", "completion_code", "finished_at"], out)


DECISIONS = ("APPROVE", "REJECT")


def set_review(session: Session, study: Study, participant_id: int, decision: str, reason: str) -> None:
    """The researcher's decision for one participant ('' = back to the suggestion). ValueError
    for an unknown participant or decision, or a rejection without a reason."""
    p = session.get(Participant, participant_id)
    if p is None or p.study_id != study.id:
        raise ValueError(f"no participant {participant_id} in this study")
    reason = reason.strip()[:500]
    if decision == "":
        p.review = None
    elif decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)} or empty")
    elif decision == "REJECT" and not reason:
        raise ValueError("a rejection needs a reason (the platform shows it to the participant)")
    else:
        p.review = {"decision": decision, "reason": reason}
