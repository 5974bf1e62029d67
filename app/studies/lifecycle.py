"""A study's life around its participants: the links to paste into crowd platforms, and the
optional auto-close once every main pair has all its ratings."""

from __future__ import annotations

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from app.store.models import Comparison, Pair, Rating, Study, Trial
from app.studies.config import set_state

# Query strings the platforms fill in per participant (their own placeholder syntax).
PROLIFIC_QUERY = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
# An MTurk ExternalQuestion appends workerId, assignmentId and hitId to the URL by itself.
MTURK_NOTE = "MTurk ExternalQuestion adds workerId, assignmentId and hitId to this URL"


def participant_links(base_url: str, slug: str) -> dict[str, str]:
    """The study's participant URLs: plain, for Prolific (with its placeholders) and for MTurk."""
    plain = f"{base_url.rstrip('/')}/s/{slug}"
    return {"plain": plain, "prolific": f"{plain}?{PROLIFIC_QUERY}", "mturk": plain}


def pairs_below_target(session: Session, study: Study) -> int:
    """How many main pairs of `study` have fewer than ratings_per_pair main ratings."""
    counts = (
        select(Trial.pair_id, func.count(Rating.id).label("n"))
        .join(Rating, Rating.trial_id == Trial.id)
        .where(Trial.study_id == study.id, Trial.kind == "main", Rating.is_primary)  # one per answered trial
        .group_by(Trial.pair_id)
        .subquery()
    )
    return session.scalar(
        select(func.count(Pair.id))
        .join(Comparison, and_(Comparison.pair_set_id == Pair.pair_set_id, Comparison.study_id == study.id))
        .outerjoin(counts, counts.c.pair_id == Pair.id)
        .where(func.coalesce(counts.c.n, 0) < study.ratings_per_pair)
    ) or 0


def close_if_complete(session: Session, study_id: int) -> bool:
    """Close an open study with auto_close on once every main pair reached its target. Commits
    when it closes; returns whether it did."""
    study = session.get(Study, study_id)
    if study is None or not study.auto_close or study.state != "open":
        return False
    if pairs_below_target(session, study):
        return False
    set_state(session, study, "closed")
    session.commit()
    return True
