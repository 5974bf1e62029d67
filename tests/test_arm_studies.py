"""Studies over K arms (issue 26.4): importing a sfgeval.set/1 folder, comparisons, balanced
assignment over HTTP, blinding with K arms, export columns and the ranking in the statistics."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from app.store.models import Image, Pair, PairSet
from app.studies.arm_sets import set_info
from app.studies.config import StudyError, create_study, study_config
from app.studies.importer import import_pair_set
from tests.pngs import png_chunk_types

ARMS = ("cfg", "sfg", "pag", "apg")


def write_arm_set(folder: Path, n: int = 4, *, arms=ARMS, size: int = 32, seed: int = 0,
                  strata=("low", "high")) -> Path:
    """A set/1 folder with one image per arm per line; arms' images differ in how compressible they are."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        images = {}
        for k, arm in enumerate(arms):
            ramp = np.linspace(0, 255, size)
            arr = np.stack([*np.meshgrid(ramp, ramp[::-1]), np.full((size, size), 30.0 * k)], -1)
            if k % 2:
                arr = arr + rng.normal(0, 40 * k, arr.shape)
            name = f"{rng.integers(0, 2**63):016x}{rng.integers(0, 2**63):016x}.png"
            PILImage.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / name, format="PNG")
            images[arm] = {"file": name, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                           "method": arm, "params": {"guidance_scale": 7.5}, "nfe": 8 + 4 * k}
        lines.append(json.dumps({
            "schema": "sfgeval.set/1", "pair_key": f"p{i}:{100 + i}", "prompt_id": f"p{i}",
            "prompt": f"a photo of object number {i}", "stratum": strata[i % len(strata)], "seed": 100 + i,
            "baseline": arms[0], "images": images, "params": {"steps": 4, "height": size, "width": size},
            "model": {"name_or_path": "synthetic", "fingerprint": "0" * 16}, "software": {"sfgeval": "test"},
        }))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_import_makes_one_pair_set_per_pair_of_arms_over_shared_images(session, tmp_path):
    folder = write_arm_set(tmp_path / "set", 3)
    first = import_pair_set(session, folder)
    session.commit()
    assert (first.treatment_arm, first.baseline_arm) == ("sfg", "cfg")
    info = set_info(first)
    assert info["arms"] == list(ARMS) and info["reference"] == "cfg"
    assert info["nfe"]["pag"]["nfe"] == 16 and info["methods"]["apg"] == "apg"
    sets = session.scalars(select(PairSet)).all()
    assert len(sets) == 6 and {(p.treatment_arm, p.baseline_arm) for p in sets} >= {("sfg", "cfg"), ("apg", "pag")}
    assert len({p.image_byte_len for p in sets}) == 1
    # 3 lines x (4 arm images + 4 gold twins), shared by the 6 pair sets; all one byte length.
    assert session.scalar(select(func.count(Image.id))) == 3 * 8
    assert session.scalar(select(func.count(func.distinct(Image.byte_len)))) == 1
    assert session.scalar(select(func.count(Pair.id))) == 3 * 6
    # Re-importing adds nothing.
    again = import_pair_set(session, folder)
    assert again.id == first.id and session.scalar(select(func.count(PairSet.id))) == 6


def test_comparisons_pick_pairs_of_arms_and_round_trip(session, tmp_path):
    first = import_pair_set(session, write_arm_set(tmp_path / "set", 2))
    session.commit()
    base = {"title": "Arms", "pair_sets": [first.id], "gold_rate": 0.0, "repeats": 0}
    vs = create_study(session, base)
    assert sorted(c.label.split(": ")[1] for c in vs.comparisons) == ["apg vs cfg", "pag vs cfg", "sfg vs cfg"]
    every = create_study(session, base | {"comparisons": "all-pairs"})
    assert len(every.comparisons) == 6
    cfg = study_config(every)
    assert len(cfg["comparisons"]) == 6 and len(cfg["pair_sets"]) == 6
    again = create_study(session, cfg | {"slug": None, "title": "Again"})
    assert [c.pair_set_id for c in again.comparisons] == [c.pair_set_id for c in every.comparisons]
    # Asked the other way round: a pair set with the roles swapped over the same images.
    rev = create_study(session, base | {"comparisons": [["cfg", "sfg"], ["pag", "apg"]]})
    ps = rev.comparisons[0].pair_set
    assert (ps.treatment_arm, ps.baseline_arm) == ("cfg", "sfg")
    orig = session.scalar(select(PairSet).where(PairSet.treatment_arm == "sfg", PairSet.baseline_arm == "cfg"))
    by_key = {p.pair_key: p for p in orig.pairs}
    for p in ps.pairs:
        o = by_key[p.pair_key]
        assert (p.treatment_image_id, p.baseline_image_id) == (o.baseline_image_id, o.treatment_image_id)
        assert p.gold_image_id == o.gold_image_id and p.gold_degraded_arm != o.gold_degraded_arm
    with pytest.raises(StudyError):
        create_study(session, base | {"comparisons": [["xyz", "cfg"]]})


FORBIDDEN = [r"cfg", r"sfg", r"\bpag\b", r"\bapg\b", r"baseline", r"treatment", r"gold", r"guidance", r"\barms?\b",
             r"manifest", r"sha256", r"params", r"synthetic", r"pair_?set", r"comparison", r"score", r"nfe"]


