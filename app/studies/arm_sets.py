"""K-arm image sets (`sfgeval.set/1`): imported as one classic pair set per pair of arms, sharing images.

A set/1 manifest holds K arms per prompt and seed. Importing it blinds every image once (one
padded byte length for the whole set, as a pair set has) and makes one gold twin per arm image,
then adds one pair set per unordered pair of arms: the reference (baseline) arm is the baseline of
every pair it is in; between two other arms the one listed later in the manifest is the treatment.
Each such pair set is a classic baseline/treatment pair set over shared image rows, so allocation,
export, monitoring and the statistics work per comparison unchanged. A study picks its
comparisons with the config field `comparisons` (`vs-baseline`, the default; `all-pairs`; or an
explicit `[[TREATMENT, BASELINE], ...]`); a comparison asked the other way round gets its own pair
set (same images, roles swapped) when the study is created.

Each pair set of a set records the set in `params["set"]`: the set manifest's SHA-256, the arms in
order, the reference, each arm's method, params and nfe (mean over the set's lines, from the
manifest). Its own `manifest_sha256` is derived: sha256("<set sha256>:<treatment>><baseline>"),
so re-importing the set finds the pair sets it made and adds nothing.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from app.store.models import Image, Pair, PairSet
from app.studies.media import blind_png, degrade, encoded_length, load_manifest_image, new_token, padded_size, sha256_bytes
from sampler.manifest import MANIFEST_NAME, ManifestError, SetRecord, validate_set_folder

COMPARISON_RULES = ("vs-baseline", "all-pairs")
_MAX_LEN = {"pair_key": 300, "prompt_id": 300, "stratum": 100}


def derived_sha256(set_sha256: str, treatment: str, baseline: str) -> str:
    return hashlib.sha256(f"{set_sha256}:{treatment}>{baseline}".encode()).hexdigest()


def set_info(ps: PairSet) -> dict[str, Any] | None:
    """The `params["set"]` record of a pair set made from a K-arm set, else None."""
    info = (ps.params or {}).get("set") if isinstance(ps.params, dict) else None
    return info if isinstance(info, dict) and info.get("manifest_sha256") else None


def _arm_order(rec: SetRecord) -> list[str]:
    return [rec.baseline] + [a for a in rec.images if a != rec.baseline]


def _check(folder: Path, records: list[SetRecord]) -> list[str]:
    arms = _arm_order(records[0])
    for i, rec in enumerate(records, start=1):
        where = f"{folder / MANIFEST_NAME}: record {i} ({rec.pair_key[:40]!r})"
        if rec.baseline != records[0].baseline or set(rec.images) != set(arms):
            raise ManifestError(f"{where}: arms {sorted(rec.images)} (baseline {rec.baseline!r}) differ from the first "
                                f"record's {sorted(arms)} (baseline {records[0].baseline!r}); a set holds the same arms "
                                "on every line")
        if not -(2**31) <= rec.seed < 2**31:
            raise ManifestError(f"{where}: field 'seed': must fit in 32 bits (-2**31 .. 2**31-1)")
        for field, limit in _MAX_LEN.items():
            if len(getattr(rec, field) or "") > limit:
                raise ManifestError(f"{where}: field '{field}': at most {limit} characters")
    return arms




def _nfe(records: list[SetRecord], arms: list[str]) -> dict[str, dict[str, float | None]]:
    out = {}
    for a in arms:
        nfe = [r.images[a].nfe for r in records]
        alone = [r.images[a].nfe_alone for r in records if r.images[a].nfe_alone is not None]
        out[a] = {"nfe": sum(nfe) / len(nfe), "nfe_alone": sum(alone) / len(alone) if alone else None}
    return out


def import_arm_set(session: Session, folder: Path, digest: str, *, name: str | None = None,
                   progress: bool = False) -> PairSet:
    """Validate and add a set/1 folder (see the module docstring); returns the pair set of the first
    non-reference arm against the reference. Nothing is committed. Raises ManifestError."""
    records = validate_set_folder(folder)
    arms = _check(folder, records)
    reference = arms[0]
    first_key = derived_sha256(digest, arms[1], reference)
    existing = session.scalar(select(PairSet).where(PairSet.manifest_sha256 == first_key))
    if existing is not None:
        return existing
    rng = random.Random(int(digest[:16], 16))

    def images_of(i: int, rec: SetRecord) -> dict[str, PILImage.Image]:
        ims = {a: load_manifest_image(folder, i + 1, rec.images[a].file) for a in arms}
        sizes = {im.size for im in ims.values()}
        if len(sizes) != 1:
            raise ManifestError(f"{folder / MANIFEST_NAME}: record {i + 1}: the arms' images differ in size "
                                f"({sorted(sizes)}); size would reveal the arm")
        return ims | {f"gold:{a}": degrade(ims[a]) for a in arms}

    lengths: list[int] = []
    for i, rec in enumerate(tqdm(records, desc="measuring images", unit="set", disable=not progress)):
        lengths.extend(encoded_length(im) for im in images_of(i, rec).values())
    size = padded_size(lengths)

    first = records[0]
    nfe = _nfe(records, arms)
    info = {"schema": "sfgeval.set/1", "manifest_sha256": digest, "arms": arms, "reference": reference,
            "methods": {a: first.images[a].method for a in arms},
            "arm_params": {a: first.images[a].params for a in arms}, "nfe": nfe,
            "nfe_rule": first.nfe_rule}
    base_name = name or folder.resolve().name
    pair_sets: list[tuple[str, str, PairSet]] = []
    for j in range(1, len(arms)):
        for i in range(j):
            b, t = arms[i], arms[j]
            ps = PairSet(name=base_name, source=str(folder.resolve()), manifest_sha256=derived_sha256(digest, t, b),
                         baseline_arm=b, treatment_arm=t,
                         params={"shared": first.params, "baseline": first.images[b].params,
                                 "treatment": first.images[t].params, "set": info},
                         model=first.model, image_byte_len=size)
            session.add(ps)
            pair_sets.append((t, b, ps))
    session.flush()

    for i, rec in enumerate(tqdm(records, desc="importing image sets", unit="set", disable=not progress)):
        rows: dict[str, Image] = {}
        for key, im in images_of(i, rec).items():
            data = blind_png(im, size)
            rows[key] = Image(token=new_token(), sha256=sha256_bytes(data), width=im.width, height=im.height,
                              byte_len=len(data), data=data)
        session.add_all(rows.values())
        session.flush()
        for t, b, ps in pair_sets:
            degraded = rng.choice((b, t))
            session.add(Pair(pair_set_id=ps.id, pair_key=rec.pair_key, prompt_id=rec.prompt_id, prompt=rec.prompt,
                             stratum=rec.stratum, seed=rec.seed, baseline_image_id=rows[b].id,
                             treatment_image_id=rows[t].id, gold_image_id=rows[f"gold:{degraded}"].id,
                             gold_degraded_arm="baseline" if degraded == b else "treatment", token_map=None))
        for row in rows.values():
            session.expunge(row)
    session.flush()
    return next(ps for t, b, ps in pair_sets if (t, b) == (arms[1], reference))


def _family(session: Session, info: dict[str, Any]) -> dict[tuple[str, str], PairSet]:
    """Every pair set already made from one K-arm set, by (treatment, baseline)."""
    arms = info["arms"]
    keys = {derived_sha256(info["manifest_sha256"], t, b): (t, b) for t in arms for b in arms if t != b}
    found = session.scalars(select(PairSet).where(PairSet.manifest_sha256.in_(list(keys))))
    return {keys[ps.manifest_sha256]: ps for ps in found}


def _reversed(session: Session, ps: PairSet, info: dict[str, Any]) -> PairSet:
    """A pair set with `ps`'s roles swapped (same images and gold twins)."""
    params = dict(ps.params or {})
    params["baseline"], params["treatment"] = params.get("treatment"), params.get("baseline")
    new = PairSet(name=ps.name, source=ps.source,
                  manifest_sha256=derived_sha256(info["manifest_sha256"], ps.baseline_arm, ps.treatment_arm),
                  baseline_arm=ps.treatment_arm, treatment_arm=ps.baseline_arm, params=params, model=ps.model,
                  image_byte_len=ps.image_byte_len)
    session.add(new)
    session.flush()
    swap = {"baseline": "treatment", "treatment": "baseline"}
    for p in ps.pairs:
        session.add(Pair(pair_set_id=new.id, pair_key=p.pair_key, prompt_id=p.prompt_id, prompt=p.prompt,
                         stratum=p.stratum, seed=p.seed, baseline_image_id=p.treatment_image_id,
                         treatment_image_id=p.baseline_image_id, gold_image_id=p.gold_image_id,
                         gold_degraded_arm=swap.get(p.gold_degraded_arm or "", p.gold_degraded_arm), token_map=None))
    session.flush()
    return new


