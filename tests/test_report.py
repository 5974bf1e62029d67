"""`sfgeval report` and the statistics URLs on a database seeded through the participant API
(SQLite and PostgreSQL via the `db_url` fixture)."""

from __future__ import annotations

import csv
import json
import re
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from app.web.routes import statistics as statistics_routes
from app.accounts.admins import ensure_admin
from app.cli import main
from app.reporting.export import COLUMNS, rating_rows
from app.store.models import Participant, Rating, Trial
from app.reporting.report import study_statistics
from app.statistics import compute_statistics

RULES = {"fail_gold": False, "straight_lining": True, "max_side_bias": 0.9, "side_bias_min_votes": 3,
         "max_fast_share": None, "min_consistency": None}
N_PARTICIPANTS = 6


def read(app, fn):
    """Run fn(session) in a short session (on SQLite a held transaction blocks the app's writes)."""
    with app.state.sessionmaker() as s:
        return fn(s)


def rate(client, slug: str, choose) -> str:
    """One participant joins and answers every trial with `choose()`; returns their token."""
    r = client.post(f"/api/studies/{slug}/participants", json=None)
    assert r.status_code == 201, r.text
    token = r.json()["participant"]
    while True:
        body = client.get(f"/api/participants/{token}/next").json()
        if body.get("done"):
            return token
        r = client.post(f"/api/trials/{body['trial']}/answer", headers={"X-Participant": token},
                        json={"choice": int(choose()), "request_id": str(uuid.uuid4())})
        assert r.status_code == 200, r.text


@pytest.fixture
def seeded(client, app, study_factory):
    """An open study with gold pairs and repeats; the last participant always answers "left"."""
    study = study_factory(n_pairs=6, pairs_per_participant=4, ratings_per_pair=5, gold_rate=0.25, repeats=1,
                          exclusion_rules=RULES, title="Report study")
    rng = np.random.default_rng(0)
    tokens = [rate(client, study.slug, lambda: rng.integers(1, 6)) for _ in range(N_PARTICIPANTS - 1)]
    tokens.append(rate(client, study.slug, lambda: rng.integers(1, 3)))
    biased = read(app, lambda s: s.scalar(select(Participant.id).where(Participant.token == tokens[-1])))
    return study, biased


def counts_by_kind(app, study_id: int) -> dict[str, int]:
    rows = read(app, lambda s: s.execute(
        select(Trial.kind, func.count(Rating.id)).join(Rating, Rating.trial_id == Trial.id)
        .where(Trial.study_id == study_id).group_by(Trial.kind)).all())
    return dict(rows)


