"""Importing generator manifests: validation with line numbers, all or nothing, idempotent, blinded."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from app.studies.importer import import_pair_set
from app.store.models import Image, Pair, PairSet
from sampler.manifest import ManifestError
from tests.pngs import png_chunk_types


def _counts(session):
    session.expire_all()
    return tuple(session.scalar(select(func.count(m.id))) for m in (PairSet, Pair, Image))


def test_import_blinds_every_image_and_makes_gold_twins(session, tmp_path, make_pair_set):
    folder = make_pair_set(tmp_path / "ps", 4)
    ps = import_pair_set(session, folder)
    session.commit()
    assert (ps.baseline_arm, ps.treatment_arm) == ("cfg", "sfg")
    assert _counts(session) == (1, 4, 12)
    images = session.scalars(select(Image)).all()
    sizes = {len(im.data) for im in images}
    assert sizes == {ps.image_byte_len}, "every image of a pair set has one byte length"
    records = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    by_key = {p.pair_key: p for p in session.scalars(select(Pair))}
    for rec in records:
        pair = by_key[rec["pair_key"]]
        assert pair.prompt == rec["prompt"] and pair.seed == rec["seed"] and pair.stratum == rec["stratum"]
        for arm, image in (("baseline", pair.baseline_image), ("treatment", pair.treatment_image)):
            # Pixels kept exactly; only IHDR/IDAT/IEND chunks (no text, time, gamma, EXIF).
            original = np.asarray(PILImage.open(folder / rec[arm]["file"]).convert("RGB"))
            served = PILImage.open(io.BytesIO(image.data))
            assert np.array_equal(np.asarray(served), original)
            assert png_chunk_types(image.data) == ["IHDR", "IDAT", "IEND"]
            assert len(image.token) == 32 and image.token not in rec[arm]["file"]
        gold = np.asarray(PILImage.open(io.BytesIO(pair.gold_image.data)), dtype=np.float64)
        source = pair.baseline_image if pair.gold_degraded_arm == "baseline" else pair.treatment_image
        intact = np.asarray(PILImage.open(io.BytesIO(source.data)), dtype=np.float64)
        assert gold.shape == intact.shape
        # Obviously degraded: washed out (much lower contrast) and visibly different.
        assert gold.std() < 0.6 * intact.std()
        assert np.abs(gold - intact).mean() > 10


def test_reimport_is_idempotent(session, tmp_path, make_pair_set):
    folder = make_pair_set(tmp_path / "ps", 3)
    first = import_pair_set(session, folder)
    session.commit()
    before = _counts(session)
    again = import_pair_set(session, folder)
    session.commit()
    assert again.id == first.id and _counts(session) == before


def _rewrite(folder, lineno, fn):
    path = folder / "manifest.jsonl"
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def test_malformed_json_line_is_reported_with_its_number(session, tmp_path, make_pair_set):
    folder = make_pair_set(tmp_path / "ps", 3)
    _rewrite(folder, 2, lambda line: line[:-5])
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: not valid JSON"):
        import_pair_set(session, folder)
    session.rollback()
    assert _counts(session) == (0, 0, 0)


def test_missing_file_and_missing_manifest(session, tmp_path, make_pair_set):
    folder = make_pair_set(tmp_path / "ps", 3)
    rec = json.loads((folder / "manifest.jsonl").read_text().splitlines()[2])
    (folder / rec["treatment"]["file"]).unlink()
    with pytest.raises(ManifestError, match=rf"manifest.jsonl:3: image {rec['treatment']['file']} is missing"):
        import_pair_set(session, folder)
    with pytest.raises(ManifestError, match="no manifest.jsonl"):
        import_pair_set(session, tmp_path / "empty")
    session.rollback()
    assert _counts(session) == (0, 0, 0)


def test_tampered_image_is_rejected_and_nothing_is_stored(session, tmp_path, make_pair_set):
    folder = make_pair_set(tmp_path / "ps", 4)
    rec = json.loads((folder / "manifest.jsonl").read_text().splitlines()[3])
    img = folder / rec["baseline"]["file"]
    img.write_bytes(img.read_bytes() + b"x")
    with pytest.raises(ManifestError, match=r"manifest.jsonl:4: .*tampered"):
        import_pair_set(session, folder)
    session.rollback()
    assert _counts(session) == (0, 0, 0)


def test_bad_record_fields_and_mixed_comparisons(session, tmp_path, make_pair_set):
    folder = make_pair_set(tmp_path / "ps", 3)
    _rewrite(folder, 2, lambda line: json.dumps({**json.loads(line), "seed": "many"}))
    with pytest.raises(ManifestError, match=r":2: field 'seed'"):
        import_pair_set(session, folder)
    folder2 = make_pair_set(tmp_path / "ps2", 3)

    def other_arm(line):
        rec = json.loads(line)
        rec["treatment"]["arm"] = "sfg-a5"
        return json.dumps(rec)

    _rewrite(folder2, 3, other_arm)
    with pytest.raises(ManifestError, match="record 3 compares 'sfg-a5'"):
        import_pair_set(session, folder2)
    session.rollback()
    assert _counts(session) == (0, 0, 0)


def test_undecodable_image_with_matching_hash_is_rejected(session, tmp_path, make_pair_set):
    import hashlib

    folder = make_pair_set(tmp_path / "ps", 2)
    rec = json.loads((folder / "manifest.jsonl").read_text().splitlines()[1])
    (folder / rec["treatment"]["file"]).write_bytes(b"not a png at all")
    digest = hashlib.sha256(b"not a png at all").hexdigest()
    _rewrite(folder, 2, lambda line: line.replace(rec["treatment"]["sha256"], digest))
    with pytest.raises(ManifestError, match="record 2: image .* cannot be decoded"):
        import_pair_set(session, folder)
    session.rollback()
    assert _counts(session) == (0, 0, 0)
