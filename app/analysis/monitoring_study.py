"""Monitoring of a study in the database: per-comparison recommendations, recorded stops, auto-close.

- `study_monitoring(session, study, kept)` runs `app.statistics.monitoring.monitor_comparisons` on the
  study's preference ratings in arrival order (rating id), planned ratings per comparison =
  pairs of its pair set x the study's ratings per pair, locked at the comparison's first rating
  (`planned_totals`: read from the version snapshot that rating was given under; a later edit of
  the ratings per pair is reported as refused, never used), with the study's `monitoring`
  settings; it adds the overall recommendation and the stops already recorded in the version
  history.
- `apply_auto_close(session, study, monitoring)`: when the study is open, `auto_close` is on
  and every comparison says stop, close the study; the new version's note records, per
  comparison, the look, the statistic and the rule. Called where the data changes
  (`app.analysis.study_statistics.apply_monitoring_stop`): after a participant's answer has been
  sent (a background task, so answer timing never depends on the data) and by an admin's explicit
  action (the statistics page's button, `sfgeval study monitor --apply`); never on a read.
- `auto_close_line(slug, version, note)`: the line the CLI prints when it closed a study.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.studies.config import set_state
from app.store.models import Comparison, Pair, Rating, Study, StudyVersion, Trial
from app.statistics.monitoring import MonitoringSettings, lock_planned_total, monitor_comparisons

NOTE_KIND = "monitoring stop"


def monitoring_rows(session: Session, study: Study) -> list[dict[str, Any]]:
    """Preference-relevant columns of every non-practice rating, in arrival (rating id) order."""
    stmt = (
        select(Rating.id, Trial.participant_id, Pair.prompt_id, Comparison.label, Rating.score, Trial.kind, Pair.id,
               Pair.stratum)
        .join(Trial, Trial.id == Rating.trial_id)
        .join(Pair, Pair.id == Trial.pair_id)
        .join(Comparison, Comparison.id == Trial.comparison_id)
        .where(Trial.study_id == study.id, Trial.kind != "practice", Rating.is_primary)  # the primary criterion
        .order_by(Rating.id)
    )
    # pair and stratum: the report's duplicate rule and strata (issue 23: one statistics core).
    return [{"rating_id": rid, "participant": pid, "prompt_id": prompt, "comparison": label, "score": score,
             "is_gold": kind == "gold", "is_repeat": kind == "repeat", "pair": pair,
             "stratum": "(none)" if stratum in (None, "") else str(stratum)}
            for rid, pid, prompt, label, score, kind, pair, stratum in session.execute(stmt)]


def planned_ratings(session: Session, study: Study) -> dict[str, int]:
    """Planned preference ratings per comparison label: pairs x ratings per pair."""
    counts = dict(session.execute(
        select(Pair.pair_set_id, func.count(Pair.id))
        .where(Pair.pair_set_id.in_([c.pair_set_id for c in study.comparisons])).group_by(Pair.pair_set_id)
    ).all())
    return {c.label: max(int(counts.get(c.pair_set_id, 0)) * study.ratings_per_pair, 1) for c in study.comparisons}


def locked_planned(session: Session, study: Study) -> dict[str, int]:
    """Per comparison label with ratings: the planned total locked at its first rating.

    The lock is read from the version history, not stored anew: a rating records the study
    version it was given under, and that version's snapshot (immutable) holds the ratings per
    pair then; the comparison's pair set is fixed. So the locked total is pairs x the ratings per
    pair of the config in force at the comparison's first (non-practice) rating, whatever the
    config says now. Comparisons without ratings are absent (their total is not locked yet)."""
    first = session.execute(
        select(Comparison.label, Comparison.pair_set_id, func.min(Rating.id))
        .join(Trial, Trial.comparison_id == Comparison.id)
        .join(Rating, Rating.trial_id == Trial.id)
        .where(Comparison.study_id == study.id, Trial.study_id == study.id, Trial.kind != "practice")
        .group_by(Comparison.label, Comparison.pair_set_id)
    ).all()
    if not first:
        return {}
    versions = dict(session.execute(
        select(Rating.id, Rating.study_version).where(Rating.id.in_([rid for _, _, rid in first]))).all())
    configs = dict(session.execute(
        select(StudyVersion.version, StudyVersion.config)
        .where(StudyVersion.study_id == study.id, StudyVersion.version.in_(set(versions.values())))).all())
    counts = dict(session.execute(
        select(Pair.pair_set_id, func.count(Pair.id))
        .where(Pair.pair_set_id.in_([ps for _, ps, _ in first])).group_by(Pair.pair_set_id)).all())
    out = {}
    for label, pair_set_id, rid in first:
        config = configs.get(versions.get(rid)) or {}
        per_pair = int(config.get("ratings_per_pair") or study.ratings_per_pair)
        out[label] = max(int(counts.get(pair_set_id, 0)) * per_pair, 1)
    return out


def planned_totals(session: Session, study: Study) -> dict[str, dict[str, Any]]:
    """Per comparison label: `lock_planned_total` of the locked total (`locked_planned`) and the
    configured one (`planned_ratings`): {planned, locked, lock_now, refused_change}. Monitoring
    uses `planned`; a configured total that differs from the locked one (a later edit of the
    ratings per pair, e.g. a top-up) is reported as `refused_change`, never used: choosing the
    total after seeing data would inflate the type-I error."""
    configured = planned_ratings(session, study)
    locked = locked_planned(session, study)
    return {label: lock_planned_total(locked.get(label), total, 1 if label in locked else 0)
            for label, total in configured.items()}


def recorded_stops(session: Session, study: Study) -> list[dict[str, Any]]:
    """Monitoring stops recorded in the study's version history (oldest first)."""
    versions = session.scalars(
        select(StudyVersion).where(StudyVersion.study_id == study.id).order_by(StudyVersion.version)
    )
    return [{"version": v.version, **v.note} for v in versions if v.note and v.note.get("kind") == NOTE_KIND]


