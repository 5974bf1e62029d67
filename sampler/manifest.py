"""The generator's manifest: the one contract between `sampler` (writes it) and `app` (reads it).

A pair set is a folder::

    OUT/manifest.jsonl      one JSON object per line, one line per finished pair
    OUT/<hex>.png           images with opaque random names (32 hex chars), no metadata
    OUT/maps/<hex>.png      optional researcher-only SFG token maps (never served)

Each line is a `PairRecord` (schema `sfgeval.pair/1`: a CFG baseline and an SFG treatment), or,
for a set made with `generate --arms`, a `SetRecord` (schema `sfgeval.set/1`: one image per arm,
`images` ARM -> {file, sha256, method, params, nfe}; `validate_set_line`). A manifest holds one
schema. Lines are appended only after both images are fully written, so
every line names files that exist and match their SHA-256. A reader must treat any line that fails
validation as an error that names the line number: a manifest is imported all or nothing.

This module is pure Python (no torch) so the web app can validate manifests without importing
the GPU stack.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA = "sfgeval.pair/1"
MANIFEST_NAME = "manifest.jsonl"
# The text chunk of a map PNG (maps/<hex>.png) holding the map as JSON: {"grid": token index per
# patch or -1, "legend": [{"index", "word", "colour"}]} (written by sampler.token_maps).
TOKEN_MAP_KEY = "sfgeval.token_map"
OPAQUE_NAME = re.compile(r"^[0-9a-f]{32}\.png$")


def read_token_map(path: Path) -> dict[str, Any] | None:
    """The map data a map PNG carries in its TOKEN_MAP_KEY text chunk (None if it has none)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = im.text.get(TOKEN_MAP_KEY)  # type: ignore[attr-defined]
    except OSError:
        return None
    return json.loads(text) if text else None


class ManifestError(ValueError):
    """A manifest that cannot be used; the message says what is wrong and where."""


