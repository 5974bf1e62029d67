"""The researcher's report: statistics of a study from the database, plots, one HTML file.

- The statistics themselves come from `app.analysis.study_statistics.study_statistics`.
- `render_report(stats)` makes a self-contained HTML page (inline CSS, plots as inline SVG made
  with matplotlib's Agg/SVG backends: no network needed to open it).
- `write_report(out_dir, stats, rows)` writes report.html, statistics.json and ratings.csv.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from app.analysis.participant_flow import flow_rows
from app.analysis.ratings import rating_rows
from app.analysis.study_statistics import DEFAULT_DRAWS, study_statistics
from app.reporting.export import rows_to_csv
from app.reporting.plotting import pyplot, svg
from app.reporting.result_figures import (  # noqa: F401 (re-exported: the report's figures)
    SCORE_COLOURS,
    _groups,
    answer_names,
    diverging_bar_figure,
    diverging_bar_svg,
    win_rate_figure,
    win_rate_svg,
)
from app.reporting.verdict import overall_arms, ranking, ranking_sentence, verdicts
from app.statistics.scoring import SCORE_NAMES, SCORES
from app.store.models import Study
from app.templating import templates

# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def report_figures(stats: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Inline SVGs per result set: {'after_exclusions': {'bars', 'win_rate'}, 'all': {...}}, and
    'monitoring': {comparison: repeated interval over looks}.

    'all' is left out when no participant was excluded (the two result sets are the same).
    """
    keys = [("after_exclusions", "after exclusions")]
    if stats["results"]["after_exclusions"] != stats["results"]["all"]:
        keys.append(("all", "all participants, no exclusions"))

    arms = overall_arms(stats)
    figures: dict[str, Any] = {"monitoring": monitoring_svgs(stats.get("monitoring"))}
    for key, title in keys:
        groups = _groups(stats["results"][key])
        if groups:
            figures[key] = {
                "bars": diverging_bar_svg(groups, f"Answers ({title})", salt=f"{key}-bars", arms=arms),
                "win_rate": win_rate_svg(groups, f"Win rate with 95% interval ({title})", salt=f"{key}-win",
                                         arms=arms),
            }
    return figures


