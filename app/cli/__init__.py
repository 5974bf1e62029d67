"""The `sfgeval` command line: one entry point for the sampler (GPU side) and the app.

Sampler commands are imported from `sampler.cli`, which imports torch only inside commands.
Every app command takes `--database-url` (default: DATABASE_URL, else a SQLite file in the
working directory) and brings the schema up to date first, so a fresh machine needs no set-up.
Results meant for scripts go to stdout (one value per line); progress and notes go to stderr.

Package rule: commands are thin callers of the library packages (`app.studies`, `app.analysis`,
`app.reporting`, `app.accounts`, `app.store`); no library code lives here. May import: every
package of `app` except `app.web` (the server starts by its import string), and `sampler`'s
commands (the one declared meeting point of the two command sets).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import click

from sampler.cli import generate, metrics, prompts

from app.cli.admin import admin
from app.cli.options import base_url_option, database_url_option, migrated, public_base_url
from app.cli.plan import monitor_cmd, plan

# (prompt, stratum). The first six, made with the tiny model (`sfgeval demo --generate
# --no-serve --data-dir D`, which writes D/pairs), are the pair set shipped in app/demo_pairs/.
DEMO_PROMPTS = (
    ("a red bicycle leaning against a brick wall", "objects"),
    ("a bowl of oranges on a wooden table", "objects"),
    ("a small boat on a calm lake at sunset", "scenes"),
    ("a cat sleeping on a blue sofa", "animals"),
    ("a lighthouse on a rocky coast", "scenes"),
    ("two giraffes standing in tall grass", "animals"),
    ("a plate of pasta with basil", "objects"),
    ("a snowy mountain under a clear sky", "scenes"),
)
SHIPPED_DEMO_PAIRS = Path(__file__).resolve().parent.parent / "demo_pairs"
# Three arms (cfg, sfg, pag) of the same six prompts, made once with the tiny model (`generate --arms`).
SHIPPED_DEMO_SET = Path(__file__).resolve().parent.parent / "demo_set"
# The demo's simulated raters of the 3-arm study: arm strengths on the log-odds scale (cfg = 0).
DEMO_SIMULATED_PARTICIPANTS = 12
DEMO_ARM_STRENGTHS = {"cfg": 0.0, "sfg": 0.8, "pag": 0.4}


def _load_config(path: Path) -> dict[str, Any]:
    from app.studies.config_files import read_config_file
    from app.studies.config import StudyError

    try:
        return read_config_file(path)
    except StudyError as e:
        raise click.ClickException(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Blind human evaluation of segmentation-free guidance against classifier-free guidance."""


main.add_command(generate)
main.add_command(prompts)
main.add_command(metrics)
main.add_command(plan)
main.add_command(admin)


# ------------------------------------------------------------------ import
@main.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="pair set name [default: the folder name]")
@database_url_option
def import_cmd(folder: Path, name: str | None, database_url: str | None) -> None:
    """Import a generator output folder (manifest.jsonl + images) as a pair set; prints its id."""
    from app.store.db import session_scope
    from app.studies.importer import import_pair_set
    from sampler.manifest import ManifestError

    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            pair_set = import_pair_set(session, folder, name=name, progress=True)
            pair_set_id, n = pair_set.id, len(pair_set.pairs)
            from app.studies.arm_sets import set_info

            info = set_info(pair_set)
    except ManifestError as e:
        raise click.ClickException(f"nothing imported: {e}") from None
    click.echo(f"pair set {pair_set_id}: {n} pairs", err=True)
    if info is not None:
        click.echo(f"image set with arms {', '.join(info['arms'])} (reference {info['reference']}): one pair set per "
                   f"pair of arms; list {pair_set_id} in a study's pair_sets and pick pairs with `comparisons`", err=True)
    click.echo(pair_set_id)


# ------------------------------------------------------------------ studies
@main.group()
def study() -> None:
    """Create, export, open and close studies."""