class ArmImage(BaseModel):
    """One image of a pair."""

    model_config = ConfigDict(extra="forbid")

    arm: str = Field(description="arm name, e.g. 'cfg' or 'sfg'; never shown to participants")
    file: str = Field(description="opaque file name inside the pair-set folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    params: dict[str, Any] = Field(default_factory=dict, description="the arm's own settings")

    @field_validator("file")
    @classmethod
    def _opaque(cls, v: str) -> str:
        if not OPAQUE_NAME.match(v):
            raise ValueError(f"image file name {v!r} is not an opaque '<32 hex>.png' name")
        return v


class PairRecord(BaseModel):
    """One line of manifest.jsonl: two images of one prompt from one seed.

    `baseline` is the reference method (CFG), `treatment` the method under test (SFG); the app
    orients every score as treatment vs baseline.
    """

    model_config = ConfigDict(extra="allow")

    schema_: Literal["sfgeval.pair/1"] = Field(alias="schema")
    pair_key: str = Field(min_length=1, description="'<prompt_id>:<seed>', unique in a manifest")
    prompt_id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    stratum: str | None = None
    seed: int
    baseline: ArmImage
    treatment: ArmImage
    params: dict[str, Any] = Field(description="generation parameters shared by both arms")
    model: dict[str, Any] = Field(description="model identity: name_or_path and fingerprint")
    software: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None
    map_file: str | None = Field(default=None, description="researcher-only map, maps/<hex>.png")

    @model_validator(mode="after")
    def _distinct(self) -> "PairRecord":
        if self.baseline.file == self.treatment.file:
            raise ValueError("baseline and treatment name the same image file")
        if self.baseline.arm == self.treatment.arm:
            raise ValueError("baseline and treatment have the same arm name")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks: the one file hasher of sampler and app."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def _bad_text(value: Any, where: str = "") -> str | None:
    """The dotted path of the first string (key or value) in `value` holding a NUL or a lone
    surrogate, which no database text column takes; None when all text is clean."""
    if isinstance(value, str):
        return (where or "record") if _BAD_CHARS.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{where}.{k}" if where else str(k)
            if _BAD_CHARS.search(str(k)):
                return here
            found = _bad_text(v, here)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _bad_text(v, f"{where}.{i}")
            if found is not None:
                return found
    return None


def iter_records(folder: Path) -> Iterator[tuple[int, PairRecord]]:
    """Yield (line number, record) for every line; raise ManifestError naming the first bad line.

    Does not look at the image files: see `validate_folder`.
    """
    path = Path(folder) / MANIFEST_NAME
    seen: dict[str, int] = {}
    for lineno, raw in _json_lines(path):
        if not isinstance(raw, dict):
            raise ManifestError(f"{path}:{lineno}: a record must be a JSON object")
        bad = _bad_text(raw)
        if bad is not None:
            raise ManifestError(
                f"{path}:{lineno}: field '{bad}': text contains a NUL character or an unpaired surrogate"
            )
        try:
            rec = PairRecord.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "record"
            raise ManifestError(f"{path}:{lineno}: field '{where}': {first['msg']}") from None
        if rec.pair_key in seen:
            raise ManifestError(
                f"{path}:{lineno}: pair_key {rec.pair_key!r} repeats line {seen[rec.pair_key]}"
            )
        seen[rec.pair_key] = lineno
        yield lineno, rec


def validate_folder(folder: Path) -> list[PairRecord]:
    """Every record valid and every image present with the recorded SHA-256, or ManifestError."""
    folder = Path(folder)
    records: list[PairRecord] = []
    for lineno, rec in iter_records(folder):
        for side in (rec.baseline, rec.treatment):
            img = folder / side.file
            if not img.is_file():
                raise ManifestError(f"{folder / MANIFEST_NAME}:{lineno}: image {side.file} is missing")
            digest = sha256_file(img)
            if digest != side.sha256:
                raise ManifestError(
                    f"{folder / MANIFEST_NAME}:{lineno}: image {side.file} does not match its "
                    f"sha256 (manifest {side.sha256[:12]}…, file {digest[:12]}…): tampered or truncated"
                )
        records.append(rec)
    if not records:
        raise ManifestError(f"{folder / MANIFEST_NAME}: the manifest holds no pairs")
    return records


# -- sfgeval.set/1: several arms per prompt and seed (`generate --arms`) ------------------------
SET_SCHEMA = "sfgeval.set/1"
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NFE_RULE = (
    "nfe: UNet evaluations (batch rows per image) spent on this image in the run that made it; "
    "steps shared by several arms of one prompt and seed (identical inputs, e.g. SFG's CFG phase "
    "and a CFG arm of the same scale and steps) are computed once and counted once, in the nfe of "
    "the first of those arms in the arms file (see shared_steps); nfe_alone: what the image costs "
    "generated on its own"
)


class SetImage(BaseModel):
    """One arm's image of a set/1 line."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="opaque file name inside the set folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    method: str = Field(min_length=1, description="cfg, sfg, pag, apg, cfg-zero-star, ...")
    params: dict[str, Any] = Field(description="the arm's complete settings")
    nfe: int = Field(ge=0, description="UNet evaluations spent on this image (NFE_RULE)")
    nfe_alone: int | None = Field(default=None, ge=0, description="evaluations of this image made on its own")
    settings_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                      description="sha256 of method, params and the line's shared params")
    reused_from: dict[str, Any] | None = None

    _opaque = field_validator("file")(ArmImage._opaque.__func__)


class SharedSteps(BaseModel):
    """Steps computed once for several arms of one line."""

    model_config = ConfigDict(extra="allow")

    arms: list[str] = Field(min_length=2)
    steps: int = Field(ge=1)
    nfe: int = Field(ge=0)
    counted_in: str


class SetRecord(BaseModel):
    """One line of a set/1 manifest: the images of every arm for one prompt and seed.

    `baseline` names the reference arm; `images` maps arm name -> SetImage. Shared fields
    (`pair_key`, prompt, stratum, seed, `params`, `model`, `software`) mean what they mean in
    pair/1."""

    model_config = ConfigDict(extra="allow")

    schema_: Literal["sfgeval.set/1"] = Field(alias="schema")
    pair_key: str = Field(min_length=1, description="'<prompt_id>:<seed>', unique in a manifest")
    prompt_id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    stratum: str | None = None
    seed: int
    baseline: str
    images: dict[str, SetImage] = Field(min_length=2)
    params: dict[str, Any] = Field(description="parameters shared by every arm (size, scheduler, dtype, noise)")
    model: dict[str, Any] = Field(description="model identity: name_or_path and fingerprint")
    software: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None
    shared_steps: list[SharedSteps] = Field(default_factory=list)
    nfe_rule: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "SetRecord":
        bad = [a for a in self.images if not ARM_NAME.match(a)]
        if bad:
            raise ValueError(f"arm name {bad[0]!r} is not 1-64 letters, digits, '.', '_' or '-'")
        if self.baseline not in self.images:
            raise ValueError(f"baseline arm {self.baseline!r} has no image")
        files = [img.file for img in self.images.values()]
        if len(set(files)) != len(files):
            raise ValueError("two arms name the same image file")
        for s in self.shared_steps:
            unknown = [a for a in [*s.arms, s.counted_in] if a not in self.images]
            if unknown:
                raise ValueError(f"shared_steps names arm {unknown[0]!r}, which has no image")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False)


def validate_set_line(raw: Any, where: str = "record") -> SetRecord:
    """A set/1 record from one decoded manifest line, or ManifestError saying `where` and which
    field is wrong (same messages as the pair/1 reader)."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: a record must be a JSON object")
    bad = _bad_text(raw)
    if bad is not None:
        raise ManifestError(f"{where}: field '{bad}': text contains a NUL character or an unpaired surrogate")
    if raw.get("schema") != SET_SCHEMA:
        raise ManifestError(f"{where}: field 'schema': expected {SET_SCHEMA!r}, got {raw.get('schema')!r}")
    try:
        return SetRecord.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "record"
        raise ManifestError(f"{where}: field '{loc}': {first['msg']}") from None


