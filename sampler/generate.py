"""The pair generator: prompts x seeds -> CFG/SFG image pairs + `manifest.jsonl` (sampler.manifest).

Output folder layout and record format: see `sampler.manifest`; safe writing: `sampler.pair_files`.
Baseline arm 'cfg', treatment arm 'sfg'. A killed run leaves a manifest whose every line is
complete, and a re-run skips the pair keys already in it. Under `accelerate launch` the pair list
is split into contiguous shards, one per process, before finished pairs are skipped (every process
computes the same split), and all processes append to the one manifest.

`generate_pairs` runs in three steps, each its own function: `check_request` (prompts, model
folder, output folder: before anything loads), `run_signature` + `check_resume` (sampler.signature:
what a folder's pairs must share; read from the model folder's configs, so a folder made with
other settings is refused before the model loads), and `_generate_loop` (the UNet work). Pairs
already made with the same settings in another folder (`reuse_from`, e.g. the 5K set the strata
were scored on) are copied instead of generated again.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sampler.devices import DeviceError, resolve_device, resolve_dtype
from sampler.manifest import (
    MANIFEST_NAME,
    SCHEMA,
    ManifestError,
    PairRecord,
    iter_records,
)
from sampler.model_folder import (
    GenerateError,
    check_model_folder,
    load_pipeline,
    model_identity,
    software_versions,
)
from sampler.pair_files import MAPS_DIR, ManifestWriter, png_bytes, write_file
from sampler.params import SamplerParams
from sampler.prompts import PromptRecord, read_prompts
from sampler.settings import GenerationSettings
from sampler.signature import RunSignature, check_resume, run_signature

T = TypeVar("T")
BASELINE_ARM = "cfg"
TREATMENT_ARM = "sfg"


@dataclass(frozen=True)
class WorkItem:
    """One pair to make: a prompt and a seed; `pair_key` is '<prompt_id>:<seed>'."""

    prompt: PromptRecord
    seed: int

    @property
    def pair_key(self) -> str:
        return f"{self.prompt.prompt_id}:{self.seed}"


@dataclass
class GenerateSummary:
    out_dir: Path
    total: int  # pairs assigned to this process
    skipped: int  # already in the manifest
    written: int  # appended by this call (generated or reused)
    reused: int = 0  # of `written`, copied from `reuse_from`


# -- planning ------------------------------------------------------------------------------------
def plan_pairs(prompts: Sequence[PromptRecord], seeds_per_prompt: int = 1, base_seed: int = 0) -> list[WorkItem]:
    """Prompt-major list of pairs. A prompt's seeds are s, s+1, ..., s+N-1 where s is the
    prompt file's own seed (`seed` / `evaluation_seed` column) when it has one, else `base_seed`."""
    if seeds_per_prompt < 1:
        raise GenerateError("seeds per prompt must be at least 1")
    return [
        WorkItem(p, (base_seed if p.seed is None else p.seed) + j) for p in prompts for j in range(seeds_per_prompt)
    ]


def shard(items: Sequence[T], num_processes: int, process_index: int) -> list[T]:
    """This process's contiguous share of `items`: the first len % P shares get one extra item,
    as `accelerate.PartialState.split_between_processes` splits (no padding). Across all process
    indices the shares cover `items` exactly once, in order."""
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"process {process_index} of {num_processes} does not exist")
    per, extra = divmod(len(items), num_processes)
    start = process_index * per + min(process_index, extra)
    return list(items[start : start + per + (1 if process_index < extra else 0)])