def criteria_views(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per criterion of a several-question study (issue 24), the primary first: its role, question,
    after-exclusions results with their figures and groups; [] for a one-question study."""
    criteria = stats.get("criteria") or {}
    if len(criteria) < 2:
        return []
    arms = overall_arms(stats)
    texts = {q["key"]: q["text"] for q in (stats.get("criteria_analysis") or {}).get("questions") or []}
    views = []
    for i, (key, c) in enumerate(criteria.items()):
        result = c["results"]["after_exclusions"]
        groups = _groups(result)
        figs = {"bars": diverging_bar_svg(groups, f"Answers ({key})", salt=f"criterion-{i}-bars", arms=arms),
                "win_rate": win_rate_svg(groups, f"Win rate with 95% interval ({key})", salt=f"criterion-{i}-win",
                                         arms=arms)} if groups else None
        views.append({"key": key, "role": c["role"], "question": texts.get(key), "result": result,
                      "overall": result.get("overall"), "figs": figs, "groups": groups,
                      "title": f"{key} ({c['role']}): {texts.get(key, '')}".rstrip(": ")})
    return views


def render_report(stats: dict[str, Any], *, live: bool = False, refresh_seconds: int = 30,
                  json_url: str | None = None, gallery: list[dict[str, Any]] | None = None) -> str:
    """The report as one self-contained HTML page. `live` adds an auto-refresh (statistics page);
    `gallery` (`app.reporting.figures.gallery`: pairs with data-URI images) adds a section of pairs."""
    same = stats["results"]["after_exclusions"] == stats["results"]["all"]
    flow = stats.get("flow")
    arms = overall_arms(stats)
    return templates.get_template("report.html").render(
        stats=stats, study=stats.get("study"), figures=report_figures(stats), same_results=same,
        verdict=verdicts(stats), ranking_line=ranking_sentence(ranking(stats)), flow=flow,
        flow_rows=flow_rows(flow) if flow else None, arms=arms, answer_names=answer_names(arms),
        datasheet=stats.get("datasheet"),
        groups={k: _groups(v) for k, v in stats["results"].items()}, live=live,
        refresh_seconds=refresh_seconds, json_url=json_url, score_names=SCORE_NAMES, scores=SCORES,
        colours=SCORE_COLOURS, gallery=gallery, arm_ranking=_arm_ranking(stats), criteria=criteria_views(stats),
    )


def _arm_ranking(stats: dict[str, Any]) -> str | None:
    """The K-arm section (win matrix, ranking, nfe per arm; app.reporting.ranking), None with 2 arms."""
    from app.reporting.ranking import ranking_section

    return ranking_section(stats)


def statistics_json(stats: dict[str, Any]) -> str:
    """statistics.json text (strict JSON: no NaN)."""
    return json.dumps(stats, indent=1, ensure_ascii=False, allow_nan=False)


def write_report(out_dir: Path, stats: dict[str, Any], rows: list[dict[str, Any]],
                 gallery: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write report.html, statistics.json and ratings.csv into out_dir (created if needed), and the
    paper-ready files (`app.reporting.paper.write_paper`: methods, references, tables, figures)."""
    from app.reporting.paper import write_paper

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / "report.html", "statistics": out_dir / "statistics.json",
             "ratings": out_dir / "ratings.csv"}
    paths["statistics"].write_text(statistics_json(stats) + "\n", encoding="utf-8")
    paths["ratings"].write_text(rows_to_csv(rows), encoding="utf-8")
    paths["report"].write_text(render_report(stats, gallery=gallery), encoding="utf-8")
    if stats.get("datasheet"):
        paths["datasheet"] = out_dir / "datasheet.json"
        paths["datasheet"].write_text(json.dumps(stats["datasheet"], indent=1, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    paths.update(write_paper(out_dir, stats, stats.get("datasheet")))
    return paths


GALLERY_PER_STRATUM = 2


def report_gallery(session: Session, study: Study, k: int = GALLERY_PER_STRATUM) -> list[dict[str, Any]]:
    """The report's gallery: the k top wins and k top losses of the treatment per stratum."""
    from app.reporting.explorer import study_pairs, top_pairs
    from app.reporting.figures import gallery

    pairs = study_pairs(session, study)
    chosen = top_pairs(pairs, k, "wins")
    chosen += [p for p in top_pairs(pairs, k, "losses") if p not in chosen]
    return gallery(session, chosen)


class StudyReport(NamedTuple):
    """What `write_study_report` did: the files written and the number of ratings."""

    paths: dict[str, Path]
    n_ratings: int


def write_study_report(session: Session, study: Study, out_dir: Path, *, draws: int = DEFAULT_DRAWS,
                       seed: int | None = None) -> StudyReport:
    """`sfgeval report`'s bundle for `study` in out_dir. Only reads: a monitoring stop is applied
    where the data changes (after an answer, or by an admin), never by a report."""
    from app.reporting.datasheet import study_datasheet

    rows = rating_rows(session, study, criteria=True)  # ratings.csv in long format (issue 24)
    stats = study_statistics(session, study, draws=draws, seed=seed, rows=rows)
    stats["datasheet"] = study_datasheet(session, study, stats)
    return StudyReport(write_report(out_dir, stats, rows, report_gallery(session, study)), len(rows))


def monitoring_svgs(monitoring: dict[str, Any] | None) -> dict[str, str]:
    """Per comparison: the repeated 95% interval at every look against ratings (inline SVG)."""

    out = {}
    for i, (label, m) in enumerate((monitoring or {}).get("comparisons", {}).items()):
        h = m.get("history") or {}
        if not h.get("n_ratings"):
            continue
        fig, ax = pyplot().subplots(figsize=(7, 2.6))
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
        out[label] = svg(fig, f"monitoring-{i}")
    return out
