"""`sfgeval analyze` (offline analysis, no database): the same statistics as `sfgeval report` from the
study's export, several exports pooled, bad files refused with a message (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from app.cli import main
from tests.test_report import RULES, seeded  # noqa: F401 (the seeded study fixture)

DRAWS = "100"


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_analyze_of_an_export_gives_the_reports_statistics(seeded, db_url, tmp_path, monkeypatch):  # noqa: F811
    study, _ = seeded
    export = tmp_path / "ratings.csv"
    r = _run("export", study.slug, "--format", "csv", "--out", export, "--database-url", db_url)
    assert r.exit_code == 0, r.output
    r = _run("report", study.slug, "--out", tmp_path / "report", "--draws", DRAWS, "--seed", "7",
             "--database-url", db_url)
    assert r.exit_code == 0, r.output
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"exclusion_rules": RULES}))

    # No database at all: a URL that cannot be opened, and the engine factory made to fail.
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    import app.store.db as db

    def no_db(*a, **k):
        raise AssertionError("analyze opened a database")

    import app.cli as cli_module

    for module, name in ((db, "session_scope"), (db, "make_engine"), (db, "create_engine"),
                         (cli_module, "migrated")):
        monkeypatch.setattr(module, name, no_db)
    out = tmp_path / "offline"
    r = _run("analyze", export, "--rules", tmp_path / "rules.yaml", "--out", out, "--draws", DRAWS, "--seed", "7")
    assert r.exit_code == 0, r.output
    for name in ("report.html", "statistics.json", "ratings.csv"):
        assert (out / name).is_file()
    offline = json.loads((out / "statistics.json").read_text(encoding="utf-8"))
    report = json.loads((tmp_path / "report" / "statistics.json").read_text(encoding="utf-8"))
    for key in ("results", "design", "exclusions", "interval", "tests"):
        assert json.dumps(offline[key], sort_keys=True) == json.dumps(report[key], sort_keys=True), key
    assert offline["exclusions"]["excluded"]  # the always-"left" participant, as in the report
    assert "monitoring" not in offline and offline["source"]["files"] == [str(export)]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "statistics computed from a ratings file" in html and "offline analysis of 1 export file(s)" in html
    assert offline["study_versions_in_ratings"] == report["study_versions_in_ratings"]


def test_analyze_pools_several_exports(seeded, db_url, tmp_path):  # noqa: F811
    study, _ = seeded
    a, b = tmp_path / "a.csv", tmp_path / "b.json"
    assert _run("export", study.slug, "--out", a, "--database-url", db_url).exit_code == 0
    assert _run("export", study.slug, "--format", "json", "--out", b, "--database-url", db_url).exit_code == 0
    data = json.loads(b.read_text())
    for row in data:  # a second study with the same ids: kept apart when pooled
        row["study"] = "other-study"
    b.write_text(json.dumps(data))
    r = _run("analyze", a, b, "--out", tmp_path / "out", "--draws", "20")
    assert r.exit_code == 0, r.output
    stats = json.loads((tmp_path / "out" / "statistics.json").read_text())
    single = _run("analyze", a, "--out", tmp_path / "one", "--draws", "20")
    assert single.exit_code == 0, single.output
    one = json.loads((tmp_path / "one" / "statistics.json").read_text())
    assert stats["design"]["n_ratings_total"] == 2 * one["design"]["n_ratings_total"]
    assert (stats["results"]["all"]["overall"]["n_participants"]
            == 2 * one["results"]["all"]["overall"]["n_participants"])
    assert stats["source"]["studies"] == sorted([study.slug, "other-study"])
    assert "2 file(s)" in r.output


def test_analyze_refuses_bad_files_without_a_traceback(tmp_path):
    cases = {
        "columns.csv": ("participant,score\n1,2\n", "missing column"),
        "empty.csv": ("", "empty file"),
        "binary.csv": (b"\xff\xfe\x00\x81", "not a UTF-8"),
        "broken.json": ("[{\"participant\": ", "not valid JSON"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        r = _run("analyze", path, "--out", tmp_path / "out")
        assert r.exit_code not in (0, None) and r.exit_code == 1, (name, r.output)
        assert message in r.output and name in r.output, (name, r.output)
        assert "Traceback" not in r.output and not isinstance(r.exception, (AssertionError, TypeError, KeyError))
    r = _run("analyze", tmp_path / "missing.csv", "--out", tmp_path / "out")
    assert r.exit_code == 1 and "no such file" in r.output
    (tmp_path / "rules.yaml").write_text("no_such_rule: 1\n")
    r = _run("analyze", tmp_path / "columns.csv", "--rules", tmp_path / "rules.yaml", "--out", tmp_path / "out")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert _run("analyze").exit_code == 2  # no file: usage error