def overall(comparisons: dict[str, dict[str, Any]]) -> str:
    """"stop" when every comparison says stop, "continue" when one can go on, else "no work left"
    (a comparison short of analysable ratings with every pair at target); "no comparisons" without any."""
    if not comparisons:
        return "no comparisons"
    recs = [m["recommendation"] for m in comparisons.values()]
    if all(r.startswith("stop") for r in recs):
        return "stop"
    return "continue" if any(r.startswith("continue") for r in recs) else "no work left"


def pairs_short(session: Session, study: Study) -> dict[str, int]:
    """Per comparison label: pairs with fewer main ratings than the target (work left to hand out)."""
    counts = (select(Trial.pair_id, func.count(Rating.id).label("n")).join(Rating, Rating.trial_id == Trial.id)
              .where(Trial.study_id == study.id, Trial.kind == "main", Rating.is_primary).group_by(Trial.pair_id)
              .subquery())
    rows = session.execute(
        select(Comparison.label, func.count(Pair.id))
        .join(Pair, Pair.pair_set_id == Comparison.pair_set_id)
        .outerjoin(counts, counts.c.pair_id == Pair.id)
        .where(Comparison.study_id == study.id, func.coalesce(counts.c.n, 0) < study.ratings_per_pair)
        .group_by(Comparison.label)
    ).all()
    return {label: int(n) for label, n in rows}


NO_WORK_LEFT = ("no work left: every pair has its target of ratings but exclusions left {n} of {planned} "
                "planned ratings analysable; top up on the progress page, or report as is")


def study_monitoring(session: Session, study: Study, kept: set[str] | None = None) -> dict[str, Any]:
    """Monitoring section of the statistics (JSON-ready); `kept`: participants after exclusions.

    A comparison whose pairs all have their target of ratings cannot get more: "continue: about N
    more" would be a promise the study cannot keep, so it says there is no work left instead
    (`work_left` False)."""
    settings = MonitoringSettings.model_validate(study.monitoring or {})
    stops = recorded_stops(session, study)
    # A recorded stop is immutable (issue 23): the first one recorded per comparison stays the decision.
    first: dict[str, Any] = {}
    for note in stops:
        for label, c in (note.get("comparisons") or {}).items():
            if label not in first and str(c.get("recommendation", "")).startswith("stop") and "statistic" in c:
                first[label] = c
    totals = planned_totals(session, study)
    comparisons = monitor_comparisons(monitoring_rows(session, study),
                                      {label: t["planned"] for label, t in totals.items()},
                                      look_every=settings.look_every, margin=settings.margin, participants=kept,
                                      recorded_stops=first)
    short = pairs_short(session, study)
    for label, m in comparisons.items():
        t = totals[label]
        m["planned_locked"] = t["locked"]
        m["planned_change_refused"] = t["refused_change"]
        m["work_left"] = bool(short.get(label))
        if not m["work_left"] and str(m.get("recommendation", "")).startswith("continue"):
            m["recommendation"] = NO_WORK_LEFT.format(n=m.get("n_ratings"), planned=m.get("planned_ratings"))
    return {"settings": settings.model_dump(), "comparisons": comparisons, "overall": overall(comparisons),
            "ratings_used": "preference ratings (no gold, repeats or practice) of the participants kept after "
                            "exclusions, in arrival order", "recorded_stops": stops}


def apply_auto_close(session: Session, study: Study, monitoring: dict[str, Any], *,
                     by_admin: bool = False) -> dict[str, Any] | None:
    """Close `study` when monitoring says stop and auto-close is on (or an admin applies it by
    hand: `by_admin`); returns the note (or None).

    Flushes but does not commit (the caller owns the transaction).
    """
    if study.state != "open" or monitoring["overall"] != "stop":
        return None
    if not (by_admin or monitoring["settings"]["auto_close"]):
        return None
    action = "closed by an admin at the monitoring stop" if by_admin else "closed automatically"
    note = {"kind": NOTE_KIND, "action": action, "comparisons": {
        label: {"recommendation": m["recommendation"], **(m["stop"] or {"rule": "planned ratings reached",
                                                                        "look": m["looks_done"]})}
        for label, m in monitoring["comparisons"].items()}}
    set_state(session, study, "closed", note=note)
    return note


def auto_close_line(slug: str, version: int, note: dict[str, Any]) -> str:
    """What a command prints when it closed `slug` by the auto-close rule (`apply_auto_close`'s
    note): the new version and, per comparison, the recommendation, the look and the rule."""
    why = "; ".join(f"{label}: {c['recommendation']} at look {c['look']} ({c['rule']})"
                    for label, c in note["comparisons"].items())
    return f"auto-close: study {slug} closed by its monitoring rule (version {version}): {why}"
