"""`sfgeval plan` (participants needed, with the plan's plot and table) and `sfgeval study monitor`.

The plot (`plan_svg`) and the table (`plan_csv`) are shared with the admin plan page
(`app.api.routes.planning`). Inputs are read into `app.planning.PlanRequest` by `build_request`,
which both front ends use, so they accept and reject the same values.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from app.cli_options import database_url_option, migrated

TABLE_COLUMNS = ("participants", "ratings", "half_width", "power", "sims")


def build_request(*, win_rate: float | None, tie_rate: float, sd_participant: float, sd_prompt: float,
                  sd_pair: float, strata: int, prompts_per_stratum: int, seeds_per_prompt: int,
                  ratings_per_participant: int, half_width: float | None, power: float | None, alpha: float,
                  price_per_rating: float | None, sims: int, seed: int, estimator: str,
                  pilot_rows: list[dict[str, Any]] | None = None) -> tuple[Any, dict[str, Any] | None]:
    """(PlanRequest, pilot estimate or None). ValueError says what is wrong with the inputs."""
    from app.clustered import Design, Effects
    from app.planning import PlanRequest, effects_from_pilot

    pilot = None
    if pilot_rows is not None:
        pilot = effects_from_pilot(pilot_rows)
        effects = pilot["effects"]
        if win_rate is not None:  # an explicit expected win rate overrides the pilot's
            effects = Effects(**{**effects.__dict__, "win_rate": win_rate})
    else:
        effects = Effects(win_rate=0.6 if win_rate is None else win_rate, tie_rate=tie_rate, sd_participant=sd_participant, sd_prompt=sd_prompt,
                          sd_pair=sd_pair)
    if half_width is not None and power is not None:
        raise ValueError("give either a target half-width or a target power, not both")
    if half_width is None and power is None:
        power = 0.8
    req = PlanRequest(
        design=Design(n_strata=strata, prompts_per_stratum=prompts_per_stratum, seeds_per_prompt=seeds_per_prompt,
                      ratings_per_participant=ratings_per_participant),
        effects=effects, half_width=half_width, power=power, alpha=alpha,
        price_per_rating=price_per_rating, sims=sims, seed=seed, estimator=estimator,
    )
    req.check()
    return req, pilot


def run_plan(req: Any, pilot: dict[str, Any] | None, pilot_slug: str | None, progress: Any = None) -> dict[str, Any]:
    """`app.planning.plan`, with the pilot estimate (if any) recorded in the result."""
    from app.planning import plan as simulate_plan

    result = simulate_plan(req, progress=progress)
    if pilot is not None:
        result["pilot"] = {k: v for k, v in pilot.items() if k != "effects"} | {"slug": pilot_slug}
    return result


def plan_svg(result: dict[str, Any]) -> str:
    """Half-width (and power, for a power target) against participants: simulated points and fit."""
    from app.report import _pyplot, _svg

    table, curve = result["table"], result["curve"]
    power = "power" in result["target"]
    fig, axes = _pyplot().subplots(1, 2 if power else 1, figsize=(10 if power else 6, 3.6), squeeze=False)
    panels = [("half_width", "mean interval half-width", result["request"]["half_width"])]
    if power:
        panels.append(("power", "power (interval above 0.5)", result["target"]["power"]))
    for ax, (key, label, target) in zip(axes[0], panels):
        ax.plot([r["participants"] for r in table], [r[key] for r in table], "o", color="#2166ac", label="simulated")
        ax.plot(curve["participants"], curve[key], "-", color="#7f7f7f", label="fit")
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        if result["participants"] is not None:
            ax.axvline(result["participants"], color="#b2182b", linewidth=0.8, label="needed")
        ax.set_xscale("log")
        ticks = [r["participants"] for r in table]
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("participants")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, frameon=False)
    return _svg(fig, "plan")


def plan_csv(result: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(result["table"])
    return buf.getvalue()


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable result (the CLI prints it on stderr; the page shows the same)."""
    e = result["request"]["effects"]
    lines = [f"expected win rate {e['win_rate']:.3f}, ties {e['tie_rate']:.2f}, sds participant "
             f"{e['sd_participant']:.2f} / prompt {e['sd_prompt']:.2f} / pair {e['sd_pair']:.2f} (noise 1)",
             f"{'participants':>12} {'ratings':>8} {'half-width':>10} {'power':>6}"]
    lines += [f"{r['participants']:>12} {r['ratings']:>8} {r['half_width']:>10.4f} {r['power']:>6.3f}"
              for r in result["table"]]
    if result["participants"] is None:
        lines.append(result.get("note", "target not reached"))
    else:
        cost = f", cost {result['cost']:.2f}" if result["cost"] is not None else ""
        lines.append(f"needed: {result['participants']} participants, {result['ratings']} ratings{cost} "
                     f"(binomial answer without random effects: {result['binomial_participants']:.1f} participants)")
    return lines


def _pilot_rows(slug: str, database_url: str | None) -> list[dict[str, Any]]:
    from app.db import session_scope
    from app.export import rating_rows
    from app.studies import StudyError, get_study

    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            return rating_rows(session, get_study(session, slug))
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
def plan(win_rate, pilot_slug, tie_rate, sd_participant, sd_prompt, sd_pair, strata, prompts_per_stratum,
         seeds_per_prompt, ratings_per_participant, half_width, power, alpha, price_per_rating, sims, seed, estimator,
         out, database_url) -> None:
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
@database_url_option
def monitor_cmd(slug: str, database_url: str | None) -> None:
    """Print a study's monitoring recommendation per comparison (and apply its auto-close rule).

    One line per comparison on stdout: label, tab, recommendation. Safe to run from cron.
    """
    from app.db import session_scope
    from app.monitoring_study import apply_auto_close, auto_close_line
    from app.report import study_statistics
    from app.statistics import StatisticsInputError
    from app.studies import StudyError, get_study

    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            study = get_study(session, slug)
            mon = study_statistics(session, study, draws=1)["monitoring"]
            note = apply_auto_close(session, study, mon)
            version = study.version
    except (StudyError, StatisticsInputError) as e:
        raise click.ClickException(str(e)) from None
    for label, m in mon["comparisons"].items():
        click.echo(f"{label}\t{m['recommendation']}")
    if note:
        click.echo(auto_close_line(slug, version, note), err=True)
