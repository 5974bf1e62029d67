"""CLIP-score strata of a generated pair set (`sfgeval prompts strata`): cache, choice, files.

Every baseline (CFG) image of the folder is scored once, 100 x cosine(image, prompt), and the
score is cached in a CSV keyed by (image SHA-256, prompt, model), appended and flushed in chunks,
so a rerun with another k, new pairs or a killed run scores only what is missing, and one cache
can hold several models' scores. A prompt's score is the mean over its seeds; the k prompts
nearest each percentile form a stratum (`subsample.percentile_strata`).

The strata file carries each prompt's first seed in the folder: the seed of the image that was
scored. `sfgeval generate --prompts strata.csv --seeds-per-prompt N` then uses seeds seed,
seed+1, ..., seed+N-1 (recorded per pair in the manifest), so the first image judged of every
prompt is the one it was placed in its stratum by; `--reuse FOLDER` copies those pairs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampler import subsample
from sampler.manifest import MANIFEST_NAME, ManifestError, PairRecord, iter_records
from sampler.prompt_embeddings import write_prompt_table

CACHE_FIELDS = ["model", "sha256", "prompt", "pair_key", "prompt_id", "file", "clip_score"]
Scorer = Callable[[Sequence[Path], Sequence[str], str], Sequence[float]]  # (images, prompts, progress label)


class StrataError(ValueError):
    """A pair-set folder or strata request that cannot be used; says what."""


def read_pair_folder(folder: str | Path) -> list[PairRecord]:
    """The records of a `sfgeval generate` folder whose baseline images all exist."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / MANIFEST_NAME).is_file():
        what = "a file" if folder.is_file() else ("a folder without manifest.jsonl" if folder.is_dir() else "missing")
        raise StrataError(f"{folder} is {what}: --manifest expects the folder written by `sfgeval generate`")
    try:
        records = [rec for _, rec in iter_records(folder)]
    except ManifestError as e:
        raise StrataError(str(e)) from None
    if not records:
        raise StrataError(f"{folder}: the manifest holds no pairs")
    for rec in records:
        if not (folder / rec.baseline.file).is_file():
            raise StrataError(f"{folder}: image {rec.baseline.file} of pair {rec.pair_key} is missing")
    return records


def model_key(identity: dict[str, Any]) -> str:
    """A short stable key of a model identity for the cache's `model` column."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class ScoreCache:
    """(image sha256, prompt, model key) -> CLIP score, backed by an append-only CSV."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.scores: dict[tuple[str, str, str], float] = {}
        rows = []
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            text = text[: text.rfind("\n") + 1]  # a kill can cut the last row: drop it
            for r in csv.DictReader(io.StringIO(text, newline="")):
                try:
                    self.scores[(r["sha256"], r["prompt"], r["model"])] = float(r["clip_score"])
                    rows.append(r)
                except (TypeError, ValueError, KeyError):
                    continue  # a cut row, or a row of an older cache without the model column
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="", encoding="utf-8") as f:  # rewritten: appends start on a fresh line
            w = csv.DictWriter(f, fieldnames=CACHE_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def get(self, rec: PairRecord, model: str) -> float | None:
        return self.scores.get((rec.baseline.sha256, rec.prompt, model))

    def add(self, scored: list[tuple[PairRecord, float]], model: str) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=CACHE_FIELDS)
            for rec, v in scored:
                w.writerow({"model": model, "sha256": rec.baseline.sha256, "prompt": rec.prompt, "pair_key": rec.pair_key,
                            "prompt_id": rec.prompt_id, "file": rec.baseline.file, "clip_score": repr(float(v))})
                self.scores[(rec.baseline.sha256, rec.prompt, model)] = float(v)
            f.flush()