def test_cli_report_writes_html_json_and_csv(seeded, app, db_url, tmp_path):
    study, biased = seeded
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", study.slug, "--out", str(out), "--database-url", db_url,
                                       "--draws", "200"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "statistics.json").read_text(encoding="utf-8"))
    kinds = counts_by_kind(app, study.id)
    total = sum(kinds.values())
    assert kinds.get("gold", 0) > 0 and kinds.get("repeat", 0) > 0
    assert stats["design"]["n_ratings_total"] == total
    assert stats["design"]["n_gold"] == kinds["gold"] and stats["design"]["n_repeats"] == kinds["repeat"]
    overall = stats["results"]["all"]["overall"]
    assert overall["n_ratings"] == kinds["main"] == overall["distribution"]["n"]
    assert overall["n_participants"] == N_PARTICIPANTS
    assert stats["bootstrap"] == {**stats["bootstrap"], "draws": 200, "seed": study.seed}
    assert stats["study"]["slug"] == study.slug and stats["study"]["version"] == study.version
    assert stats["study"]["config"]["exclusion_rules"] == RULES
    assert stats["study_versions_in_ratings"] == [study.version]
    # The participant who always answered "left" is removed by the side-bias rule.
    side = [s for s in stats["exclusions"]["steps"] if s["rule"] == "side_bias"][0]
    assert str(biased) in side["participants"]
    assert stats["results"]["after_exclusions"]["overall"]["n_participants"] == stats["exclusions"]["n_after"]

    with (out / "ratings.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        csv_rows = list(reader)
    assert len(csv_rows) == total
    # The CSV alone reproduces the statistics (strings parsed back into the same values).
    again = compute_statistics(csv_rows, exclusion_rules=RULES, min_response_ms=study.min_response_ms or None,
                               draws=200, seed=study.seed)
    assert again["results"] == stats["results"] and again["exclusions"] == stats["exclusions"]

    # One row source: the report and the live page read the export's rows.
    def both(s):
        st = s.get(type(study), study.id)
        return study_statistics(s, st, draws=50), study_statistics(s, st, draws=50, rows=rating_rows(s, st))

    fast, export = read(app, both)
    assert fast["results"] == export["results"] and fast["design"] == export["design"]

    html = (out / "report.html").read_text(encoding="utf-8")
    assert study.slug in html and "Report study" in html
    assert html.count("<svg") == 4  # bars + win rate, with and without exclusions
    # Self-contained: no external scripts, stylesheets, images or fonts (the pair gallery's
    # images are embedded data: URIs).
    assert not re.search(r"<(script|link|img)\b[^>]*(src|href)=(?![\"']data:image/png;base64,)", html)
    without_namespaces = re.sub(r'xmlns(:\w+)?="[^"]*"', "", html)
    assert "http://" not in without_namespaces and "https://" not in without_namespaces

    again = CliRunner().invoke(main, ["report", study.slug, "--out", str(out), "--database-url", db_url,
                                      "--draws", "50", "--seed", "7"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "statistics.json").read_text())["bootstrap"]["seed"] == 7


def test_cli_report_unknown_study_is_a_clear_error(db_url, tmp_path):
    result = CliRunner().invoke(main, ["report", "no-such-study", "--out", str(tmp_path / "r"),
                                       "--database-url", db_url])
    assert result.exit_code != 0 and "no study with slug 'no-such-study'" in result.output
    assert not (tmp_path / "r").exists()


def login(client, session):
    ensure_admin(session, "admin", "pw-for-tests")
    session.commit()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text).group(1)
    r = client.post("/admin/login", data={"username": "admin", "password": "pw-for-tests", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


def test_statistics_url_matches_the_cli_and_caches(seeded, client, app, db_url, tmp_path, monkeypatch, study_factory):
    study, _ = seeded
    url = f"/admin/studies/{study.slug}/statistics"
    assert client.get(url + ".json").status_code == 401  # admins only
    assert client.get(url, follow_redirects=False).status_code == 303
    read(app, lambda s: login(client, s))

    monkeypatch.setattr(statistics_routes, "cache", statistics_routes.StatisticsCache(min_recompute_seconds=0))
    r = client.get(url + ".json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    web = r.json()
    out = tmp_path / "cli"
    assert CliRunner().invoke(main, ["report", study.slug, "--out", str(out), "--database-url", db_url]).exit_code == 0
    cli = json.loads((out / "statistics.json").read_text())
    assert web["results"] == cli["results"] and web["exclusions"] == cli["exclusions"]
    assert web["bootstrap"] == cli["bootstrap"]

    # Cached until a rating arrives.
    cache = statistics_routes.cache
    assert cache.computations == 1
    page = client.get(url)
    assert page.status_code == 200 and page.text.count("<svg") >= 2 and "Live" in page.text
    assert cache.computations == 1
    rate(client, study.slug, lambda: 3)
    web2 = client.get(url + ".json").json()
    assert cache.computations == 2
    assert web2["design"]["n_ratings_total"] > web["design"]["n_ratings_total"]
    assert web2["cache"]["ratings_counted"] == web2["design"]["n_ratings_total"]

    assert client.get("/admin/studies/nope/statistics.json").status_code == 404
    empty = study_factory(title="Nothing yet")
    page = client.get(f"/admin/studies/{empty.slug}/statistics")
    assert page.status_code == 200 and "No preference ratings yet" in page.text
    assert client.get(f"/admin/studies/{empty.slug}/statistics.json").json()["design"]["n_ratings_total"] == 0

    # While ratings stream in, a result younger than the minimum interval is served as it is,
    # saying how many ratings it counted.
    slow = statistics_routes.StatisticsCache(min_recompute_seconds=3600)
    first = read(app, lambda s: slow.get(s, s.get(type(study), study.id)))
    rate(client, study.slug, lambda: 4)
    second = read(app, lambda s: slow.get(s, s.get(type(study), study.id)))
    assert second is first and slow.computations == 1
    assert first.stats["cache"]["ratings_counted"] == first.stats["design"]["n_ratings_total"]


def test_statistics_twin_sends_the_cached_json_as_declared(seeded, client, app, monkeypatch):
    """Both renderings come from one data function (`app.web.pages.twin`): the .json twin is the
    cached statistics.json text, byte for byte, and has the declared shape (StatisticsReport)."""
    from app.web.schemas import StatisticsReport

    study, _ = seeded
    read(app, lambda s: login(client, s))
    monkeypatch.setattr(statistics_routes, "cache", statistics_routes.StatisticsCache())
    r = client.get(f"/admin/studies/{study.slug}/statistics.json")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    entry = read(app, lambda s: statistics_routes.cache.get(s, s.get(type(study), study.id)))
    assert r.text == entry.json_text and statistics_routes.cache.computations == 1
    report = StatisticsReport.model_validate(r.json())
    assert report.schema_ == "sfgeval.statistics/1" and report.study["slug"] == study.slug
    route, = (rt for rt in statistics_routes.router.routes if rt.path == "/admin/studies/{slug}/statistics.json")
    assert route.response_model is StatisticsReport
    page = client.get(f"/admin/studies/{study.slug}/statistics")
    assert page.status_code == 200 and page.text == entry.html
    assert f'/admin/studies/{study.slug}/statistics.json' in page.text

    # Statistics that cannot be computed (a rule stored before it was checked): the same 422 on both.
    def break_rules(s):
        s.get(type(study), study.id).exclusion_rules = {"min_consistncy": 0.5}
        s.commit()

    read(app, break_rules)
    monkeypatch.setattr(statistics_routes, "cache", statistics_routes.StatisticsCache())
    bad = client.get(f"/admin/studies/{study.slug}/statistics.json")
    assert bad.status_code == 422 and bad.json()["detail"].startswith("cannot compute statistics: unknown exclusion rule")
    assert client.get(f"/admin/studies/{study.slug}/statistics").status_code == 422
