"""Blinding: nothing a participant can receive reveals the method, arm, config or QC role.

Walks the whole participant flow (pages, static files, JSON API, images, answers, end pages) and
checks every URL, header and body it could see.
"""

from __future__ import annotations

import json
import re
import uuid

from sqlalchemy import select

from app.store.models import Pair, PairSet
from tests.pngs import png_chunk_types

FORBIDDEN = [
    r"cfg", r"sfg", r"classifier", r"segmentation", r"baseline", r"treatment", r"gold", r"degrad",
    r"guidance", r"\barms?\b", r"manifest", r"repeat", r"sha256", r"params", r"_scale", r"synthetic",
    r"pair_?set", r"comparison", r"score", r"\bkind\b", r"seed", r"stratum",
]


def test_nothing_a_participant_receives_reveals_the_arm(client, session, study_factory, tmp_path, make_pair_set):
    from app.studies.importer import import_pair_set

    folder = make_pair_set(tmp_path / "blind", 6, strata=("low", "high"))
    ps = import_pair_set(session, folder, name="cfg-vs-sfg-a10")
    session.commit()
    study = study_factory([ps.id], pairs_per_participant=4, gold_rate=0.5, repeats=1, practice_trials=1,
                          title="Image study", instructions="Compare the two images.",
                          completion_code="THANKS1", ratings_per_pair=1,
                          gold_instruction="Attention: choose the sharper image.")
    manifest = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
    secrets = {r["baseline"]["file"][:-4] for r in manifest} | {r["treatment"]["file"][:-4] for r in manifest}
    secrets |= {r["baseline"]["sha256"] for r in manifest} | {r["treatment"]["sha256"] for r in manifest}
    secrets |= {r["pair_key"] for r in manifest} | {ps.manifest_sha256, "cfg-vs-sfg-a10"}
    seen: list[tuple[str, dict, bytes]] = []

    def get(url, **kw):
        r = client.get(url, **kw)
        seen.append((str(r.url), dict(r.headers), r.content))
        return r

    def post(url, **kw):
        r = client.post(url, **kw)
        seen.append((str(r.url), dict(r.headers), r.content))
        return r

    get("/")
    get("/favicon.ico")
    get(f"/s/{study.slug}?PROLIFIC_PID=p1&STUDY_ID=s1&SESSION_ID=x1")
    post(f"/s/{study.slug}/start", data={"PROLIFIC_PID": "p1"})  # no consent: the form again
    run = post(f"/s/{study.slug}/start", data={"PROLIFIC_PID": "p1", "STUDY_ID": "s1", "SESSION_ID": "x1",
                                              "consent": "yes"})
    token = run.text.split('data-token="')[1].split('"')[0]
    for static in ("participant.js", "viewer.js", "style.css", "favicon.svg"):
        get(f"/static/{static}")
    payload_keys, answer_keys, images = set(), set(), {}
    while True:
        body = get(f"/api/participants/{token}/next").json()
        if body.get("done"):
            break
        payload_keys.add(tuple(sorted(body)))
        for url in (body["left"], body["right"], *(body["preload"] or {}).values()):
            r = get(url)
            images[url] = (r.content, tuple(sorted(r.headers.items())))
        compared = {"used_zoom": True, "used_flicker": True, "max_zoom": 2.5, "compare_view_ms": 900,
                    "flicker_ms": 700, "unlock_ms": 300}
        answered = post(f"/api/trials/{body['trial']}/answer", headers={"X-Participant": token},
                        json={"choice": 2, "request_id": str(uuid.uuid4()), "compared": compared})
        answer_keys.add(tuple(sorted(answered.json())))
    get(f"/s/{study.slug}/done")
    # A second participant finds no work left (ratings_per_pair=1), via the API and the page.
    other = post(f"/api/studies/{study.slug}/participants", json={"external_ids": {"workerId": "w2"}}).json()["participant"]
    get(f"/api/participants/{other}/next")
    get(f"/s/{study.slug}/full")

    # Every trial payload and answer response has the same keys, whatever the trial's role (main,
    # gold, repeat...); the gold check's instruction key is there (empty) on every trial.
    assert len(payload_keys) == 1 and "instruction" in next(iter(payload_keys))
    assert len(answer_keys) == 1
    # Text, URLs and headers: no method names, arms, QC roles, parameters or source file names.
    for url, headers, content in seen:
        text = "\n".join([url, json.dumps(headers), content.decode("utf-8", "replace")])
        if headers.get("content-type", "").startswith("image/"):
            text = "\n".join([url, json.dumps(headers)])
        for pattern in FORBIDDEN:
            assert not re.search(pattern, text, re.IGNORECASE), f"{pattern!r} in {url}"
        for secret in secrets:
            assert secret not in text, f"source name/hash {secret[:12]} leaked in {url}"
    # Image bytes: one size, identical headers, nothing but pixels in the file.
    pairs = session.scalars(select(Pair).where(Pair.pair_set_id == ps.id)).all()
    gold_tokens = {p.gold_image.token for p in pairs}
    served = {u.rsplit("/", 1)[1] for u in images}
    assert served & gold_tokens, "the walk should include a gold check"
    assert len({len(c) for c, _ in images.values()}) == 1
    assert len({h for _, h in images.values()}) == 1
    for content, headers in images.values():
        assert png_chunk_types(content) == ["IHDR", "IDAT", "IEND"]
        lowered = content.lower()
        for word in (b"cfg", b"sfg", b"gold", b"baseline", b"treatment"):
            assert word not in lowered
        header_names = {k.lower() for k, _ in headers}
        assert not header_names & {"etag", "last-modified", "content-disposition"}
    assert session.get(PairSet, ps.id).image_byte_len == len(next(iter(images.values()))[0])