def process_share() -> tuple[int, int]:
    """(num_processes, process_index) under `accelerate launch` (PartialState), or under a
    plain torchrun/MPI launch that accelerate does not treat as distributed (WORLD_SIZE/RANK)."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        return state.num_processes, state.process_index
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return (size, rank) if size > 1 and 0 <= rank < size else (1, 0)


def finished_pairs(out_dir: Path) -> dict[str, PairRecord]:
    """pair_key -> record of every pair already in OUT/manifest.jsonl (empty when none)."""
    if not (Path(out_dir) / MANIFEST_NAME).is_file():
        return {}
    try:
        return {rec.pair_key: rec for _, rec in iter_records(Path(out_dir))}
    except ManifestError as e:
        raise GenerateError(f"cannot resume: {e}") from None


def check_request(
    prompts: str | Path | Sequence[PromptRecord | str], out_dir: Path, model_dir: Path, limit: int | None, batch_size: int
) -> list[PromptRecord]:
    """The prompt records to generate, after checking everything that needs no model."""
    if isinstance(prompts, (str, Path)):
        records = read_prompts(prompts)
    else:  # PromptRecords, or plain strings numbered from 1
        records = [p if isinstance(p, PromptRecord) else PromptRecord(str(i), str(p).strip()) for i, p in enumerate(prompts, 1)]
        if any(not r.prompt for r in records):
            raise GenerateError("empty prompt in the prompt list")
    if limit is not None:
        records = records[:limit]
    if not records:
        raise GenerateError("no prompts to generate")
    if batch_size < 1:
        raise GenerateError("batch size must be at least 1")
    check_model_folder(model_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenerateError(f"output path {out_dir} exists and is not a folder")
    return records


def process_device(device: str, num_processes: int, process_index: int):
    """The torch device this process generates on (accelerate's when launched by it)."""
    import torch
    from accelerate import PartialState

    if num_processes > 1 and PartialState().num_processes > 1:
        return PartialState().device
    if num_processes > 1 and device == "auto" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", process_index)) % torch.cuda.device_count())
    try:
        return resolve_device(device)
    except DeviceError as e:
        raise GenerateError(str(e)) from None


# -- the generator -------------------------------------------------------------------------------
def generate_pairs(
    prompts: str | Path | Sequence[PromptRecord | str],
    out_dir: str | Path,
    *,
    model_dir: str | Path,
    settings: GenerationSettings = GenerationSettings(),
    seeds_per_prompt: int = 1,
    base_seed: int = 0,
    batch_size: int = 1,
    device: str = "auto",
    dtype: str = "auto",
    save_maps: bool = False,
    limit: int | None = None,
    progress: bool = True,
    model_name: str | None = None,
    pipeline=None,
    on_pair: Callable[[PairRecord], None] | None = None,
    reuse_from: str | Path | None = None,
) -> GenerateSummary:
    """Generate CFG/SFG pairs for `prompts` (a prompt file path, PromptRecords, or plain strings,
    whose ids are then 1, 2, ...) into `out_dir`.

    Resumable: pairs whose key is already in the manifest are skipped; a folder holding pairs
    made with other settings or another model is refused before the model loads. `limit` keeps
    the first N prompts. `pipeline` (an SFGPipeline already loaded from `model_dir`) skips
    loading. `reuse_from`: a pair-set folder whose pairs with the same key, prompt and signature
    are copied (new opaque names, this run's stratum) instead of generated. `on_pair` is called
    after each manifest line is appended. Returns counts for this process.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    records = check_request(prompts, out_dir, model_dir, limit, batch_size)
    if reuse_from is not None and not (Path(reuse_from) / MANIFEST_NAME).is_file():
        raise GenerateError(f"--reuse {reuse_from}: expects a folder written by `sfgeval generate` (no {MANIFEST_NAME})")
    num_processes, process_index = process_share()
    dev = process_device(device, num_processes, process_index)
    try:
        torch_dtype = resolve_dtype(dtype, dev)
    except DeviceError as e:
        raise GenerateError(str(e)) from None
    signature = run_signature(settings, model_dir, torch_dtype, model_identity(model_dir, model_name), pipeline)
    work = shard(plan_pairs(records, seeds_per_prompt, base_seed), num_processes, process_index)
    done = finished_pairs(out_dir)
    check_resume(out_dir, done, signature)

    out_dir.mkdir(parents=True, exist_ok=True)
    if save_maps:
        (out_dir / MAPS_DIR).mkdir(exist_ok=True)
    writer = ManifestWriter(out_dir)
    with writer.lock:
        writer.keys.refresh()
    todo = [w for w in work if w.pair_key not in done]
    copied = 0
    if reuse_from is not None and todo:
        todo, copied = _reuse_pairs(Path(reuse_from), todo, signature, writer, save_maps, on_pair)
    written = copied
    if todo:
        if pipeline is None:
            pipeline = load_pipeline(model_dir, dev, torch_dtype)
        label = "pairs" if num_processes == 1 else f"pairs [{process_index}]"
        written += _generate_loop(pipeline, todo, settings, signature, writer, batch_size, save_maps, on_pair,
                                  progress, label, process_index, len(work))
    return GenerateSummary(out_dir=out_dir, total=len(work), skipped=len(work) - len(todo) - copied, written=written,
                           reused=copied)


def _generate_loop(pipeline, todo, settings, signature, writer, batch_size, save_maps, on_pair, progress, label,
                   position, total) -> int:
    """Make and write the pairs of `todo` in UNet batches; returns how many were appended."""
    import torch
    from tqdm.auto import tqdm

    software = software_versions()
    height, width = signature.shared["height"], signature.shared["width"]
    params = SamplerParams(**{f: getattr(settings, f) for f in SamplerParams.__dataclass_fields__})
    written = 0
    with tqdm(total=total, initial=total - len(todo), unit="pair", desc=label, position=position,
              disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            out = pipeline.pairs(
                [w.prompt.prompt for w in batch],
                params=params,
                generator=[torch.Generator("cpu").manual_seed(w.seed) for w in batch],
                height=height,
                width=width,
                record_token_maps=save_maps,
            )
            for j, w in enumerate(batch):
                images = {arm: out.images[arm][j] for arm in (BASELINE_ARM, TREATMENT_ARM)}
                data = {arm: png_bytes(img) for arm, img in images.items()}
                map_png = None
                if save_maps:
                    from sampler.token_maps import render_token_map

                    map_png = render_token_map(out.token_maps[j], images[BASELINE_ARM], images[TREATMENT_ARM])
                record = _write_pair(writer.out_dir, w, data, map_png, signature, software)
                # Another run writing into this folder may have made this pair meanwhile:
                # a pair key is never appended twice.
                if not writer.append(record):
                    continue
                written += 1
                bar.update(1)
                if on_pair is not None:
                    on_pair(record)
    return written


def _reuse_pairs(source: Path, todo: list[WorkItem], signature: RunSignature, writer: ManifestWriter, save_maps: bool,
                 on_pair) -> tuple[list[WorkItem], int]:
    """Copy the pairs of `todo` that `source` already holds with the same prompt and signature;
    return the work left and the number copied."""
    theirs = finished_pairs(source)
    mine = signature.key()
    left, copied = [], 0
    for w in todo:
        rec = theirs.get(w.pair_key)
        usable = (
            rec is not None and rec.prompt == w.prompt.prompt and RunSignature.key_of(rec) == mine
            and (rec.map_file is not None or not save_maps)
        )
        if not usable:
            left.append(w)
            continue
        data = {BASELINE_ARM: (source / rec.baseline.file).read_bytes(), TREATMENT_ARM: (source / rec.treatment.file).read_bytes()}
        if any(hashlib.sha256(data[arm]).hexdigest() != side.sha256 for arm, side in ((BASELINE_ARM, rec.baseline), (TREATMENT_ARM, rec.treatment))):
            raise GenerateError(f"{source}: the images of pair {rec.pair_key} do not match their sha256; not reused")
        map_png = (source / rec.map_file).read_bytes() if save_maps else None
        record = _write_pair(writer.out_dir, w, data, map_png, signature, rec.software,
                             reused_from={"folder": str(source.resolve()), "created_at": rec.created_at})
        if writer.append(record):
            copied += 1
            if on_pair is not None:
                on_pair(record)
    return left, copied


def _write_pair(out_dir: Path, item: WorkItem, data: dict[str, bytes], map_png: bytes | None, signature: RunSignature,
                software: dict[str, str], reused_from: dict[str, Any] | None = None) -> PairRecord:
    """Write both PNGs (in random order, equal mtimes: creation order and times must not tell the
    arms apart) and the optional map; return the record."""
    order = [BASELINE_ARM, TREATMENT_ARM]
    if secrets.randbelow(2):
        order.reverse()
    files = {arm: write_file(out_dir, data[arm]) for arm in order}
    stamp = _dt.datetime.now(_dt.timezone.utc).timestamp()
    for arm in order:
        os.utime(out_dir / files[arm], (stamp, stamp))
    map_file = None if map_png is None else f"{MAPS_DIR}/" + write_file(out_dir / MAPS_DIR, map_png)
    p = item.prompt
    extra = {"reused_from": reused_from} if reused_from else {}
    return PairRecord.model_validate(
        {
            "schema": SCHEMA,
            "pair_key": item.pair_key,
            "prompt_id": p.prompt_id,
            "prompt": p.prompt,
            "stratum": p.stratum,
            "seed": item.seed,
            "baseline": {"arm": BASELINE_ARM, "file": files[BASELINE_ARM],
                         "sha256": hashlib.sha256(data[BASELINE_ARM]).hexdigest(), "params": signature.baseline},
            "treatment": {"arm": TREATMENT_ARM, "file": files[TREATMENT_ARM],
                          "sha256": hashlib.sha256(data[TREATMENT_ARM]).hexdigest(), "params": signature.treatment},
            "params": signature.shared,
            "model": signature.model,
            "software": software,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "map_file": map_file,
            **extra,
        }
    )
