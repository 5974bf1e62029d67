"""The generator's manifest: the one contract between `sampler` (writes it) and `app` (reads it).

A pair set is a folder::

    OUT/manifest.jsonl      one JSON object per line, one line per finished pair
    OUT/<hex>.png           images with opaque random names (32 hex chars), no metadata
    OUT/maps/<hex>.png      optional researcher-only SFG token maps (never served)

Each line is a `PairRecord`. Lines are appended only after both images are fully written, so
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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest.jsonl in this folder")
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
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
