"""Monitoring of a study in the database: per-comparison recommendations, recorded stops, auto-close.

- `study_monitoring(session, study, kept)` runs `app.monitoring.monitor_comparisons` on the
  study's preference ratings in arrival order (rating id), planned ratings per comparison =
  pairs of its pair set x the study's ratings per pair, with the study's `monitoring` settings;
  it adds the overall recommendation and the stops already recorded in the version history.
- `apply_auto_close(session, study, monitoring)`: when the study is open, `auto_close` is on
  and every comparison says stop, close the study; the new version's note records, per
  comparison, the look, the statistic and the rule. Called where statistics are computed (live
  statistics page, statistics.json, `sfgeval report`, `sfgeval study monitor`), never on a
  participant's request (that would make answer timing depend on the data).
- `auto_close_line(slug, version, note)`: the line the CLI prints when it closed a study.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Comparison, Pair, Rating, Study, StudyVersion, Trial
from app.monitoring import MonitoringSettings, monitor_comparisons

NOTE_KIND = "monitoring stop"


def monitoring_rows(session: Session, study: Study) -> list[dict[str, Any]]:
    """Preference-relevant columns of every non-practice rating, in arrival (rating id) order."""
    stmt = (
        select(Rating.id, Trial.participant_id, Pair.prompt_id, Comparison.label, Rating.score, Trial.kind, Pair.id,
               Pair.stratum)
        .join(Trial, Trial.id == Rating.trial_id)
        .join(Pair, Pair.id == Trial.pair_id)
        .join(Comparison, Comparison.id == Trial.comparison_id)
        .where(Trial.study_id == study.id, Trial.kind != "practice")
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


def recorded_stops(session: Session, study: Study) -> list[dict[str, Any]]:
    """Monitoring stops recorded in the study's version history (oldest first)."""
    versions = session.scalars(
        select(StudyVersion).where(StudyVersion.study_id == study.id).order_by(StudyVersion.version)
    )
    return [{"version": v.version, **v.note} for v in versions if v.note and v.note.get("kind") == NOTE_KIND]


def overall(comparisons: dict[str, dict[str, Any]]) -> str:
    """"stop" when every comparison says stop, else "continue"; "no ratings" without comparisons."""
    if not comparisons:
        return "no comparisons"
    return "stop" if all(m["recommendation"].startswith("stop") for m in comparisons.values()) else "continue"


def study_monitoring(session: Session, study: Study, kept: set[str] | None = None) -> dict[str, Any]:
    """Monitoring section of the statistics (JSON-ready); `kept`: participants after exclusions."""
    settings = MonitoringSettings.model_validate(study.monitoring or {})
    stops = recorded_stops(session, study)
    # A recorded stop is immutable (issue 23): the first one recorded per comparison stays the decision.
    first: dict[str, Any] = {}
    for note in stops:
        for label, c in (note.get("comparisons") or {}).items():
            if label not in first and str(c.get("recommendation", "")).startswith("stop") and "statistic" in c:
                first[label] = c
    comparisons = monitor_comparisons(monitoring_rows(session, study), planned_ratings(session, study),
                                      look_every=settings.look_every, margin=settings.margin, participants=kept,
                                      recorded_stops=first)
    return {"settings": settings.model_dump(), "comparisons": comparisons, "overall": overall(comparisons),
            "ratings_used": "preference ratings (no gold, repeats or practice) of the participants kept after "
                            "exclusions, in arrival order", "recorded_stops": stops}


def apply_auto_close(session: Session, study: Study, monitoring: dict[str, Any]) -> dict[str, Any] | None:
    """Close `study` when auto-close is on and monitoring says stop; returns the note (or None).

    Flushes but does not commit (the caller owns the transaction).
    """
    from app.studies import set_state

    if study.state != "open" or not monitoring["settings"]["auto_close"] or monitoring["overall"] != "stop":
        return None
    note = {"kind": NOTE_KIND, "action": "closed automatically", "comparisons": {
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


def monitoring_svgs(monitoring: dict[str, Any] | None) -> dict[str, str]:
    """Per comparison: the repeated 95% interval at every look against ratings (inline SVG)."""
    from app.report import _pyplot, _svg

    out = {}
    for i, (label, m) in enumerate((monitoring or {}).get("comparisons", {}).items()):
        h = m.get("history") or {}
        if not h.get("n_ratings"):
            continue
        fig, ax = _pyplot().subplots(figsize=(7, 2.6))
        ax.fill_between(h["n_ratings"], h["interval_low"], h["interval_high"], color="#67a9cf", alpha=0.4,
                        step="post", label="repeated 95% interval (valid at every look)")
        ax.plot(h["n_ratings"], h["win_rate"], color="#2166ac", drawstyle="steps-post", label="win rate")
        ax.axhline(0.5, color="black", linewidth=0.8)
        d = m["margin"]
        ax.axhspan(0.5 - d, 0.5 + d, color="#d9d9d9", alpha=0.5, label=f"no difference larger than {d:g}")
        if m.get("stop"):
            ax.axvline(m["stop"]["n_ratings"], color="#b2182b", linewidth=0.8, label="stop")
        ax.set_xlim(0, m["planned_ratings"])
        ax.set_ylim(0, 1)
        ax.set_xlabel("preference ratings (looks every %d)" % m["look_every"])
        ax.set_ylabel("win rate")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="lower left")
        out[label] = _svg(fig, f"monitoring-{i}")
    return out