@study.command("create")
@click.argument("config", type=click.Path(path_type=Path))
@database_url_option
@base_url_option
def study_create(config: Path, database_url: str | None, base_url: str | None) -> None:
    """Create a study from a YAML or JSON config file; prints its slug and participant link."""
    from app.store.db import session_scope
    from app.studies.config import StudyError, create_study

    data = _load_config(config)
    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            slug = create_study(session, data).slug
    except StudyError as e:
        raise click.ClickException(f"{config}: {e}") from None
    click.echo(slug)
    click.echo(f"{public_base_url(base_url)}/s/{slug}")


@study.command("export")
@click.argument("slug")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@database_url_option
def study_export(slug: str, fmt: str, database_url: str | None) -> None:
    """Print a study's config (feed it back to `study create`)."""
    from app.studies.config_files import dump_config
    from app.store.db import session_scope
    from app.studies.config import StudyError, get_study, study_config

    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            cfg = study_config(get_study(session, slug))
    except StudyError as e:
        raise click.ClickException(str(e)) from None
    click.echo(dump_config(cfg, fmt), nl=False)


def _state_command(state: str, verb: str):
    @click.argument("slug")
    @database_url_option
    def command(slug: str, database_url: str | None) -> None:
        from app.store.db import session_scope
        from app.studies.config import StudyError, get_study, set_state

        url = migrated(database_url)
        try:
            with session_scope(url) as session:
                s = set_state(session, get_study(session, slug), state)
                version = s.version
        except StudyError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"study {slug} is {state} (version {version})")

    command.__doc__ = f"{verb} a study."
    return command


study.add_command(monitor_cmd)

for _state, _name, _verb in (("open", "open", "Open"), ("closed", "close", "Close"), ("archived", "archive", "Archive")):
    study.command(_name)(_state_command(_state, _verb))


# ------------------------------------------------------------------ export
@main.command("export")
@click.argument("slug")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write here [default: stdout]")
@click.option("--include-practice", is_flag=True, help="also export practice ratings")
@database_url_option
def export_cmd(slug: str, fmt: str, out: Path | None, include_practice: bool, database_url: str | None) -> None:
    """Export a study's raw ratings (one row per rating) as CSV or JSON."""
    from app.store.db import session_scope
    from app.reporting.export import rating_rows, rows_to_csv, rows_to_json
    from app.studies.config import StudyError, get_study

    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            rows = rating_rows(session, get_study(session, slug), include_practice=include_practice)
    except StudyError as e:
        raise click.ClickException(str(e)) from None
    text = rows_to_csv(rows) if fmt == "csv" else rows_to_json(rows) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        click.echo(f"{len(rows)} ratings written to {out}", err=True)


