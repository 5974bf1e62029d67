"""Issue 15 (app side) and the declared coupling between `app` and `sampler`."""

from __future__ import annotations

import ast
from pathlib import Path

from click.testing import CliRunner

from app.reporting.report import render_report
from app.statistics.simulation import SimulatedStudy, simulate_rows
from app.statistics import compute_statistics

ROOT = Path(__file__).resolve().parents[1]


def test_report_says_when_the_rules_excluded_everyone():
    rows = simulate_rows(SimulatedStudy(n_participants=10, n_prompts=8, trials_per_participant=8), seed=1)
    n = len({r["participant"] for r in rows})
    # Every answer is "too fast" against an absurd threshold: the rule removes all participants.
    stats = compute_statistics(rows, exclusion_rules={"max_fast_share": 0.0, "min_response_ms": 10**9}, draws=20)
    assert stats["results"]["after_exclusions"]["overall"] in (None, {}) and stats["results"]["all"]["overall"]
    html = render_report(stats)
    assert "No preference ratings yet." not in html
    assert f"All {n} participants were excluded" in html and "too_fast: 10" in html
    assert f"({stats['results']['all']['overall']['n_ratings']} preference ratings)" in html
    assert 'id="headline"' in html and "Without exclusions (all participants; every one was excluded" in html
    assert "server's <code>response_ms</code>" in html

    # With no ratings at all the page still says so.
    empty = render_report(compute_statistics([], draws=5))
    assert "No preference ratings yet." in empty and "were excluded" not in empty


def test_study_create_link_comes_from_the_base_url(tmp_path, monkeypatch, make_pair_set):
    import yaml

    from app import cli
    from app.settings import get_settings

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    folder = make_pair_set(tmp_path / "ps", 2)
    runner = CliRunner()
    ps = runner.invoke(cli.main, ["import", str(folder), "--database-url", url]).stdout.strip()
    for slug in ("one", "two"):
        (tmp_path / f"{slug}.yaml").write_text(yaml.safe_dump({"title": "t", "slug": slug, "pair_sets": [int(ps)]}))
    monkeypatch.delenv("SFGEVAL_BASE_URL", raising=False)
    get_settings.cache_clear()
    r = runner.invoke(cli.main, ["study", "create", str(tmp_path / "one.yaml"), "--database-url", url])
    assert r.stdout.splitlines() == ["one", "http://127.0.0.1:8000/s/one"]
    assert "SFGEVAL_BASE_URL is not set" in r.stderr
    monkeypatch.setenv("SFGEVAL_BASE_URL", "https://study.example.org:8443/")
    get_settings.cache_clear()
    try:
        r = runner.invoke(cli.main, ["study", "create", str(tmp_path / "two.yaml"), "--database-url", url])
    finally:
        get_settings.cache_clear()
    assert r.stdout.splitlines() == ["two", "https://study.example.org:8443/s/two"] and "not set" not in r.stderr


def _sampler_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sampler":
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "sampler"}
    return out


def test_app_meets_sampler_only_through_the_manifest_and_the_cli():
    for path in (ROOT / "app").rglob("*.py"):
        used = _sampler_imports(path)
        if path.name == "__init__.py" and path.parent.name == "cli" and path.parent.parent.name == "app":
            assert used and used <= {"sampler.cli", "sampler.generate", "sampler.prompts", "sampler.tiny", "sampler.manifest"}, used
        else:
            assert used <= {"sampler.manifest"}, f"{path.relative_to(ROOT)} imports {used}"
    for path in (ROOT / "sampler").rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) and "app" in (
            [(n.module or "").split(".")[0]] if isinstance(n, ast.ImportFrom) else [a.name.split(".")[0] for a in n.names]
        ) for n in ast.walk(tree)), f"{path.name} imports app"
    main_py = (ROOT / "app" / "main.py").read_text()
    assert "importlib" not in main_py