def score_baselines(folder: Path, records: list[PairRecord], cache: ScoreCache, model: str, scorer: Scorer,
                    chunk: int = 256) -> tuple[list[float], int]:
    """The baseline image's CLIP score of every record (cached first); returns (scores, newly scored)."""
    todo = [rec for rec in records if cache.get(rec, model) is None]
    todo = list({(r.baseline.sha256, r.prompt): r for r in todo}.values())
    for i in range(0, len(todo), chunk):  # flush to the cache every chunk: a kill loses little
        part = todo[i : i + chunk]
        values = scorer([folder / r.baseline.file for r in part], [r.prompt for r in part],
                        f"CLIP score {i + len(part)}/{len(todo)}")
        cache.add(list(zip(part, values)), model)
    return [cache.get(rec, model) for rec in records], len(todo)


@dataclass(frozen=True)
class StratumRow:
    prompt_id: str
    prompt: str
    stratum: str
    clip_score: float
    seed: int  # the prompt's first seed in the folder: its scored image


def choose_strata(records: list[PairRecord], scores: list[float], k: int, percentiles: Sequence[float],
                  labels: Sequence[str]) -> tuple[list[StratumRow], dict[str, float]]:
    """Per-prompt mean scores, the k prompts nearest each percentile; returns rows and targets."""
    per_prompt: dict[str, list[float]] = {}
    first: dict[str, PairRecord] = {}
    for rec, v in zip(records, scores):
        per_prompt.setdefault(rec.prompt_id, []).append(v)
        if rec.prompt_id not in first or rec.seed < first[rec.prompt_id].seed:
            first[rec.prompt_id] = rec
    ids = list(per_prompt)
    means = [sum(v) / len(v) for v in per_prompt.values()]
    picks = subsample.percentile_strata(means, k, percentiles, labels)
    rows = [StratumRow(ids[p.index], first[ids[p.index]].prompt, p.label, p.score, first[ids[p.index]].seed) for p in picks]
    return rows, {p.label: p.target for p in picks}


def write_strata(out: str | Path, rows: list[StratumRow], record: dict[str, Any]) -> None:
    """OUT (prompt_id, prompt, stratum, clip_score, seed: a prompt file for `generate`) and OUT.json."""
    write_prompt_table(
        out, [r.prompt_id for r in rows], [r.prompt for r in rows],
        {"stratum": [r.stratum for r in rows], "clip_score": [f"{r.clip_score:.6f}" for r in rows],
         "seed": [r.seed for r in rows]},
    )
    Path(out).with_suffix(".json").write_text(json.dumps(record, indent=2))


def run_strata(folder: str | Path, identity: dict[str, Any], scorer: Scorer, k: int, percentiles: Sequence[float],
               labels: Sequence[str], out: str | Path, cache_path: str | Path | None = None,
               chunk: int = 256) -> tuple[list[StratumRow], dict[str, float], int]:
    """Score, choose and write the strata of `folder`; returns (rows, targets, images newly scored).

    `scorer(images, prompts, label)` is called only for images not in the cache (so a caller can
    load the CLIP model lazily). Raises StrataError / ValueError with what is wrong.
    """
    if len(percentiles) != len(labels):
        raise StrataError(f"{len(percentiles)} percentiles but {len(labels)} labels")
    folder = Path(folder)
    records = read_pair_folder(folder)
    cache = ScoreCache(Path(cache_path) if cache_path else Path(out).parent / "clip_scores.csv")
    scores, scored = score_baselines(folder, records, cache, model_key(identity), scorer, chunk)
    rows, targets = choose_strata(records, scores, k, percentiles, labels)
    write_strata(out, rows, {
        "manifest": str(folder),
        "model": identity,
        "clip_score": "100 * cosine(image, text), mean over the prompt's seeds, baseline arm",
        "prompts_scored": len({r.prompt_id for r in records}),
        "k": k,
        "strata": [{"label": lab, "percentile": p, "target_score": targets[lab]} for lab, p in zip(labels, percentiles)],
        "collisions": "a prompt goes to the stratum whose target is nearest; ties by stratum order, then prompt order",
        "seed": "the prompt's first seed in the manifest (its scored image); generate --seeds-per-prompt N uses seed .. seed+N-1",
    })
    return rows, targets, scored
