"""Statistics of a study from the database: what the report, the live page and the CLI show.

- `study_statistics(session, study)` runs `app.statistics.compute_statistics` on the study's
  rating rows (`app.analysis.ratings.rating_rows`) with the study's exclusion rules and seed, adds
  monitoring and what a reader needs to judge it (study config and version, comparisons, pair-set
  parameters). It only reads.
- `apply_monitoring_stop(session, study)`: the one write here. Called where the data changes:
  after an answer is stored (when the study's monitoring `auto_close` is on) and by the admin's
  explicit "apply the monitoring stop" action; never by a page, a report or `analyze`.
- `rating_fingerprint(session, study)` is a cheap (count, last id, version) key: statistics only
  change when it does, so the live page caches on it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.analysis.monitoring_study import apply_auto_close, study_monitoring
from app.analysis.participant_flow import participant_flow
from app.analysis.ratings import checked_rows, rating_rows
from app.statistics import compute_statistics
from app.statistics.criteria import criteria_statistics
from app.store.models import Rating, Study, Trial
from app.studies.comparing import compare_summary
from app.studies.config import study_config, study_gold_targets, study_primary, study_questions

DEFAULT_DRAWS = 1000


def rating_fingerprint(session: Session, study: Study) -> tuple[int, int, int, int]:
    """(study id, study version, number of ratings, highest rating id): changes with every new rating."""
    count, last = session.execute(
        select(func.count(Rating.id), func.max(Rating.id)).join(Trial, Trial.id == Rating.trial_id)
        .where(Trial.study_id == study.id)
    ).one()
    return study.id, study.version, int(count or 0), int(last or 0)


def study_description(study: Study) -> dict[str, Any]:
    """What a reader needs to judge the results: config, version, comparisons and their arms."""
    comparisons = []
    for c in study.comparisons:
        ps = c.pair_set
        comparisons.append({
            "label": c.label, "pair_set": ps.id, "pair_set_name": ps.name, "baseline_arm": ps.baseline_arm,
            "treatment_arm": ps.treatment_arm, "params": ps.params, "model": ps.model,
            "manifest_sha256": ps.manifest_sha256, "n_pairs": len(ps.pairs),
        })
    return {
        "slug": study.slug, "title": study.title, "question": study.question, "version": study.version,
        "state": study.state, "config": study_config(study), "comparisons": comparisons,
    }


def study_statistics(
    session: Session, study: Study, *, draws: int = DEFAULT_DRAWS, seed: int | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Full statistics of `study` (see app.statistics) plus `study` and `generated_at`.

    rows: the study's export rows (`app.analysis.ratings.rating_rows`) if already loaded.
    seed defaults to the study's own seed, so a report can be recomputed exactly.

    Several criteria (issue 24): the top-level results are the primary criterion's (so monitoring,
    planning and the verdict use it); `criteria` holds every criterion's results, the primary
    first, and `criteria_analysis` the secondary Holm family and the per-participant correlation
    between criteria. Rows without a `criterion` answer the primary one.
    """
    rows = rating_rows(session, study, criteria=True) if rows is None else rows
    primary = study_primary(study)
    checked, groups = checked_rows(study, rows)  # gold trials judged on the criterion they check
    rows = groups[primary]
    draws_seed = study.seed if seed is None else seed
    stats = compute_statistics(
        checked,
        exclusion_rules=study.exclusion_rules or {},
        min_response_ms=study.min_response_ms or None,
        draws=draws,
        seed=draws_seed,
        # The study's first comparison is its primary one (Holm's family is every comparison).
        primary_comparison=study.comparisons[0].label if study.comparisons else None,
    )
    if len(groups) > 1 or len(study_questions(study)) > 1:
        stats["criteria"], stats["criteria_analysis"] = criteria_statistics(
            groups, primary, stats, exclusion_rules=study.exclusion_rules or {},
            min_response_ms=study.min_response_ms or None, draws=draws, seed=draws_seed)
        stats["criteria_analysis"]["questions"] = study_questions(study)
        stats["criteria_analysis"]["exclusion_rules_use"] = {
            "gold": ", ".join(f"{key} ({kind.replace('_', ' ')} gold trials)" for kind, key in study_gold_targets(study)),
            "speed, straight-lining, side bias, consistency": primary}
    stats["monitoring"] = study_monitoring(session, study, kept={str(p) for p in stats["exclusions"]["kept"]})
    stats["comparing"] = compare_summary(rows)
    stats["flow"] = participant_flow(session, study, rows, stats["exclusions"])
    stats["study"] = study_description(study)
    stats["study_versions_in_ratings"] = sorted({int(r["study_version"]) for r in rows})
    stats["generated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return stats


def apply_monitoring_stop(session: Session, study: Study, *, by_admin: bool = False) -> dict[str, Any] | None:
    """Close `study` when monitoring says stop; returns the recorded note, or None.

    Without `by_admin` the study's `monitoring.auto_close` must be on (the answer path); with it,
    an admin applies the stop by hand. A study that is not open is left alone, so a stop is
    recorded once. Flushes, never commits: the caller owns the transaction.
    """
    if study.state != "open":
        return None
    stats = study_statistics(session, study, draws=1)
    return apply_auto_close(session, study, stats["monitoring"], by_admin=by_admin)
