"""The researcher's pages: pair explorer, participants, figures, report download, life cycle."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image as PILImage

from app.accounts.admins import ensure_admin
from app.cli import SHIPPED_DEMO_PAIRS
from app.studies.importer import import_pair_set
from app.store.models import Image, Participant, Study
from tests.test_admin import PASSWORD, USER, add_answers, csrf_of, login, study_by_slug
from tests.test_api import answer, join, next_

DEMO = "demo-study"


@pytest.fixture
def admin_client(client, session):
    ensure_admin(session, USER, PASSWORD)
    assert login(client).status_code == 303
    return client


class PairInfo(NamedTuple):
    id: int
    prompt: str
    seed: int
    baseline_png: bytes


@pytest.fixture
def demo_study(session, study_factory):
    """A study on the shipped demo pair set (six pairs in three strata, with token maps)."""
    pair_set = import_pair_set(session, SHIPPED_DEMO_PAIRS)
    session.commit()
    return study_factory([pair_set.id], ratings_per_pair=3, slug=DEMO)


def test_pair_explorer_lists_sorts_filters_and_links_each_pair(admin_client, session, demo_study):
    # Pair 0: two treatment wins (+2, +1); pair 1: a loss and a win (disagreement); pair 2: a tie.
    pairs = add_answers(session, demo_study, [
        (0, 0, "main", 5, 900), (1, 0, "main", 1, 900), (0, 1, "main", 1, 900), (1, 1, "main", 5, 900),
        (2, 1, "main", 5, 900), (0, 2, "main", 3, 900)])
    pairs = [PairInfo(p.id, p.prompt, p.seed, session.get(Image, p.baseline_image_id).data) for p in pairs]
    session.rollback()  # SQLite: no open transaction while the app serves requests
    # add_answers puts the treatment on the right for odd positions and on the left for even ones.
    data = admin_client.get(f"/admin/studies/{DEMO}/pairs.json").json()
    assert len(data["pairs"]) == 6 and data["strata"] == ["animals", "objects", "scenes"]
    by_id = {p["pair_id"]: p for p in data["pairs"]}
    first = by_id[pairs[0].id]
    assert first["distribution"] == {"-2": 0, "-1": 0, "0": 0, "1": 0, "2": 2} and first["mean_score"] == 2.0
    second = by_id[pairs[1].id]
    assert second["n_ratings"] == 3 and second["distribution"]["2"] == 1 and second["distribution"]["-2"] == 2
    assert second["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert by_id[pairs[2].id]["mean_score"] == 0 and by_id[pairs[2].id]["agreement"] == 1
    assert all(p["has_token_map"] and p["baseline_arm"] == "cfg" for p in data["pairs"])
    means = [p["mean_score"] for p in data["pairs"] if p["mean_score"] is not None]
    assert means == sorted(means, reverse=True)
    worst = admin_client.get(f"/admin/studies/{DEMO}/pairs.json?sort=-score").json()["pairs"]
    assert worst[0]["pair_id"] == pairs[1].id
    disagreement = admin_client.get(f"/admin/studies/{DEMO}/pairs.json?sort=disagreement").json()
    assert disagreement["pairs"][0]["pair_id"] == pairs[1].id
    only = admin_client.get(f"/admin/studies/{DEMO}/pairs.json?stratum=animals").json()["pairs"]
    assert {p["stratum"] for p in only} == {"animals"} and len(only) == 2
    assert admin_client.get(f"/admin/studies/{DEMO}/pairs.json?sort=nope").status_code == 422
    html = admin_client.get(f"/admin/studies/{DEMO}/pairs?stratum=animals").text
    assert html.count("data-pair=") == 2

    # The permalink: images by arm, the token map with its legend of prompt words.
    page = admin_client.get(f"/admin/studies/{DEMO}/pairs/{pairs[0].id}")
    assert page.status_code == 200 and pairs[0].prompt in page.text and 'id="toggle-overlay"' in page.text
    detail = admin_client.get(f"/admin/studies/{DEMO}/pairs/{pairs[0].id}.json").json()
    assert detail["pair"]["seed"] == pairs[0].seed and detail["pair"]["params"]["shared"]["num_inference_steps"] == 10
    assert detail["legend"] and all(e["word"] in pairs[0].prompt for e in detail["legend"])
    for e in detail["legend"]:
        # The swatch is the overlay's colour at the overlay's own opacity.
        assert f'background: {e["swatch"]}' in page.text and e["swatch"].startswith("rgba(")
    # A word that occurs twice is told apart (by its token position).
    assert len({e["label"] for e in detail["legend"]}) == len(detail["legend"])
    base = admin_client.get(f"/admin/pairs/{pairs[0].id}/baseline.png")
    treat = admin_client.get(f"/admin/pairs/{pairs[0].id}/treatment.png")
    assert base.content == pairs[0].baseline_png
    assert treat.content != base.content
    overlay = PILImage.open(io.BytesIO(admin_client.get(f"/admin/pairs/{pairs[0].id}/map.png").content))
    assert overlay.mode == "RGBA" and overlay.size == PILImage.open(io.BytesIO(treat.content)).size
    painted = {tuple(int(v) for v in px) for px in np.asarray(overlay).reshape(-1, 4) if px[3]}
    swatches = {tuple(int(v) for v in e["swatch"][5:-1].split(", ")[:3]) + (round(float(e["swatch"][5:-1].split(", ")[3]) * 255),)
                for e in detail["legend"]}
    assert painted <= swatches  # every painted patch has a legend entry of exactly its colour
    assert admin_client.get(f"/admin/studies/{DEMO}/pairs/999999").status_code == 404
    # Arms are named here: none of it is reachable without an admin login.
    admin_client.cookies.clear()
    r = admin_client.get(f"/admin/pairs/{pairs[0].id}/baseline.png", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")


def test_participants_page_decisions_and_completion_codes(admin_client, session, study_factory):
    study = study_factory(n_pairs=4, gold_rate=0.5, completion_code="CODE-7", slug="people",
                          exclusion_rules={"fail_gold": True, "straight_lining": False, "max_side_bias": None,
                                           "min_consistency": None, "max_fast_share": None,
                                           "approve_agreement_alpha": None})  # two raters: nothing to agree with
    add_answers(session, study, [
        # Odd positions show the treatment (the intact gold image) on the left.
        (0, 0, "main", 4, 2000), (0, 1, "gold", 1, 2000),        # finished, passes gold
        (1, 0, "main", 2, 2000), (1, 2, "gold", 5, 2000),        # fails the gold pair
        (2, 3, "main", 3, 2000)])                                 # never finishes
    study_id = study.id
    people = sorted(session.query(Participant).filter_by(study_id=study_id), key=lambda p: p.id)
    for p, pid in zip(people, ("P-ok", "P-bad", "P-left")):
        p.external_ids = {"PROLIFIC_PID": pid, "SESSION_ID": f"S-{pid}"}
    people[1].finished_at = people[0].finished_at
    session.add(Participant(study_id=study_id, token="t" * 64, seed=9, external_ids={"PROLIFIC_PID": "P-full"}))
    session.commit()
    session.rollback()

    rows = admin_client.get("/admin/studies/people/participants.json").json()["participants"]
    assert [r["PROLIFIC_PID"] for r in rows] == ["P-ok", "P-bad", "P-left"]  # turned away: not listed
    ok, bad, left = rows
    assert ok["decision"] == "APPROVE" and ok["gold_pass_rate"] == 1 and not ok["excluded"]
    assert bad["decision"] == "REJECT" and bad["excluded"] and "gold" in bad["reason"]
    assert left["decision"] == "" and left["finished_at"] is None and left["completion_code"] is None
    html = admin_client.get("/admin/studies/people/participants").text
    assert "P-bad" in html and html.count('class="excluded"') == 1
    decisions = list(csv.DictReader(io.StringIO(
        admin_client.get("/admin/studies/people/participants/decisions.csv").text)))
    assert [(d["participant_id"], d["submission_id"], d["decision"]) for d in decisions] == [
        ("P-ok", "S-P-ok", "APPROVE"), ("P-bad", "S-P-bad", "REJECT")]
    assert decisions[1]["reason"] and not decisions[0]["reason"]
    codes = list(csv.DictReader(io.StringIO(
        admin_client.get("/admin/studies/people/participants/completion-codes.csv").text)))
    assert [(c["crowd_id"], c["completion_code"]) for c in codes] == [("P-ok", "CODE-7"), ("P-bad", "CODE-7")]

    # The researcher overrides a suggestion; a rejection needs a reason; '' goes back.
    url = f"/admin/studies/people/participants/{ok['participant']}/decision"
    csrf = csrf_of(html)
    assert admin_client.post(url, data={"decision": "REJECT", "reason": "", "csrf_token": csrf}).status_code == 422
    assert admin_client.post(url, data={"decision": "MAYBE", "csrf_token": csrf}).status_code == 422
    assert admin_client.post("/admin/studies/people/participants/999999/decision",
                             data={"decision": "APPROVE", "csrf_token": csrf}).status_code == 422
    r = admin_client.post(url, data={"decision": "REJECT", "reason": "answered at random", "csrf_token": csrf},
                          follow_redirects=False)
    assert r.status_code == 303
    first = admin_client.get("/admin/studies/people/participants.json").json()["participants"][0]
    assert (first["decision"], first["reason"], first["suggested"], first["overridden"]) == (
        "REJECT", "answered at random", "APPROVE", True)
    decisions = admin_client.get("/admin/studies/people/participants/decisions.csv").text
    assert "P-ok,S-P-ok,REJECT,answered at random" in decisions
    admin_client.post(url, data={"decision": "", "csrf_token": csrf})
    assert admin_client.get("/admin/studies/people/participants.json").json()["participants"][0]["decision"] == "APPROVE"


def test_figure_export_png_and_pdf(admin_client, session, demo_study):
    pairs = [p.id for p in add_answers(session, demo_study, [(0, i, "main", 1 + i % 5, 900) for i in range(6)])]
    session.rollback()
    url = f"/admin/studies/{DEMO}/figure"
    assert admin_client.get(url).status_code == 200
    png = admin_client.get(f"{url}.png?pair={pairs[0]}&pair={pairs[1]}&width=5&maps=true")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    img = PILImage.open(io.BytesIO(png.content))
    assert img.width == 1000  # 5 inches at 200 dpi
    assert img.height > img.width * 2 / 3 * 0.9  # two rows of three square panels
    pdf = admin_client.get(f"{url}.pdf?top=1&which=both&width=7")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert admin_client.get(f"{url}.png?pair=999999").status_code == 422
    nothing = admin_client.get(f"{url}.png")  # nothing chosen: the page says so (HTML, not raw JSON)
    assert nothing.status_code == 422 and nothing.headers["content-type"].startswith("text/html")
    assert "Nothing selected" in nothing.text
    assert admin_client.get(f"{url}.png?pair={pairs[0]}&width=100").status_code == 422
    assert admin_client.get(f"{url}.svg?pair={pairs[0]}").status_code == 404


def test_report_zip_holds_a_self_contained_report_with_a_gallery(admin_client, session, demo_study):
    add_answers(session, demo_study, [(p, i, "main", 1 + (i + p) % 5, 900) for p in range(3) for i in range(6)])
    slug = DEMO
    session.rollback()
    r = admin_client.get(f"/admin/studies/{slug}/report.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = {n.removeprefix(f"{slug}-report/") for n in zf.namelist()}
    assert {"ratings.csv", "report.html", "statistics.json", "datasheet.json", "methods.md", "methods.tex",
            "references.bib", "tables/main.tex", "tables/main.csv", "figures/answers.pdf"} <= names
    html = zf.read(f"{slug}-report/report.html").decode()
    assert 'id="gallery"' in html and html.count('src="data:image/png;base64,') >= 6
    assert 'src="http' not in html and "<link" not in html


def test_study_page_links_auto_close_and_rule_fields(admin_client, client, session, study_factory):
    study = study_factory(n_pairs=1, pairs_per_participant=1, ratings_per_pair=1, auto_close=True, slug="ac")
    page = admin_client.get(f"/admin/studies/{study.slug}").text
    assert ('/s/ac?PROLIFIC_PID={{%PROLIFIC_PID%}}&amp;STUDY_ID={{%STUDY_ID%}}&amp;SESSION_ID={{%SESSION_ID%}}'
            in page)
    assert 'data-copy="link-prolific"' in page and 'data-copy="link-mturk"' in page
    assert "/admin/studies/ac/report.zip" in page and "{&#34;" not in page  # rules as a list, not JSON
    edit = admin_client.get(f"/admin/studies/{study.slug}/edit").text
    from app.studies.form import ExclusionRules

    for name in ExclusionRules.model_fields:
        assert f'name="ex_{name}"' in edit
    assert 'name="auto_close" checked' in edit
    # The last rating the study needs closes it.
    token = join(client, study.slug, PROLIFIC_PID="w1")
    trial = next_(client, token).json()["trial"]
    assert answer(client, token, trial, 4).status_code == 200
    assert study_by_slug(admin_client.app, "ac").state == "closed"
    studies = admin_client.get("/admin/studies.json").json()["studies"]
    assert studies[0]["main_ratings"] == 1 and studies[0]["target_ratings"] == 1
    # Turned away afterwards: not counted as started.
    assert client.post("/api/studies/ac/participants", json=None).status_code == 409
    assert admin_client.get("/admin/studies/ac/progress.json").json()["participants_started"] == 1


def test_auto_close_is_off_by_default(client, session, study_factory):
    study = study_factory(n_pairs=1, pairs_per_participant=1, ratings_per_pair=1, slug="stay")
    token = join(client, study.slug)
    assert answer(client, token, next_(client, token).json()["trial"], 2).status_code == 200
    session.expire_all()
    assert session.get(Study, study.id).state == "open"
