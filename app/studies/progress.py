"""Live progress of a study: who started and finished, ratings per pair against the target, time per trial.

`study_progress` returns plain JSON-ready values; the admin progress page renders it and
`/admin/studies/{slug}/progress.json` returns it as is.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from app.store.models import Comparison, Pair, Participant, Rating, Study, Trial


def study_progress(session: Session, study: Study, now: datetime | None = None) -> dict[str, Any]:
    """Counts for `study`. Times in milliseconds; `per_pair` counts main ratings only.

    Keys: study (slug), title, state, version, participants_started (participants given a trial;
    visitors turned away as the study is full are not counted), participants_finished,
    ratings (all kinds except practice), ratings_by_kind, pairs, pairs_complete (main ratings
    >= target), target_ratings (pairs x target), ratings_per_pair, open_holds (assigned, unexpired trials),
    response_ms {median, p10, p90, mean, too_fast}, per_comparison, per_pair
    [{pair_id, pair, pair_set, comparison, prompt_id, prompt, stratum, ratings, target}],
    generated_at (ISO 8601 UTC).
    """
    now = now or datetime.now(timezone.utc)
    # Started = given at least one trial: visitors turned away (study full) are not counted.
    started = session.scalar(
        select(func.count(func.distinct(Trial.participant_id))).where(Trial.study_id == study.id)
    ) or 0
    finished = session.scalar(
        select(func.count(Participant.id)).where(
            Participant.study_id == study.id, Participant.finished_at.is_not(None)
        )
    ) or 0
    by_kind = dict(
        session.execute(
            select(Trial.kind, func.count(Rating.id))
            .join(Rating, Rating.trial_id == Trial.id)
            .where(Trial.study_id == study.id, Rating.is_primary)  # one row per answered trial
            .group_by(Trial.kind)
        ).all()
    )
    holds = session.scalar(
        select(func.count(Trial.id)).where(
            Trial.study_id == study.id, Trial.state == "assigned", Trial.expires_at > now
        )
    ) or 0
    times = np.array(
        session.scalars(
            select(Rating.response_ms)
            .join(Trial, Rating.trial_id == Trial.id)
            .where(Trial.study_id == study.id, Trial.kind != "practice", Rating.is_primary)
        ).all(),
        dtype=float,
    )
    too_fast = session.scalar(
        select(func.count(Rating.id))
        .join(Trial, Rating.trial_id == Trial.id)
        .where(Trial.study_id == study.id, Trial.kind != "practice", Rating.too_fast.is_(True),
               Rating.is_primary)
    ) or 0

    main_counts = select(Trial.pair_id, func.count(Rating.id).label("n")).join(
        Rating, Rating.trial_id == Trial.id
    ).where(Trial.study_id == study.id, Trial.kind == "main", Rating.is_primary).group_by(Trial.pair_id).subquery()
    rows = session.execute(
        select(
            Pair.id, Pair.pair_key, Pair.pair_set_id, Comparison.label, Pair.prompt_id, Pair.prompt,
            Pair.stratum, func.coalesce(main_counts.c.n, 0),
        )
        .join(Comparison, and_(Comparison.pair_set_id == Pair.pair_set_id, Comparison.study_id == study.id))
        .outerjoin(main_counts, main_counts.c.pair_id == Pair.id)
        .order_by(Comparison.id, Pair.id)
    ).all()
    target = study.ratings_per_pair
    per_pair = [
        {
            "pair_id": r[0], "pair": r[1], "pair_set": r[2], "comparison": r[3], "prompt_id": r[4],
            "prompt": r[5], "stratum": r[6], "ratings": int(r[7]), "target": target,
        }
        for r in rows
    ]
    per_comparison: dict[str, dict[str, int]] = {}
    for p in per_pair:
        c = per_comparison.setdefault(p["comparison"], {"pairs": 0, "ratings": 0, "pairs_complete": 0})
        c["pairs"] += 1
        c["ratings"] += p["ratings"]
        c["pairs_complete"] += p["ratings"] >= target

    def pct(q: float) -> int | None:
        return int(round(float(np.percentile(times, q)))) if times.size else None

    return {
        "study": study.slug,
        "title": study.title,
        "state": study.state,
        "version": study.version,
        "participants_started": int(started),
        "participants_finished": int(finished),
        "ratings": int(sum(v for k, v in by_kind.items() if k != "practice")),
        "ratings_by_kind": {k: int(v) for k, v in sorted(by_kind.items())},
        "pairs": len(per_pair),
        "pairs_complete": sum(p["ratings"] >= target for p in per_pair),
        "target_ratings": len(per_pair) * target,
        "ratings_per_pair": target,
        "open_holds": int(holds),
        "response_ms": {
            "median": pct(50),
            "p10": pct(10),
            "p90": pct(90),
            "mean": int(round(float(times.mean()))) if times.size else None,
            "too_fast": int(too_fast),
        },
        "per_comparison": per_comparison,
        "per_pair": per_pair,
        "generated_at": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
