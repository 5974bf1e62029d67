"""Issue 25: the verdict's wording rule, the participant flow that the progress page and the report
share, the paper-ready files of the report folder, the datasheet and the top-up."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.reporting.paper import latex_escape
from app.reporting.verdict import holm, verdicts
from app.store.models import Participant, Rating, Trial

RULES = {"fail_gold": False, "straight_lining": True, "max_side_bias": 0.9, "side_bias_min_votes": 3,
         "max_fast_share": None, "min_consistency": None}


# ---------------------------------------------------------------- the wording rule (pure)
def _group(w, lo, hi, se=0.02, df=20, n=100):
    return {"n_participants": 20, "n_prompts": 10, "n_ratings": n, "distribution": {"no_preference": 0.2},
            "win_rate": {"estimate": w, "ci_low": lo, "ci_high": hi, "se": se, "df": df}}


def _stats(groups, margin=0.05, arms=("sfg", "cfg")):
    comparisons = [{"label": k, "treatment_arm": arms[0], "baseline_arm": arms[1]} for k in groups]
    return {"results": {"after_exclusions": {"overall": next(iter(groups.values())), "per_comparison": groups},
                        "all": {"overall": next(iter(groups.values())), "per_comparison": groups}},
            "monitoring": {"settings": {"margin": margin}}, "study": {"comparisons": comparisons}}


def test_verdict_wording_rule():
    cards = verdicts(_stats({"a": _group(0.58, 0.54, 0.62)}))["cards"]
    assert cards[0]["headline"] == "SFG preferred over CFG"
    assert cards[0]["sentence"].startswith("SFG preferred over CFG: 58% of non-tie votes (95% CI 54–62%), Holm p")
    assert "20 participants, 10 prompts, 100 ratings" in cards[0]["sentence"]
    # The baseline wins: shares are shown for the winner.
    c = verdicts(_stats({"a": _group(0.40, 0.35, 0.45)}))["cards"][0]
    assert c["headline"] == "CFG preferred over SFG" and c["sentence"].split(": ")[1].startswith("60% of non-tie")
    # A narrow interval around one half: no difference larger than D.
    c = verdicts(_stats({"a": _group(0.51, 0.47, 0.54, se=0.015)}, margin=0.05))["cards"][0]
    assert c["kind"] == "equivalent" and "No difference larger than 5 points" in c["headline"]
    # Wide interval: no clear preference.
    c = verdicts(_stats({"a": _group(0.55, 0.40, 0.70, se=0.07)}))["cards"][0]
    assert c["kind"] == "unclear" and c["headline"].startswith("No clear preference between SFG and CFG")
    # p_holm from the statistics wins over the computed one, and a Holm p above 0.05 is no preference.
    g = _group(0.56, 0.505, 0.615)
    g["p_holm"] = 0.2
    assert verdicts(_stats({"a": g, "b": _group(0.7, 0.65, 0.75)}))["cards"][0]["kind"] == "unclear"


def test_verdict_uses_the_statistics_shown_test():
    """The cards take the p-value the statistics show (`tests.win_rate.p_holm`: the larger of t(df)'s and
    the wild bootstrap's, Holm-adjusted), not one recomputed from the interval."""
    from app.statistics import compute_statistics
    from app.statistics.simulation import SimulatedStudy, simulate_rows

    rows = simulate_rows(SimulatedStudy(n_participants=12, n_prompts=12, trials_per_participant=10, effect=0.3), seed=5)
    stats = compute_statistics(rows, draws=50)
    test = stats["results"]["after_exclusions"]["per_comparison"]["cfg-vs-sfg"]["tests"]["win_rate"]
    v = verdicts(stats)
    assert f"p = {test['p_holm']:.3f};" in v["cards"][0]["sentence"], (v["cards"][0]["sentence"], test["p_holm"])
    assert v["cards"][0]["p_kind"] == "p_holm from the statistics"


def test_holm():
    assert holm([0.01, 0.04, None, 0.03]) == [0.03, 0.06, None, 0.06]


def test_latex_escape():
    assert latex_escape("50% & a_b #1 {x}") == r"50\% \& a\_b \#1 \{x\}"


# ---------------------------------------------------------------- a finished study
def _answers(session, study, plan, finished=()):
    """plan: [(participant no, pair index, kind, choice)]; participants in `finished` finish."""
    pairs = sorted((p for c in study.comparisons for p in c.pair_set.pairs), key=lambda p: p.id)
    people: dict[int, Participant] = {}
    now = datetime.now(timezone.utc)
    for pos, (who, idx, kind, choice) in enumerate(plan):
        if who not in people:
            people[who] = Participant(study_id=study.id, token=uuid.uuid4().hex, seed=who, external_ids={})
            session.add(people[who])
            session.flush()
        if idx is None:  # signed up, never given a trial
            continue
        side = "left" if pos % 2 else "right"
        trial = Trial(public_id=uuid.uuid4().hex, study_id=study.id, participant_id=people[who].id,
                      pair_id=pairs[idx].id, comparison_id=study.comparisons[0].id, position=pos, kind=kind,
                      treatment_side=side, state="answered", presented_at=now, expires_at=now + timedelta(hours=1))
        session.add(trial)
        session.flush()
        score = (choice - 3) * (1 if side == "right" else -1)
        session.add(Rating(trial_id=trial.id, request_id=uuid.uuid4().hex, study_version=study.version,
                           choice=choice, score=score, treatment_side=side, response_ms=1500, too_fast=False))
    for who in finished:
        people[who].finished_at = now + timedelta(minutes=who + 1)
    session.commit()
    return pairs


def finished_study(session, study_factory, **about):
    """4 pairs x target 4: four raters fill every pair, one of them always answers "left" and is
    excluded; one participant rated practice only, one never got a trial. The study is closed."""
    study = study_factory(n_pairs=4, ratings_per_pair=4, pairs_per_participant=4, exclusion_rules=RULES,
                          slug="finished", title="Finished study", about=about)
    plan = []
    for who, choices in enumerate([(5, 4, 5, 2), (4, 2, 3, 1), (5, 2, 4, 4), (1, 1, 1, 1)]):
        plan += [(who, i, "main", c) for i, c in enumerate(choices)]
    plan += [(4, 0, "practice", 3), (5, None, None, None)]
    _answers(session, study, plan, finished=(0, 1, 2, 3))
    from app.studies.config import set_state

    set_state(session, study, "closed")
    session.commit()
    slug, question = study.slug, study.question
    session.rollback()  # hold no transaction: on SQLite it would block the app's writes
    return slug, question


@pytest.fixture
def admin_client(client, session):
    from tests.test_report import login

    login(client, session)
    return client


def test_flow_progress_and_report_agree(admin_client, session, study_factory, db_url, tmp_path):
    slug, question = finished_study(session, study_factory, platform="Prolific", pay="GBP 2.00")
    progress = admin_client.get(f"/admin/studies/{slug}/progress.json").json()
    flow = progress["flow"]
    assert (flow["signed_up"], flow["started"], flow["practice_only"], flow["rated"]) == (6, 5, 1, 4)
    assert (flow["completed"], flow["excluded"], flow["kept"], flow["analysed"]) == (4, 1, 3, 3)
    assert progress["participants_started"] == flow["started"]
    # Every pair has its 4 ratings, but only 3 are analysable: the page says so and offers a top-up.
    assert progress["pairs_complete"] == 4 and progress["pairs_complete_analysable"] == 0
    assert progress["analysable_ratings"] == 12 and progress["shortfall"] == 4
    assert progress["top_up"] == {"ratings_per_pair": 5, "largest_gap": 1, "pairs_short": 4}
    html = admin_client.get(f"/admin/studies/{slug}/progress").text
    assert 'id="shortfall"' in html and "12 of 16" in html and 'action="/admin/studies/finished/top-up"' in html

    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", slug, "--out", str(out), "--database-url", db_url,
                                       "--draws", "50"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "statistics.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in stats["flow"].items() if k != "per_pair"} == flow
    assert stats["results"]["after_exclusions"]["overall"]["n_participants"] == flow["analysed"]
    assert stats["exclusions"]["n_after"] == flow["kept"]
    # Monitoring never promises more ratings on a study with no work left.
    for m in stats["monitoring"]["comparisons"].values():
        assert not m["recommendation"].startswith("continue") and m["work_left"] is False
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.index('id="verdict"') < html.index('id="results"')
    assert "SFG" in html[html.index('id="verdict"'):html.index('id="flow"')]
    check_paper_folder(out, flow)

    # The datasheet: given fields from the config, the rest listed as missing, never invented.
    sheet = json.loads((out / "datasheet.json").read_text(encoding="utf-8"))
    assert sheet["fields"]["platform"]["value"] == "Prolific" and sheet["fields"]["pay"]["value"] == "GBP 2.00"
    assert {"eligibility", "purpose_statement", "ethics_approval"} <= set(sheet["missing"])
    assert "platform" not in sheet["missing"]
    assert sheet["fields"]["consent_text"]["source"] == "product"
    assert sheet["fields"]["question"]["value"] == question
    assert 'id="datasheet"' in html


def check_paper_folder(out: Path, flow: dict) -> None:
    """The paper-ready files: methods (md, tex) with references, booktabs tables that compile (or
    are well formed when no TeX engine is installed), CSV twins, figures as PDF and PNG."""
    methods = (out / "methods.md").read_text(encoding="utf-8")
    assert "SFG" in methods and "CFG" in methods and f"leaving {flow['analysed']} participants" in methods
    assert "@cameron2011robust" in methods and "wild cluster bootstrap" in methods and "@mackinnon2017wild" in methods
    assert "min(participants - 1" not in methods  # the method before issue 23
    bib = (out / "references.bib").read_text(encoding="utf-8")
    tex = (out / "methods.tex").read_text(encoding="utf-8")
    for key in re.findall(r"\\cite\{([^}]+)\}", tex):
        for k in key.split(","):
            assert f"{{{k}," in bib, k
    tables = sorted((out / "tables").glob("*.tex"))
    assert {t.stem for t in tables} >= {"main", "strata", "flow"}
    for t in tables:
        text = t.read_text(encoding="utf-8")
        assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text
        spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", text).group(1)
        body = text.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
        for line in [text.split("\\toprule\n")[1].split("\n")[0], *body]:
            assert line.endswith(r"\\") and line.count(" & ") == len(spec) - 1, line
            assert not re.search(r"(?<!\\)[%&_#]", line.replace(" & ", " ")), line
        with (out / "tables" / f"{t.stem}.csv").open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        assert len(rows) == len(body) + 1 and all(len(r) == len(spec) for r in rows)
    flow_csv = list(csv.reader(io.StringIO((out / "tables" / "flow.csv").read_text(encoding="utf-8"))))
    assert ["Analysed", str(flow["analysed"])] == flow_csv[-1][:2]
    compile_latex(out, tables)
    for name in ("answers", "win_rate", "flow"):
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def compile_latex(out: Path, tables: list[Path]) -> None:
    """Compile the tables and the methods paragraph when a TeX engine is on PATH."""
    engine = next((e for e in ("pdflatex", "lualatex", "tectonic") if shutil.which(e)), None)
    if engine is None:
        return
    doc = out / "check.tex"
    doc.write_text("\\documentclass{article}\\usepackage[utf8]{inputenc}\\usepackage{booktabs}\\begin{document}\n"
                   + "\n".join(f"\\input{{tables/{t.name}}}" for t in tables)
                   + "\n\\input{methods.tex}\n\\end{document}\n", encoding="utf-8")
    cmd = [engine, doc.name] if engine == "tectonic" else [engine, "-interaction=nonstopmode", "-halt-on-error",
                                                            doc.name]
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]


