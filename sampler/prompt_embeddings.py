"""Prompt tables and their cached CLIP text embeddings (the files `sfgeval prompts` reads and writes).

Prompt files are read by `sampler.prompts.read_prompts` (the generator's reader), so ids and
stripping are the same everywhere: ``prompt_id``, else ``image_id`` (``data/coco_30k.csv``).

The embedding cache is two files side by side::

    embeddings.npz    arrays ``embeddings`` [N, D] float32 (unit norm) and ``prompt_ids`` [N] str
    embeddings.json   what they were computed from: model identity and the prompt file's SHA-256

The cache is valid only if both the model identity and the prompt file hash match; the JSON is
written last, so an interrupted write leaves no valid-looking cache.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sampler.manifest import sha256_file
from sampler.prompts import PromptFileError, read_prompts

CACHE_SCHEMA = "sfgeval.text-embeddings/1"


@dataclass(frozen=True)
class PromptTable:
    ids: list[str]
    prompts: list[str]
    seeds: list[int | None]
    sha256: str
    path: str


def read_prompt_table(path: str | os.PathLike) -> PromptTable:
    """Read a prompt file with `sampler.prompts.read_prompts` (.txt, .csv, .jsonl) and hash it."""
    records = read_prompts(path)
    return PromptTable(
        ids=[r.prompt_id for r in records],
        prompts=[r.prompt for r in records],
        seeds=[r.seed for r in records],
        sha256=sha256_file(path),
        path=str(path),
    )


def write_prompt_table(path: str | os.PathLike, ids: list[str], prompts: list[str], extra: dict[str, list[Any]] | None = None) -> None:
    """Write ``prompt_id,prompt[,extra columns]`` as CSV (atomic rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    extra = extra or {}
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt_id", "prompt", *extra])
        for i, (pid, text) in enumerate(zip(ids, prompts)):
            w.writerow([pid, text, *(col[i] for col in extra.values())])
    os.replace(tmp, p)


def cache_meta_path(npz: str | os.PathLike) -> Path:
    return Path(npz).with_suffix(".json")


def load_cached_embeddings(npz: str | os.PathLike, identity: dict[str, Any], table: PromptTable) -> np.ndarray | None:
    """The cached embeddings if they were made by ``identity`` from this exact prompt file, else None."""
    npz, meta_path = Path(npz), cache_meta_path(npz)
    if not (npz.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("schema") != CACHE_SCHEMA or meta.get("model") != identity or meta.get("prompt_file_sha256") != table.sha256:
        return None
    with np.load(npz, allow_pickle=False) as data:
        emb, ids = data["embeddings"], data["prompt_ids"]
    if emb.shape[0] != len(table.ids) or list(ids) != table.ids:
        return None
    return emb


def save_embeddings(npz: str | os.PathLike, emb: np.ndarray, identity: dict[str, Any], table: PromptTable) -> None:
    npz, meta_path = Path(npz), cache_meta_path(npz)
    npz.parent.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # invalidate first: a crash below must not leave a stale pair
    tmp = npz.with_name(npz.stem + ".tmp.npz")
    np.savez(tmp, embeddings=emb.astype(np.float32), prompt_ids=np.asarray(table.ids, dtype=str))
    os.replace(tmp, npz)
    meta = {
        "schema": CACHE_SCHEMA,
        "model": identity,
        "prompt_file": table.path,
        "prompt_file_sha256": table.sha256,
        "count": int(emb.shape[0]),
        "dim": int(emb.shape[1]),
        "normalized": True,
    }
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_embeddings(npz: str | os.PathLike) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Embeddings, prompt ids and metadata of a finished cache (for the diversity step)."""
    npz, meta_path = Path(npz), cache_meta_path(npz)
    if not (npz.is_file() and meta_path.is_file()):
        raise PromptFileError(f"{npz}: no finished embeddings here; run `sfgeval prompts encode` first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    with np.load(npz, allow_pickle=False) as data:
        return data["embeddings"], [str(i) for i in data["prompt_ids"]], meta


def encode_resumable(
    npz: str | os.PathLike,
    identity: dict[str, Any],
    table: PromptTable,
    encode,
    chunk: int = 2048,
) -> np.ndarray:
    """Embed every prompt of `table` with `encode(texts) -> [n, D]`, saving each finished chunk to
    NPZ.partial/ so a killed run resumes where it stopped (only with the same model, prompt file and
    chunk size); then write the cache with `save_embeddings` and drop the partial folder."""
    import shutil

    npz = Path(npz)
    partial = npz.with_name(npz.name + ".partial")
    record = {"model": identity, "prompt_file_sha256": table.sha256, "chunk": chunk, "count": len(table.ids)}
    meta = partial / "partial.json"
    if not (meta.is_file() and json.loads(meta.read_text(encoding="utf-8")) == record):
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        meta.write_text(json.dumps(record), encoding="utf-8")
    parts = []
    for start in range(0, len(table.prompts), chunk):
        path = partial / f"{start:09d}.npy"
        if path.is_file():
            try:
                parts.append(np.load(path, allow_pickle=False))
                continue
            except (ValueError, OSError):
                path.unlink()  # cut by a kill: encode again
        emb = np.asarray(encode(table.prompts[start : start + chunk]), dtype=np.float32)
        tmp = partial / f".{start:09d}.tmp.npy"
        np.save(tmp, emb)
        os.replace(tmp, path)
        parts.append(emb)
    emb = np.concatenate(parts)
    save_embeddings(npz, emb, identity, table)
    shutil.rmtree(partial, ignore_errors=True)
    return emb


def write_subset(source: str | os.PathLike, size: int, seed: int, out: str | os.PathLike) -> int:
    """Write the seeded subset of `size` prompts of `source` to `out` (prompt_id,prompt[,seed], in
    source order) and `out` with .json (seed, rule, source hash); returns the source's prompt count."""
    from sampler import subsample

    table = read_prompt_table(source)
    idx = subsample.draw_subset(len(table.prompts), size, seed)
    # Keep the source's per-prompt seeds (coco_30k.csv's evaluation_seed) so `generate` uses them.
    seeds = [table.seeds[i] for i in idx]
    extra = {"seed": ["" if v is None else v for v in seeds]} if any(v is not None for v in seeds) else None
    write_prompt_table(out, [table.ids[i] for i in idx], [table.prompts[i] for i in idx], extra)
    record = {"source": table.path, "source_sha256": table.sha256, "size": size, "seed": seed,
              "rule": "sorted numpy default_rng(seed).choice(N, size, replace=False)"}
    Path(out).with_suffix(".json").write_text(json.dumps(record, indent=2))
    return len(table.prompts)
