"""Import a generator manifest (`sampler.manifest`) as a pair set: validated, blinded, all or nothing.

`import_pair_set(session, folder)` checks every record and every file hash first, then re-encodes
every image (`app.studies.media.blind_png`: RGB PNG, no metadata, one byte length for the whole pair set),
makes an obviously degraded "gold" twin of one image per pair, and adds everything to `session`
without committing: the caller's single commit makes the import all or nothing. Importing the same
manifest again (same SHA-256) returns the existing pair set and adds nothing.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from app.studies.media import blind_png, degrade, encoded_length, load_manifest_image, new_token, padded_size, sha256_bytes
from app.store.models import Image, Pair, PairSet
from sampler.manifest import (MANIFEST_NAME, SET_SCHEMA, ManifestError, PairRecord, manifest_schema, read_token_map,
                              sha256_file, validate_folder)


def manifest_sha256(folder: Path) -> str:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest.jsonl in this folder")
    return sha256_file(path)


# Columns of `pairs` with a bound the database enforces (PostgreSQL refuses what does not fit).
_MAX_LEN = {"pair_key": 300, "prompt_id": 300, "stratum": 100}


def _check_fits(folder: Path, records: list[PairRecord]) -> None:
    """Refuse, naming the record, values the database cannot store (no half-done import, no 500)."""
    for i, rec in enumerate(records, start=1):
        where = f"{folder / MANIFEST_NAME}: record {i} ({rec.pair_key[:40]!r})"
        if not -(2**31) <= rec.seed < 2**31:
            raise ManifestError(f"{where}: field 'seed': must fit in 32 bits (-2**31 .. 2**31-1)")
        for field, limit in _MAX_LEN.items():
            if len(getattr(rec, field) or "") > limit:
                raise ManifestError(f"{where}: field '{field}': at most {limit} characters")
        if max(len(rec.baseline.arm), len(rec.treatment.arm)) > 100:
            raise ManifestError(f"{where}: an arm name is longer than 100 characters")


def _check_arms(folder: Path, records: list[PairRecord]) -> tuple[str, str]:
    """All records of one pair set compare the same two arms; return (baseline, treatment)."""
    first = records[0]
    arms = (first.baseline.arm, first.treatment.arm)
    for lineno, rec in enumerate(records, start=1):
        if (rec.baseline.arm, rec.treatment.arm) != arms:
            raise ManifestError(
                f"{folder / MANIFEST_NAME}: record {lineno} compares {rec.treatment.arm!r} vs "
                f"{rec.baseline.arm!r} but the first record compares {arms[1]!r} vs {arms[0]!r}; "
                "a pair set holds one comparison (split the manifest)"
            )
    return arms




def import_pair_set(session: Session, folder: Path | str, *, name: str | None = None, progress: bool = False) -> PairSet:
    """Validate and add the pair set in `folder` (see the module docstring). Raises ManifestError."""
    folder = Path(folder)
    digest = manifest_sha256(folder)
    if manifest_schema(folder) == SET_SCHEMA:
        # K arms per prompt and seed: one pair set per pair of arms over shared images (app.studies.arm_sets).
        from app.studies.arm_sets import import_arm_set

        return import_arm_set(session, folder, digest, name=name, progress=progress)
    existing = session.scalar(select(PairSet).where(PairSet.manifest_sha256 == digest))
    if existing is not None:
        return existing
    records = validate_folder(folder)
    _check_fits(folder, records)
    baseline_arm, treatment_arm = _check_arms(folder, records)
    # Which image of each pair gets a degraded twin: seeded by the manifest, so re-imports of the
    # same data on another database make the same choice.
    rng = random.Random(int(digest[:16], 16))
    degraded_arm = [rng.choice(("baseline", "treatment")) for _ in records]

    def images_of(i: int, rec: PairRecord) -> tuple[PILImage.Image, PILImage.Image, PILImage.Image]:
        base = load_manifest_image(folder, i + 1, rec.baseline.file)
        treat = load_manifest_image(folder, i + 1, rec.treatment.file)
        if base.size != treat.size:
            raise ManifestError(
                f"{folder / MANIFEST_NAME}: record {i + 1}: the two images differ in size "
                f"({base.size} vs {treat.size}); size would reveal the arm"
            )
        gold = degrade(base if degraded_arm[i] == "baseline" else treat)
        return base, treat, gold

    # Pass 1: the common padded byte length (one per pair set, so no image's size stands out).
    lengths: list[int] = []
    for i, rec in enumerate(tqdm(records, desc="measuring images", unit="pair", disable=not progress)):
        lengths.extend(encoded_length(im) for im in images_of(i, rec))
    size = padded_size(lengths)

    first = records[0]
    pair_set = PairSet(
        name=name or folder.resolve().name,
        source=str(folder.resolve()),
        manifest_sha256=digest,
        baseline_arm=baseline_arm,
        treatment_arm=treatment_arm,
        params={"shared": first.params, "baseline": first.baseline.params, "treatment": first.treatment.params},
        model=first.model,
        image_byte_len=size,
    )
    session.add(pair_set)
    session.flush()

    # Pass 2: encode at the common size and store.
    for i, rec in enumerate(tqdm(records, desc="importing pairs", unit="pair", disable=not progress)):
        rows = []
        for im in images_of(i, rec):
            data = blind_png(im, size)
            rows.append(Image(token=new_token(), sha256=sha256_bytes(data), width=im.width,
                              height=im.height, byte_len=len(data), data=data))
        session.add_all(rows)
        session.flush()
        session.add(Pair(
            pair_set_id=pair_set.id,
            pair_key=rec.pair_key,
            prompt_id=rec.prompt_id,
            prompt=rec.prompt,
            stratum=rec.stratum,
            seed=rec.seed,
            baseline_image_id=rows[0].id,
            treatment_image_id=rows[1].id,
            gold_image_id=rows[2].id,
            gold_degraded_arm=degraded_arm[i],
            token_map=read_token_map(folder / rec.map_file) if rec.map_file else None,
        ))
        # Image bytes are not needed again in this session; keep memory flat on big pair sets.
        for row in rows:
            session.expunge(row)
    session.flush()
    return pair_set
