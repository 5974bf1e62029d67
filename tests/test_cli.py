"""The `sfgeval` commands of the app: import, study create/export/open/close, export, serve, demo."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from app import cli


@pytest.fixture
def runner():
    return CliRunner()


def _invoke(runner, *args):
    result = runner.invoke(cli.main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_import_prints_the_pair_set_id_and_is_idempotent(runner, tmp_path, make_pair_set, db_url):
    folder = make_pair_set(tmp_path / "ps", 3)
    r1 = _invoke(runner, "import", folder, "--database-url", db_url)
    assert r1.exit_code == 0, r1.output
    assert r1.stdout.strip() == "1"
    r2 = _invoke(runner, "import", folder, "--database-url", db_url)
    assert r2.stdout.strip() == "1"


def test_import_of_a_broken_manifest_fails_with_the_line(runner, tmp_path, make_pair_set, sqlite_url):
    folder = make_pair_set(tmp_path / "ps", 3)
    path = folder / "manifest.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = "{oops"
    path.write_text("\n".join(lines) + "\n")
    r = _invoke(runner, "import", folder, "--database-url", sqlite_url)
    assert r.exit_code == 1
    assert "nothing imported" in r.output and "manifest.jsonl:2" in r.output


def test_study_create_export_roundtrip_and_state(runner, tmp_path, make_pair_set, db_url):
    folder = make_pair_set(tmp_path / "ps", 4)
    ps_id = _invoke(runner, "import", folder, "--database-url", db_url).stdout.strip()
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "title": "Guidance study", "slug": "guid", "pair_sets": [int(ps_id)],
        "pairs_per_participant": 3, "ratings_per_pair": 4, "gold_rate": 0.25, "repeats": 1,
        "min_response_ms": 700, "completion_code": "C0DE", "state": "draft",
    }))
    r = _invoke(runner, "study", "create", config, "--database-url", db_url, "--base-url", "https://x.org/")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["guid", "https://x.org/s/guid"]
    exported = yaml.safe_load(_invoke(runner, "study", "export", "guid", "--database-url", db_url).stdout)
    assert exported["title"] == "Guidance study" and exported["pair_sets"] == [int(ps_id)]
    assert exported["gold_rate"] == 0.25 and exported["completion_code"] == "C0DE"
    # The export is a valid config: create a copy from it (JSON this time) under another slug.
    exported["slug"] = "guid-copy"
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(exported))
    r = _invoke(runner, "study", "create", copy, "--database-url", db_url)
    assert r.stdout.splitlines()[0] == "guid-copy"
    as_json = json.loads(_invoke(runner, "study", "export", "guid-copy", "--format", "json", "--database-url", db_url).stdout)
    assert {k: v for k, v in as_json.items() if k != "slug"} == {k: v for k, v in exported.items() if k != "slug"}
    r = _invoke(runner, "study", "open", "guid", "--database-url", db_url)
    assert r.exit_code == 0 and "open (version 2)" in r.stdout
    assert "closed" in _invoke(runner, "study", "close", "guid", "--database-url", db_url).stdout


def test_study_create_rejects_bad_configs(runner, tmp_path, sqlite_url):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\npair_sets: [99]\n")
    r = _invoke(runner, "study", "create", bad, "--database-url", sqlite_url)
    assert r.exit_code == 1 and "unknown pair set id(s) [99]" in r.output
    bad.write_text("title: x\npair_sets: [1]\nratings_per_pair: 0\n")
    r = _invoke(runner, "study", "create", bad, "--database-url", sqlite_url)
    assert r.exit_code == 1 and "ratings_per_pair" in r.output
    bad.write_text("title: x\npairsets: [1]\n")
    r = _invoke(runner, "study", "create", bad, "--database-url", sqlite_url)
    assert r.exit_code == 1 and "pair" in r.output
    bad.write_text("title: x\npair_sets: [1]\nexclusion_rules: {max_side_bais: 0.9}\n")
    r = _invoke(runner, "study", "create", bad, "--database-url", sqlite_url)
    assert r.exit_code == 1 and "unknown exclusion rule(s): max_side_bais" in r.output
    bad.write_text("title: x\npair_sets: [1]\nexclusion_rules: {max_fast_share: 2}\n")
    r = _invoke(runner, "study", "create", bad, "--database-url", sqlite_url)
    assert r.exit_code == 1 and "max_fast_share must be a number between 0 and 1" in r.output
    bad.write_text(": : :\n- [")
    r = _invoke(runner, "study", "create", bad, "--database-url", sqlite_url)
    assert r.exit_code == 1 and "not valid YAML" in r.output
    r = _invoke(runner, "study", "export", "nope", "--database-url", sqlite_url)
    assert r.exit_code == 1 and "no study with slug 'nope'" in r.output


def test_export_command_writes_csv_and_json(runner, tmp_path, client, settings, study_factory):
    import uuid

    study = study_factory(n_pairs=2, pairs_per_participant=2)
    token = client.post(f"/api/studies/{study.slug}/participants").json()["participant"]
    for _ in range(2):
        t = client.get(f"/api/participants/{token}/next").json()
        client.post(f"/api/trials/{t['trial']}/answer", json={"choice": 4, "request_id": str(uuid.uuid4())},
                    headers={"X-Participant": token})
    url = settings.database_url
    out = _invoke(runner, "export", study.slug, "--format", "csv", "--database-url", url)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 2 and {r["choice"] for r in rows} == {"4"}
    target = tmp_path / "out" / "ratings.json"
    r = _invoke(runner, "export", study.slug, "--format", "json", "--out", target, "--database-url", url)
    assert r.exit_code == 0 and "2 ratings written" in r.output
    data = json.loads(target.read_text())
    assert [d["score"] for d in data] == [int(r["score"]) for r in rows]


def test_serve_migrates_and_passes_settings_to_uvicorn(runner, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "_run_server", lambda host, port, workers: calls.append((host, port, workers)))
    monkeypatch.delenv("SFGEVAL_SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///unused.sqlite3")
    url = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    r = _invoke(runner, "serve", "--database-url", url, "--port", "8123", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert calls == [("127.0.0.1", 8123, 2)]
    assert os.environ["DATABASE_URL"] == url and len(os.environ["SFGEVAL_SECRET_KEY"]) > 30
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    assert {"studies", "ratings", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_demo_sets_up_a_study_and_admin_without_serving(runner, tmp_path, monkeypatch, make_pair_set):
    from app.accounts.admins import authenticate
    from app.store.db import session_scope

    made = []

    def fake_generator(out_dir, model_dir, n_prompts, steps):
        made.append((out_dir, model_dir, n_prompts, steps))
        return make_pair_set(out_dir, n_prompts)

    monkeypatch.setattr(cli, "generate_demo_pairs", fake_generator)
    monkeypatch.setattr(cli, "_run_server", lambda *a: pytest.fail("--no-serve must not serve"))
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    args = ["demo", "--generate", "--no-serve", "--data-dir", tmp_path / "demo", "--database-url", url, "--port", "8765"]
    r = _invoke(runner, *args)
    assert r.exit_code == 0, r.output
    assert made == [(tmp_path / "demo" / "pairs", None, 6, 10)]
    assert "participant link: http://127.0.0.1:8765/s/demo" in r.stdout
    assert "admin link:       http://127.0.0.1:8765/admin" in r.stdout
    user, password = r.stdout.split("admin login:")[1].strip().split(" / ")
    with session_scope(url) as session:
        assert authenticate(session, user, password) is not None
    # Running it again reuses the pair set and study and prints a fresh password.
    r2 = _invoke(runner, *args)
    assert r2.exit_code == 0 and "/s/demo" in r2.stdout


def test_demo_with_the_real_tiny_model(runner, tmp_path, monkeypatch):
    """End to end through the sampler's generator (needs the sampler branch's generate/tiny)."""
    pytest.importorskip("sampler.generate", reason="the sampler's generator is merged from another branch")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_run_server", lambda *a: None)
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    r = _invoke(runner, "demo", "--generate", "--no-serve", "--prompts", "2", "--steps", "2", "--database-url", url)
    assert r.exit_code == 0, r.output
    assert "/s/demo" in r.stdout


def test_demo_serves_the_shipped_pair_set_without_torch(tmp_path):
    """`sfgeval demo` (no --generate) needs no torch: `import torch` fails in this run."""
    import subprocess
    import sys

    from app.store.db import session_scope
    from app.store.models import Pair, PairSet, Study

    blocker = tmp_path / "blocked" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{root}"}
    r = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--no-serve", "--database-url", url],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "participant link: http://127.0.0.1:8000/s/demo" in r.stdout
    with session_scope(url) as session:
        pair_set = session.query(PairSet).filter_by(name="demo").one()
        pairs = session.query(Pair).filter_by(pair_set_id=pair_set.id).all()
        study = session.query(Study).filter_by(slug="demo").one()
        # The shipped three-arm set (cfg, sfg, pag) makes a second study comparing every pair of arms.
        arms = session.query(Study).filter_by(slug="demo-arms").one()
        assert sorted((c.pair_set.treatment_arm, c.pair_set.baseline_arm) for c in arms.comparisons) == [
            ("pag", "cfg"), ("pag", "sfg"), ("sfg", "cfg")]
        assert "/s/demo-arms" in r.stdout
        # Simulated raters are already in, so the ranking shows at once (cfg, sfg, pag).
        from app.analysis.study_statistics import study_statistics

        ranking = study_statistics(session, arms, draws=20)["ranking"]
        assert {e["arm"] for e in ranking} == {"cfg", "sfg", "pag"} and ranking[-1]["rank"] == 3
        assert "simulated raters already in" in r.stdout
        assert len(pairs) == 6 and {p.stratum for p in pairs} == {"objects", "scenes", "animals"}
        # Every pair keeps its SFG token map (researcher-only), with a legend of prompt words.
        for p in pairs:
            words = {e["word"] for e in p.token_map["legend"]}
            assert words and all(w in p.prompt for w in words), (p.prompt, words)  # (sub)words
        # One minimum response time: the study's and the too-fast exclusion rule's agree.
        assert study.min_response_ms == study.exclusion_rules["min_response_ms"]