def run_participants(client, session, study, strength, n_participants=12, seed=0):
    """Simulated participants over the JSON API: each prefers the arm with the larger `strength`
    (logistic in the difference) and passes gold checks. Returns ({url: (bytes, headers)},
    [comparisons seen per participant])."""
    truth = {(p.treatment_image.token, p.baseline_image.token): (ps.treatment_arm, ps.baseline_arm)
             for c in study.comparisons for ps in [c.pair_set] for p in ps.pairs}
    gold = {p.gold_image.token for c in study.comparisons for p in c.pair_set.pairs}
    slug = study.slug
    session.commit()  # end the read transaction: the app's writers need the database
    images, rng, seen_comps = {}, np.random.default_rng(seed), []
    for n in range(n_participants):
        token = client.post(f"/api/studies/{slug}/participants", json={}).json()["participant"]
        comps = set()
        while True:
            r = client.get(f"/api/participants/{token}/next")
            if r.status_code == 409 or r.json().get("done"):
                break
            body = r.json()
            for url in (body["left"], body["right"]):
                img = client.get(url)
                images[url] = (img.content, tuple(sorted(img.headers.items())))
                for pattern in FORBIDDEN:
                    assert not re.search(pattern, url + json.dumps(dict(img.headers)), re.IGNORECASE)
            text = json.dumps(body)
            for pattern in FORBIDDEN:
                assert not re.search(pattern, text, re.IGNORECASE), pattern
            left, right = body["left"].rsplit("/", 1)[1], body["right"].rsplit("/", 1)[1]
            if (left, right) in truth:
                t, b = truth[(left, right)]
                diff, comps = strength[t] - strength[b], comps | {(t, b)}
                choice = 1 if rng.random() < 1 / (1 + np.exp(-diff)) else 5
            elif (right, left) in truth:
                t, b = truth[(right, left)]
                diff, comps = strength[t] - strength[b], comps | {(t, b)}
                choice = 5 if rng.random() < 1 / (1 + np.exp(-diff)) else 1
            else:  # a gold check: pick the intact image
                assert left in gold or right in gold
                choice = 5 if left in gold else 1
            ok = client.post(f"/api/trials/{body['trial']}/answer", headers={"X-Participant": token},
                             json={"choice": choice, "request_id": str(uuid.uuid4())})
            assert ok.status_code == 200
        seen_comps.append(len(comps))
    return images, seen_comps


def test_k_arm_study_over_http_balanced_blind_exported_and_ranked(client, session, tmp_path):
    from app.analysis.ratings import rating_rows
    from app.analysis.study_statistics import study_statistics

    first = import_pair_set(session, write_arm_set(tmp_path / "set", 4))
    session.commit()
    study = create_study(session, {"title": "Four arms", "pair_sets": [first.id], "comparisons": "all-pairs",
                                   "state": "open", "gold_rate": 0.25, "repeats": 0, "min_response_ms": 0,
                                   "pairs_per_participant": 6, "ratings_per_pair": 2,
                                   "exclusion_rules": {"fail_gold": True}})
    session.commit()
    # Preference for later arms (apg > pag > sfg > cfg), read from the images through the trial's truth.
    images, seen_comps = run_participants(client, session, study, {a: i * 0.7 for i, a in enumerate(ARMS)})
    # Blinding: one byte length and identical headers for every image, whatever its arm; pixels only.
    assert len({len(c) for c, _ in images.values()}) == 1
    assert len({h for _, h in images.values()}) == 1
    assert all(png_chunk_types(c) == ["IHDR", "IDAT", "IEND"] for c, _ in images.values())
    # A participant sees a mix of comparisons; every comparison reaches its target.
    assert max(seen_comps) >= 3
    rows = [r for r in rating_rows(session, study) if not r["is_gold"]]
    per_comp = Counter((r["treatment_arm"], r["baseline_arm"]) for r in rows)
    assert len(per_comp) == 6 and min(per_comp.values()) == 4 * 2  # 4 prompts x ratings_per_pair
    assert {"comparison", "treatment_arm", "baseline_arm"} <= set(rows[0])
    stats = study_statistics(session, study, draws=10)
    ranking = stats["ranking"]
    assert {e["arm"] for e in ranking} == set(ARMS)
    assert next(e for e in ranking if e["arm"] == "cfg")["strength"] == 0.0
    for e in ranking:
        assert set(e) >= {"arm", "strength", "ci_low", "ci_high", "rank", "rank_low", "rank_high"}
    comps = stats["results"]["all"]["per_comparison"]
    assert all("p_holm" in g["tests"]["win_rate"] for g in comps.values())
    # The report shows the win matrix, the ranking with intervals and nfe per arm.
    from app.reporting.ranking import arm_nfe
    from app.reporting.report import render_report

    assert arm_nfe(stats)["apg"]["nfe"] == 20
    html = render_report(stats)
    section = html[html.index('id="arm-ranking"'):]
    assert section.count("<svg") >= 2 and "Row arm preferred" in section and "nfe" in section


def test_admin_upload_accepts_a_set_zip(session, tmp_path):
    import io
    import zipfile

    from app.studies.uploads import import_zip

    folder = write_arm_set(tmp_path / "set", 2, arms=("cfg", "sfg", "pag"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"set/{f.name}")
    buf.seek(0)
    first = import_zip(session, buf, "three-arms.zip")
    session.commit()
    assert (first.treatment_arm, first.baseline_arm) == ("sfg", "cfg") and first.name == "three-arms"
    assert session.scalar(select(func.count(PairSet.id))) == 3


def test_a_set_with_different_arms_per_line_is_refused(session, tmp_path):
    from sampler.manifest import ManifestError

    folder = write_arm_set(tmp_path / "set", 2)
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    del rec["images"]["apg"]
    lines[1] = json.dumps(rec)
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match="same arms"):
        import_pair_set(session, folder)
    assert session.scalar(select(func.count(PairSet.id))) == 0