def manifest_schema(folder: Path) -> str | None:
    """The schema of a folder's manifest (its first line's), None for an empty or missing one."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return raw.get("schema") if isinstance(raw, dict) else None
    return None


def iter_set_records(folder: Path) -> Iterator[tuple[int, SetRecord]]:
    """Yield (line number, record) of a set/1 manifest; ManifestError naming the first bad line."""
    path = Path(folder) / MANIFEST_NAME
    seen: dict[str, int] = {}
    for lineno, raw in _json_lines(path):
        rec = validate_set_line(raw, f"{path}:{lineno}")
        if rec.pair_key in seen:
            raise ManifestError(f"{path}:{lineno}: pair_key {rec.pair_key!r} repeats line {seen[rec.pair_key]}")
        seen[rec.pair_key] = lineno
        yield lineno, rec


def validate_set_folder(folder: Path) -> list[SetRecord]:
    """Every set/1 record valid and every image present with its SHA-256, or ManifestError."""
    folder = Path(folder)
    records: list[SetRecord] = []
    for lineno, rec in iter_set_records(folder):
        for arm, img in rec.images.items():
            path = folder / img.file
            if not path.is_file():
                raise ManifestError(f"{folder / MANIFEST_NAME}:{lineno}: image {img.file} of arm {arm!r} is missing")
            if sha256_file(path) != img.sha256:
                raise ManifestError(f"{folder / MANIFEST_NAME}:{lineno}: image {img.file} of arm {arm!r} does not "
                                    "match its sha256: tampered or truncated")
        records.append(rec)
    if not records:
        raise ManifestError(f"{folder / MANIFEST_NAME}: the manifest holds no image sets")
    return records


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of every non-blank line of a manifest; ManifestError when it is
    missing or a line is not JSON."""
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest.jsonl in this folder")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