def test_report_zip_holds_the_paper_files(admin_client, session, study_factory):
    slug, _ = finished_study(session, study_factory)
    r = admin_client.get(f"/admin/studies/{slug}/report.zip")
    assert r.status_code == 200
    names = set(zipfile.ZipFile(io.BytesIO(r.content)).namelist())
    for name in ("report.html", "statistics.json", "datasheet.json", "methods.md", "methods.tex", "references.bib",
                 "tables/main.tex", "tables/main.csv", "tables/flow.csv", "figures/flow.pdf", "figures/answers.png"):
        assert f"finished-report/{name}" in names, name


def test_top_up_reopens_for_the_missing_analysable_ratings(admin_client, session, study_factory):
    slug, _ = finished_study(session, study_factory)
    page = admin_client.get(f"/admin/studies/{slug}/progress").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = admin_client.post(f"/admin/studies/{slug}/top-up", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    progress = admin_client.get(f"/admin/studies/{slug}/progress.json").json()
    assert progress["state"] == "open" and progress["ratings_per_pair"] == 5
    assert progress["pairs_complete"] == 0


def test_new_study_form_keeps_every_field_after_an_error(admin_client, session, study_factory):
    """A validation error (here: no pair set and a malformed rule) shows the form again with
    everything as typed, the datasheet details included."""
    page = admin_client.get("/admin/new-study").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    data = {"csrf_token": token, "title": "Kept title", "slug": "kept-slug", "instructions": "Look closely.",
            "question": "Which is nicer?", **{f"scale_label_{i}": f"L{i}" for i in range(1, 6)},
            "pairs_per_participant": "7", "ratings_per_pair": "9", "practice_trials": "2", "gold_rate": "0.2",
            "repeats": "2", "min_response_ms": "700", "hold_minutes": "12", "seed": "42",
            "ex_max_side_bias": "0.3", "completion_code": "CODE-9", "redirect_url": "https://example.org/done",
            "about_platform": "Prolific", "about_pay": "GBP 3", "about_purpose_statement": "Rate images."}
    r = admin_client.post("/admin/new-study", data=data)
    assert r.status_code == 422
    html = r.text
    for value in ("Kept title", "kept-slug", "Look closely.", "Which is nicer?", "L3", 'value="7"', 'value="9"',
                  'value="0.2"', 'value="700"', 'value="12"', 'value="42"', 'value="0.3"', "CODE-9",
                  "https://example.org/done", "Prolific", "GBP 3", "Rate images."):
        assert value in html, value


def test_token_map_legend_tells_repeated_words_apart():
    from app.reporting.explorer import legend_entries

    legend = legend_entries({"legend": [{"index": 1, "word": "a", "colour": "#ff0000"},
                                        {"index": 4, "word": "dog", "colour": "#00ff00"},
                                        {"index": 6, "word": "a", "colour": "#0000ff"}]})
    assert [e["label"] for e in legend] == ["a (token 1)", "dog", "a (token 6)"]
    assert legend[0]["swatch"] == "rgba(255, 0, 0, 0.588)"


def test_plan_from_a_pilot_applies_and_names_its_exclusions(session, study_factory):
    from app.analysis.planning import pilot_exclusions_line, pilot_rows

    slug, _ = finished_study(session, study_factory)
    rows = pilot_rows(session, slug)
    assert {str(r["participant"]) for r in rows}.__len__() == 3  # the always-"left" rater is left out
    assert rows.exclusions["participants_before"] == 4 and rows.exclusions["participants_after"] == 3
    line = pilot_exclusions_line(rows.exclusions)
    assert "exclusion rules applied" in line and "1 removed" in line and "3 of 4 participants used" in line