def wanted_pairs(arms: Sequence[str], reference: str, comparisons: str | Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """(treatment, baseline) pairs of one set's arms that a `comparisons` value asks for."""
    if comparisons == "vs-baseline":
        return [(a, reference) for a in arms if a != reference]
    if comparisons == "all-pairs":
        return [(arms[j], arms[i]) for j in range(1, len(arms)) for i in range(j)]
    return [(str(t), str(b)) for t, b in comparisons if t in arms and b in arms]


def expand_pair_sets(session: Session, pair_sets: Sequence[PairSet], comparisons: str | Sequence[Sequence[str]]
                     ) -> list[PairSet]:
    """The pair sets a study compares: a classic pair set stands for itself; a pair set of a K-arm set
    stands for its whole set, of which `comparisons` picks the pairs of arms (made on demand when
    asked the other way round). Order: as listed, each set's comparisons in `comparisons` order."""
    out: list[PairSet] = []
    seen_sets: set[str] = set()
    for ps in pair_sets:
        info = set_info(ps)
        if info is None:
            if ps not in out:
                out.append(ps)
            continue
        if info["manifest_sha256"] in seen_sets:
            continue
        seen_sets.add(info["manifest_sha256"])
        family = _family(session, info)
        pairs = wanted_pairs(info["arms"], info["reference"], comparisons)
        if not pairs:
            raise ValueError(f"comparisons {comparisons!r} name no pair of the arms {info['arms']} of pair set {ps.id}")
        for t, b in pairs:
            if (t, b) in family:
                chosen = family[(t, b)]
            elif (b, t) in family:
                chosen = _reversed(session, family[(b, t)], info)
                family[(t, b)] = chosen
            else:
                raise ValueError(f"pair set {ps.id}: no images for the comparison {t} vs {b}")
            if chosen not in out:
                out.append(chosen)
    return out


def explicit_comparisons(pair_sets: Sequence[PairSet]) -> list[list[str]] | None:
    """[[treatment, baseline], ...] of the K-arm pair sets among `pair_sets` (None without any): what a
    study's config says so that it round-trips."""
    pairs = [[ps.treatment_arm, ps.baseline_arm] for ps in pair_sets if set_info(ps) is not None]
    return pairs or None