# ------------------------------------------------------------------ report
@main.command("report")
@click.argument("slug")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="folder for report.html, statistics.json and ratings.csv (created if needed)")
@click.option("--draws", default=1000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="crossed-bootstrap draws")
@click.option("--seed", default=None, type=int, help="bootstrap seed [default: the study's seed]")
@database_url_option
def report_cmd(slug: str, out: Path, draws: int, seed: int | None, database_url: str | None) -> None:
    """Write a study's statistics: report.html (self-contained), statistics.json, ratings.csv.

    Only reads the database (a monitoring stop is applied by `sfgeval study monitor --apply`, the
    admin page, or after an answer when auto-close is on)."""
    from app.store.db import session_scope
    from app.reporting.report import write_study_report
    from app.statistics import StatisticsInputError
    from app.studies.config import StudyError, get_study

    url = migrated(database_url)
    try:
        with session_scope(url) as session:
            study = get_study(session, slug)
            click.echo(f"computing statistics ({draws} bootstrap draws)…", err=True)
            report = write_study_report(session, study, out, draws=draws, seed=seed)
            click.echo(f"{report.n_ratings} ratings", err=True)
    except (StudyError, StatisticsInputError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot write to {out}: {e.strerror or e}") from None
    for path in report.paths.values():
        click.echo(path)


# ------------------------------------------------------------------ analyze
@main.command("analyze")
@click.argument("exports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rules", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="exclusion rules: a YAML/JSON mapping, or a study config with exclusion_rules [default: none]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True,
              help="folder for report.html, statistics.json and ratings.csv (created if needed)")
@click.option("--draws", default=1000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="crossed-bootstrap draws")
@click.option("--seed", default=0, show_default=True, type=int, help="bootstrap seed")
@click.option("--primary", default=None, help="the primary comparison's label [default: the first by label]")
def analyze_cmd(exports: tuple[Path, ...], rules: Path | None, out: Path, draws: int, seed: int,
                primary: str | None) -> None:
    """Offline analysis: the report bundle from export files (CSV or JSON), with no database.

    EXPORTS are files written by `sfgeval export` (or a report's ratings.csv); several are pooled.
    Writes the same report.html, statistics.json and ratings.csv as `sfgeval report`, without
    what only the database knows (monitoring, study description, participant flow)."""
    from app.reporting.offline import write_offline_report
    from app.statistics import StatisticsInputError

    try:
        report = write_offline_report(exports, out, rules, draws=draws, seed=seed, primary_comparison=primary)
    except StatisticsInputError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot write to {out}: {e.strerror or e}") from None
    click.echo(f"{report.n_ratings} ratings from {len(exports)} file(s)", err=True)
    for path in report.paths.values():
        click.echo(path)


# ------------------------------------------------------------------ serving
def _prepare_environment(url: str) -> None:
    """Make the settings every worker process reads agree with this command's options."""
    os.environ["DATABASE_URL"] = url
    if not os.environ.get("SFGEVAL_SECRET_KEY"):
        # One random key shared by this run's workers (they inherit the environment); admin
        # sessions end when the server restarts. Set SFGEVAL_SECRET_KEY to keep them.
        os.environ["SFGEVAL_SECRET_KEY"] = secrets.token_urlsafe(32)
        click.echo("note: SFGEVAL_SECRET_KEY not set; using a random key for this run", err=True)
    from app.settings import get_settings

    get_settings.cache_clear()


def _run_server(host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers,
                # Proxy headers are read by the app itself, from trusted proxies only (app.web.clients).
                proxy_headers=False, log_level="info", server_header=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@database_url_option
def serve(host: str, port: int, workers: int, database_url: str | None) -> None:
    """Run the web app with uvicorn (migrates the database first)."""
    url = migrated(database_url)
    _prepare_environment(url)
    _run_server(host, port, workers)


# ------------------------------------------------------------------ demo
def generate_demo_pairs(out_dir: Path, model_dir: Path | None, n_prompts: int, steps: int = 10) -> Path:
    """A small pair set made by the sampler (tiny random-weight model unless `model_dir`), with
    SFG token maps. Needs the [sampler] extra."""
    try:
        from sampler.generate import GenerationSettings, generate_pairs
        from sampler.prompts import PromptRecord
        from sampler.tiny import ensure_tiny_model
    except ImportError as e:
        raise click.ClickException(
            f"demo --generate needs the sampler extra (pip install -e '.[sampler]'): {e}") from None

    if model_dir is None:
        click.echo("building the tiny random-weight model (once)…", err=True)
        model_dir = ensure_tiny_model(Path(".tiny-model"))
    records = [PromptRecord(str(i), p, s) for i, (p, s) in enumerate(DEMO_PROMPTS[:n_prompts], 1)]
    generate_pairs(records, out_dir, model_dir=model_dir, settings=GenerationSettings(num_inference_steps=steps),
                   save_maps=True)
    (out_dir / ".manifest.lock").unlink(missing_ok=True)
    return out_dir


@main.command()
@click.option("--generate", "generate_pairs", is_flag=True,
              help="make a fresh pair set with the sampler (needs the [sampler] extra) instead of the shipped one")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="with --generate: a Stable Diffusion 1.x folder [default: the tiny random-weight model]")
@click.option("--prompts", "n_prompts", default=6, show_default=True, type=click.IntRange(2, len(DEMO_PROMPTS)),
              help="with --generate: how many prompts")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(1, 200),
              help="with --generate: denoising steps")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("demo-data"), show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--admin-user", default="admin", show_default=True)
