"""The set generator of `sfgeval generate --arms`: prompts x seeds -> one image per arm, written
as an `sfgeval.set/1` manifest (sampler.manifest) by `sampler.set_files.SetWriter`.

Same request checks, seeds, sharding and output folder rules as the pair generator
(`sampler.generate`); what differs is per arm:

- every arm's settings are hashed (`ArmSpec.settings_hash`, with the run's shared parameters and
  the model fingerprint) into its image entry;
- resume is per arm: a prompt and seed whose line lacks an arm of the arms file gets only that
  arm (adding an arm to a finished set generates only the new arm); an arm already in the folder
  with another hash, other shared parameters, another model or another baseline are refused
  before the model loads;
- `reuse_from` (a set/1 folder) copies, per arm, the images it holds with the same pair key,
  prompt and settings hash.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampler.arms import ArmSpec, resolve_matching
from sampler.devices import DeviceError, resolve_dtype
from sampler.generate import (
    WorkItem,
    check_request,
    plan_pairs,
    process_device,
    process_share,
    shard,
)
from sampler.manifest import (
    MANIFEST_NAME,
    NFE_RULE,
    SET_SCHEMA,
    ManifestError,
    SetRecord,
    iter_set_records,
    manifest_schema,
)
from sampler.model_folder import (
    GenerateError,
    load_pipeline,
    model_identity,
    software_versions,
)
from sampler.pair_files import png_bytes, write_file
from sampler.prompts import PromptRecord
from sampler.set_files import SetWriter
from sampler.settings import GenerationSettings
from sampler.signature import run_signature

# Per-arm now: the run's steps and scale are each arm's own parameters.
_PER_ARM = ("num_inference_steps", "guidance_scale", "shared_prefix_steps")
NOISE = "torch.Generator('cpu').manual_seed(seed), one per prompt and seed, the same initial noise for every arm"


@dataclass
class SetSummary:
    out_dir: Path
    total: int  # prompt-seed sets assigned to this process
    complete: int  # already held every arm
    written: int  # lines appended or extended by this call
    images: int  # images added (generated or copied)
    reused: int = 0  # of `images`, copied from `reuse_from`


def finished_sets(out_dir: Path) -> dict[str, SetRecord]:
    """pair_key -> set/1 record of every line already in OUT/manifest.jsonl."""
    out_dir = Path(out_dir)
    schema = manifest_schema(out_dir)
    if schema is None and not (out_dir / MANIFEST_NAME).is_file():
        return {}
    if schema not in (None, SET_SCHEMA):
        raise GenerateError(f"{out_dir} holds a {schema} manifest (made without --arms); use another --out folder")
    try:
        return {rec.pair_key: rec for _, rec in iter_set_records(out_dir)}
    except ManifestError as e:
        raise GenerateError(f"cannot resume: {e}") from None


def check_set_resume(out_dir: Path, done: dict[str, SetRecord], arms: list[ArmSpec], shared: dict, model: dict,
                     hashes: dict[str, str]) -> None:
    """GenerateError unless the lines already in `out_dir` were made the way this run makes them."""
    baseline = next(a.name for a in arms if a.baseline)
    for rec in done.values():
        if rec.params != shared or rec.model.get("fingerprint") != model["fingerprint"]:
            what = "model" if rec.params == shared else ", ".join(sorted(
                k for k in set(shared) | set(rec.params) if shared.get(k) != rec.params.get(k)))
            raise GenerateError(f"{out_dir} already holds images made with different {what}; use another --out "
                                "folder (nothing was changed)")
        if rec.baseline != baseline:
            raise GenerateError(f"{out_dir}: its baseline arm is {rec.baseline!r}, this arms file's is {baseline!r}")
        for name, image in rec.images.items():
            if name in hashes and image.settings_hash != hashes[name]:
                raise GenerateError(f"{out_dir} already holds arm {name!r} made with other settings; rename the arm "
                                    "or use another --out folder (nothing was changed)")


def generate_sets(
    prompts: str | Path | Sequence[PromptRecord | str],
    out_dir: str | Path,
    *,
    arms: list[ArmSpec],
    model_dir: str | Path,
    settings: GenerationSettings = GenerationSettings(),
    seeds_per_prompt: int = 1,
    base_seed: int = 0,
    batch_size: int = 1,
    device: str = "auto",
    dtype: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    model_name: str | None = None,
    pipeline=None,
    on_set: Callable[[str, list[str]], None] | None = None,
    reuse_from: str | Path | None = None,
) -> SetSummary:
    """Generate the images of `arms` (sampler.arms) for `prompts` into `out_dir` (set/1).

    `settings` gives the shared size (height, width); the arms carry their own steps and
    scales. Resumable per arm (see the module docstring). `on_set(pair_key, arms added)` is
    called after each manifest write. Returns counts for this process.
    """
    from sampler.guidance import nfe_alone

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    records = check_request(prompts, out_dir, model_dir, limit, batch_size)
    if reuse_from is not None and manifest_schema(Path(reuse_from)) != SET_SCHEMA:
        raise GenerateError(f"--reuse {reuse_from}: expects a folder written by `sfgeval generate --arms` "
                            f"(an {SET_SCHEMA} manifest)")
    arms = resolve_matching(list(arms), nfe_alone)
    num_processes, process_index = process_share()
    dev = process_device(device, num_processes, process_index)
    try:
        torch_dtype = resolve_dtype(dtype, dev)
    except DeviceError as e:
        raise GenerateError(str(e)) from None
    identity = model_identity(model_dir, model_name)
    sig = run_signature(settings, model_dir, torch_dtype, identity, pipeline)
    shared = {**{k: v for k, v in sig.shared.items() if k not in _PER_ARM}, "noise": NOISE}
    hashes = {a.name: a.settings_hash({"params": shared, "model": identity["fingerprint"]}) for a in arms}
    work = shard(plan_pairs(records, seeds_per_prompt, base_seed), num_processes, process_index)
    done = finished_sets(out_dir)
    check_set_resume(out_dir, done, arms, shared, identity, hashes)

    out_dir.mkdir(parents=True, exist_ok=True)
    writer = SetWriter(out_dir)
    line = _LineMaker(arms, hashes, shared, identity)
    missing = {w.pair_key: [a for a in arms if w.pair_key not in done or a.name not in done[w.pair_key].images]
               for w in work}
    todo = [w for w in work if missing[w.pair_key]]
    summary = SetSummary(out_dir, len(work), len(work) - len(todo), 0, 0)
    if reuse_from is not None and todo:
        todo = _reuse(Path(reuse_from), todo, missing, line, writer, summary, on_set)
    if todo:
        if pipeline is None:
            pipeline = load_pipeline(model_dir, dev, torch_dtype)
        _generate_loop(pipeline, todo, missing, line, writer, summary, batch_size, sig.shared, on_set, progress,
                       process_index, num_processes)
    return summary


class _LineMaker:
    """Builds set/1 lines (as dicts) for this run."""

    def __init__(self, arms: list[ArmSpec], hashes: dict[str, str], shared: dict, identity: dict):
        self.arms = {a.name: a for a in arms}
        self.baseline = next(a.name for a in arms if a.baseline)
        self.hashes, self.shared, self.identity = hashes, shared, identity
        self.software = software_versions()

    def image(self, name: str, file: str, data: bytes, nfe: int, nfe_alone: int, **extra) -> dict[str, Any]:
        arm = self.arms[name]
        return {"file": file, "sha256": hashlib.sha256(data).hexdigest(), "method": arm.method, "params": arm.params,
                "nfe": nfe, "nfe_alone": nfe_alone, "settings_hash": self.hashes[name], **extra}

    def line(self, item: WorkItem, images: dict[str, dict], shared_steps: list[dict]) -> dict[str, Any]:
        p = item.prompt
        return {
            "schema": SET_SCHEMA, "pair_key": item.pair_key, "prompt_id": p.prompt_id, "prompt": p.prompt,
            "stratum": p.stratum, "seed": item.seed, "baseline": self.baseline, "images": images,
            "params": self.shared, "model": self.identity, "software": self.software,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "shared_steps": shared_steps, "nfe_rule": NFE_RULE,
        }


def _write_images(out_dir: Path, data: dict[str, bytes]) -> dict[str, str]:
    """Write the PNGs in random order with equal mtimes (neither tells the arms apart)."""
    order = list(data)
    for k in range(len(order) - 1, 0, -1):  # Fisher-Yates with the secrets RNG
        j = secrets.randbelow(k + 1)
        order[k], order[j] = order[j], order[k]
    files = {arm: write_file(out_dir, data[arm]) for arm in order}
    stamp = _dt.datetime.now(_dt.timezone.utc).timestamp()
    for arm in order:
        os.utime(out_dir / files[arm], (stamp, stamp))
    return files


def _generate_loop(pipeline, todo, missing, line, writer, summary, batch_size, run_shared, on_set, progress,
                   position, num_processes) -> None:
    import torch
    from tqdm.auto import tqdm

    from sampler.arm_set import generate_set

    # Items needing the same arms are batched together (in prompt order within each group).
    groups: dict[tuple[str, ...], list[WorkItem]] = {}
    for w in todo:
        groups.setdefault(tuple(a.name for a in missing[w.pair_key]), []).append(w)
    label = "sets" if num_processes == 1 else f"sets [{position}]"
    with tqdm(total=len(todo), unit="set", desc=label, position=position, disable=not progress) as bar:
        for names, items in groups.items():
            arms = [line.arms[n] for n in names]
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                out = generate_set(pipeline, [w.prompt.prompt for w in batch], arms,
                                   generator=[torch.Generator("cpu").manual_seed(w.seed) for w in batch],
                                   height=run_shared["height"], width=run_shared["width"])
                for j, w in enumerate(batch):
                    data = {n: png_bytes(out.images[n][j]) for n in names}
                    files = _write_images(writer.out_dir, data)
                    images = {n: line.image(n, files[n], data[n], out.nfe[n], out.nfe_alone[n]) for n in names}
                    added = writer.put(line.line(w, images, out.shared))
                    if added:
                        summary.written += 1
                        summary.images += len(added)
                    bar.update(1)
                    if on_set is not None:
                        on_set(w.pair_key, added)


def _reuse(source: Path, todo, missing, line, writer, summary, on_set) -> list[WorkItem]:
    """Copy the arms `source` holds with the same key, prompt and settings hash; return the
    work left (items with arms still missing, `missing` updated)."""
    theirs = finished_sets(source)
    left = []
    for w in todo:
        rec = theirs.get(w.pair_key)
        usable = [] if rec is None or rec.prompt != w.prompt.prompt else [
            a for a in missing[w.pair_key]
            if a.name in rec.images and rec.images[a.name].settings_hash == line.hashes[a.name]]
        if usable:
            data = {a.name: (source / rec.images[a.name].file).read_bytes() for a in usable}
            for name, blob in data.items():
                if hashlib.sha256(blob).hexdigest() != rec.images[name].sha256:
                    raise GenerateError(f"{source}: image of arm {name!r} of {rec.pair_key} does not match its "
                                        "sha256; not reused")
            files = _write_images(writer.out_dir, data)
            origin = {"folder": str(source.resolve()), "created_at": rec.created_at}
            images = {n: line.image(n, files[n], data[n], rec.images[n].nfe, rec.images[n].nfe_alone or 0,
                                    reused_from=origin) for n in data}
            shared = [s.model_dump() for s in rec.shared_steps if set(s.arms) <= set(data)]
            if w.pair_key in _keys(writer) or len(images) >= 2:
                added = writer.put(line.line(w, images, shared))
                summary.images += len(added)
                summary.reused += len(added)
                summary.written += bool(added)
                if on_set is not None:
                    on_set(w.pair_key, added)
                missing[w.pair_key] = [a for a in missing[w.pair_key] if a.name not in data]
            else:  # one image alone cannot start a line: generate the whole set
                for f in files.values():
                    (writer.out_dir / f).unlink(missing_ok=True)
        if missing[w.pair_key]:
            left.append(w)
    return left


def _keys(writer: SetWriter) -> set[str]:
    return set(finished_sets(writer.out_dir)) if writer.path.is_file() else set()
