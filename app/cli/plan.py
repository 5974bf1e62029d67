"""`sfgeval plan` (participants needed, with the plan's plot and table) and `sfgeval study monitor`.

Thin callers: the library is `app.analysis.planning` (inputs, simulation, table, text) and
`app.reporting.planning` (the plot), the same functions the admin plan page calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from app.analysis.planning import build_request, plan_csv, run_plan, summary_lines
from app.cli.options import database_url_option, migrated
from app.reporting.planning import plan_svg

def _pilot_rows(slug: str, database_url: str | None) -> list[dict[str, Any]]:
    from app.analysis.planning import pilot_rows
    from app.store.db import session_scope
    from app.studies.config import StudyError

    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            return pilot_rows(session, slug)
    except StudyError as e:
        raise click.ClickException(str(e)) from None


@click.command("plan")
@click.option("--win-rate", type=float, default=None, help="expected win rate of the treatment among decisive votes [default: 0.6, or the pilot's]")
@click.option("--pilot", "pilot_slug", default=None, metavar="SLUG",
              help="estimate win rate, ties and variance components from this study's ratings")
@click.option("--tie-rate", type=float, default=0.2, show_default=True, help="share of 'no preference' answers")
@click.option("--sd-participant", type=float, default=0.5, show_default=True, help="latent sd (noise sd = 1)")
@click.option("--sd-prompt", type=float, default=0.3, show_default=True)
@click.option("--sd-pair", type=float, default=0.0, show_default=True)
@click.option("--strata", type=int, default=3, show_default=True)
@click.option("--prompts-per-stratum", type=int, default=20, show_default=True)
@click.option("--seeds-per-prompt", type=int, default=1, show_default=True)
@click.option("--ratings-per-participant", type=int, default=20, show_default=True)
@click.option("--half-width", type=float, default=None, help="target mean half-width of the interval")
@click.option("--power", type=float, default=None, help="target power [default 0.8 unless --half-width]")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="two-sided level of the interval")
@click.option("--price-per-rating", type=float, default=None, help="cost of one rating, for the total cost")
@click.option("--sims", type=int, default=200, show_default=True, help="simulated studies per participant count")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--estimator", type=click.Choice(["fast", "report"]), default="fast", show_default=True,
              help="fast: vectorised two-way clustered SE; report: the report's own interval per study (slower)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="also write plan.json, plan.csv and plan.svg here")
@click.option("--database-url", default=None, metavar="URL", help="database of the --pilot study")
@click.option("--arms", "n_arms", type=click.IntRange(2), default=2, show_default=True,
              help="arms in the study (K > 2: each comparison planned at alpha / comparisons, "
                   "ratings per participant split over them; app.statistics.arm_planning)")
@click.option("--comparisons", type=click.Choice(["vs-baseline", "all-pairs"]), default="vs-baseline",
              show_default=True, help="which pairs of arms a K-arm study compares")
def plan(win_rate, pilot_slug, tie_rate, sd_participant, sd_prompt, sd_pair, strata, prompts_per_stratum,
         seeds_per_prompt, ratings_per_participant, half_width, power, alpha, price_per_rating, sims, seed, estimator,
         out, database_url, n_arms=2, comparisons="vs-baseline") -> None:
    """Participants needed for a target interval half-width or power, by simulating the clustered design.

    Prints the participants needed, the total ratings and (with --price-per-rating) the cost on
    stdout, one per line; the table of the simulated curve goes to stderr.
    """
    rows = _pilot_rows(pilot_slug, database_url) if pilot_slug else None
    try:
        req, pilot = build_request(
            win_rate=win_rate, tie_rate=tie_rate, sd_participant=sd_participant, sd_prompt=sd_prompt, sd_pair=sd_pair,
            strata=strata, prompts_per_stratum=prompts_per_stratum, seeds_per_prompt=seeds_per_prompt,
            ratings_per_participant=ratings_per_participant, half_width=half_width,
            power=power, alpha=alpha,
            price_per_rating=price_per_rating, sims=sims, seed=seed, estimator=estimator, pilot_rows=rows)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if pilot is not None:
        click.echo(f"pilot {pilot_slug}: {pilot['n_ratings']} ratings, {pilot['n_participants']} participants, "
                   f"{pilot['n_prompts']} prompts", err=True)
    with tqdm(desc="simulating", unit="point", file=sys.stderr) as bar:
        def step(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        try:
            if n_arms > 2:
                from app.statistics.arm_planning import plan_arms

                result = plan_arms(req, n_arms, comparisons, progress=step)
                click.echo(f"{n_arms} arms, {result['arms']['n_comparisons']} comparisons ({comparisons}): each "
                           f"planned at alpha {result['arms']['alpha_per_comparison']:.4g} with "
                           f"{result['arms']['ratings_per_participant_per_comparison']} ratings per participant",
                           err=True)
            else:
                result = run_plan(req, pilot, pilot_slug, progress=step)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    for line in summary_lines(result):
        click.echo(line, err=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        (out / "plan.csv").write_text(plan_csv(result), encoding="utf-8")
        (out / "plan.svg").write_text(plan_svg(result), encoding="utf-8")
    if result["participants"] is None:
        raise click.ClickException(result["note"])
    click.echo(result["participants"])
    click.echo(result["ratings"])
    if result["cost"] is not None:
        click.echo(f"{result['cost']:.2f}")


@click.command("monitor")
@click.argument("slug")
@click.option("--apply", "apply_stop", is_flag=True,
              help="close the study when every comparison says stop (recorded once in its version history)")
@database_url_option
def monitor_cmd(slug: str, apply_stop: bool, database_url: str | None) -> None:
    """Print a study's monitoring recommendation per comparison; with --apply, act on a stop.

    One line per comparison on stdout: label, tab, recommendation. Without --apply it only reads.
    Safe to run from cron.
    """
    from app.analysis.monitoring_study import auto_close_line
    from app.analysis.study_statistics import apply_monitoring_stop, study_statistics
    from app.statistics import StatisticsInputError
    from app.store.db import session_scope
    from app.studies.config import StudyError, get_study

    url = migrated(database_url)
    note = None
    try:
        with session_scope(url) as session:
            study = get_study(session, slug)
            mon = study_statistics(session, study, draws=1)["monitoring"]
            if apply_stop:
                note = apply_monitoring_stop(session, study, by_admin=True)
            version = study.version
    except (StudyError, StatisticsInputError) as e:
        raise click.ClickException(str(e)) from None
    for label, m in mon["comparisons"].items():
        click.echo(f"{label}\t{m['recommendation']}")
    if note:
        click.echo(auto_close_line(slug, version, note), err=True)