@click.option("--no-serve", is_flag=True, help="set everything up, print the links, do not serve")
@database_url_option
def demo(generate_pairs: bool, model_dir: Path | None, n_prompts: int, steps: int, data_dir: Path, host: str,
         port: int, admin_user: str, no_serve: bool, database_url: str | None) -> None:
    """Import a small pair set, create an open study and an admin login, and serve it locally.

    The pair set is the one shipped in the package (six prompts made once with the tiny model;
    no torch needed), or with --generate a fresh one made by the sampler.
    """
    from app.accounts.admins import ensure_admin
    from app.store.db import session_scope
    from app.studies.importer import import_pair_set
    from app.studies.config import StudyError, create_study, get_study

    if generate_pairs:
        pairs_dir = generate_demo_pairs(data_dir / "pairs", model_dir, n_prompts, steps)
    elif model_dir is not None:
        raise click.UsageError("--model needs --generate")
    else:
        pairs_dir = SHIPPED_DEMO_PAIRS
    url = migrated(database_url)
    password = secrets.token_urlsafe(12)
    with session_scope(url) as session:
        pair_set = import_pair_set(session, pairs_dir, name="demo", progress=True)
        try:
            slug = get_study(session, "demo").slug
        except StudyError:
            slug = create_study(session, {
                "title": "Which image is better?",
                "slug": "demo",
                "pair_sets": [pair_set.id],
                "pairs_per_participant": min(5, len(pair_set.pairs)),
                "ratings_per_pair": 3,
                "gold_rate": 0.2,
                "repeats": 1,
                "max_upscale": 8,  # the demo's images are small: let them fill the screen, pixels crisp
                "gold_instruction": "Attention check: one of these images is damaged; pick the other one.",
                "state": "open",
            }).slug
        arms_slug = _demo_arms_study(session)
        ensure_admin(session, admin_user, password)
    base = f"http://{host}:{port}"
    click.echo(f"participant link: {base}/s/{slug}")
    click.echo(f"three-arm study:  {base}/s/{arms_slug} (cfg, sfg, pag; every pair of arms; {DEMO_SIMULATED_PARTICIPANTS} "
               f"simulated raters already in, ranking at {base}/admin/studies/{arms_slug}/statistics)")
    click.echo(f"admin link:       {base}/admin")
    click.echo(f"admin login:      {admin_user} / {password}")
    if not no_serve:
        _prepare_environment(url)
        _run_server(host, port, 1)



def _demo_arms_study(session: Any) -> str:
    """The demo's second study: the shipped 3-arm set, every pair of arms compared (issue 26).

    Created once with twelve simulated participants' ratings (`app.assignment.simulated`: seeded,
    crowd id `simulated`), so its statistics page shows a ranking at once; people who open the
    link add their own ratings to theirs."""
    from app.assignment.simulated import simulate_participants
    from app.studies.config import StudyError, create_study, get_study
    from app.studies.importer import import_pair_set

    first = import_pair_set(session, SHIPPED_DEMO_SET, name="demo-arms", progress=False)
    try:
        return get_study(session, "demo-arms").slug
    except StudyError:
        study = create_study(session, {
            "title": "Which image is better? (three methods)", "slug": "demo-arms", "pair_sets": [first.id],
            "comparisons": "all-pairs", "pairs_per_participant": 6, "ratings_per_pair": 6, "gold_rate": 0.2,
            "repeats": 1, "max_upscale": 8,
            "gold_instruction": "Attention check: one of these images is damaged; pick the other one.",
            "state": "open",
        })
        session.commit()
        simulate_participants(session, study, DEMO_SIMULATED_PARTICIPANTS, DEMO_ARM_STRENGTHS, seed=0)
        return study.slug


if __name__ == "__main__":
    main()
