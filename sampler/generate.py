"""The pair generator: prompts x seeds -> CFG/SFG image pairs + `manifest.jsonl` (sampler.manifest).

Output folder layout and record format: see `sampler.manifest`. Baseline arm 'cfg', treatment arm
'sfg'. Crash safety: each image is written to a hidden temporary file, fsynced and renamed into
place; a pair's manifest line is appended (under a file lock, flushed and fsynced) only after both
images (and its map) exist, so a killed run leaves a manifest whose every line is complete, and a
re-run skips the pair keys already in it. Under `accelerate launch` the pair list is split into
contiguous shards, one per process, before finished pairs are skipped (every process computes the
same split), and all processes append to the one manifest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sampler.manifest import MANIFEST_NAME, SCHEMA, ManifestError, PairRecord, iter_records
from sampler.prompts import PromptRecord, read_prompts

T = TypeVar("T")
BASELINE_ARM = "cfg"
TREATMENT_ARM = "sfg"
MAPS_DIR = "maps"
_MODEL_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class GenerateError(ValueError):
    """Bad input to the generator (model folder, device, prompts, output folder); says what."""


@dataclass(frozen=True)
class GenerationSettings:
    """Parameters of one pair set (spec defaults). `sfg_start_step` None means T // 2;
    height/width None mean the model's native size (512 for SD 1.x, 64 for the tiny model)."""

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    sfg_scale: float = 10.0
    sfg_guidance_scale: float = 3.0
    sfg_start_step: int | None = None
    token_select: str = "head_mean"
    include_eos: bool = False
    height: int | None = None
    width: int | None = None

    def start_step(self) -> int:
        return self.num_inference_steps // 2 if self.sfg_start_step is None else self.sfg_start_step


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
    written: int  # made by this call


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


# -- model identity ------------------------------------------------------------------------------
def check_model_folder(model_dir: Path) -> None:
    """Raise GenerateError unless `model_dir` looks like a diffusers SD pipeline folder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise GenerateError(f"model folder {model_dir} does not exist")
    index = model_dir / "model_index.json"
    if not index.is_file():
        raise GenerateError(f"{model_dir} is not a diffusers pipeline folder (no model_index.json)")
    try:
        json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise GenerateError(f"{index}: not valid JSON ({e})") from None
    missing = [p for p in _MODEL_PARTS if not (model_dir / p).is_dir()]
    if missing:
        raise GenerateError(f"{model_dir}: missing component folder(s): {', '.join(missing)}")


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over every config/tokenizer file (path and content) and every weight file's path
    and size: changes when the architecture, tokenizer, scheduler or weights files change,
    without reading gigabytes of weights."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode() + b"\0")
        if path.suffix in {".json", ".txt", ".model"}:
            h.update(path.read_bytes())
        else:
            h.update(str(path.stat().st_size).encode())
        h.update(b"\0")
    return h.hexdigest()


def model_identity(model_dir: Path, name: str | None = None) -> dict[str, Any]:
    model_dir = Path(model_dir)
    index = json.loads((model_dir / "model_index.json").read_text(encoding="utf-8"))
    return {
        "name_or_path": name or str(model_dir.resolve()),
        "fingerprint": model_fingerprint(model_dir),
        "pipeline_class": index.get("_class_name"),
        "scheduler": (index.get("scheduler") or [None, None])[1],
    }


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("sfgeval", "torch", "diffusers", "transformers", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# -- devices -------------------------------------------------------------------------------------
def resolve_device(device: str = "auto"):
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps', checked."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise GenerateError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GenerateError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GenerateError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise GenerateError("device 'mps' requested but MPS is not available here")
    elif dev.type != "cpu":
        raise GenerateError(f"unsupported device {device!r} (use auto, cpu, cuda, cuda:N or mps)")
    return dev


def resolve_dtype(dtype: str, device) -> "Any":
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise GenerateError(f"unknown dtype {dtype!r} (use auto, float32, float16 or bfloat16)")
    return table[dtype]


def load_pipeline(model_dir: Path, device, dtype):
    """SFGPipeline from a local diffusers folder; GenerateError with the cause when that fails."""
    from sampler.pipeline import SFGPipeline

    check_model_folder(model_dir)
    try:
        return SFGPipeline.from_pretrained(model_dir, device=device, torch_dtype=dtype)
    except Exception as e:  # diffusers raises many types for a broken folder
        raise GenerateError(f"could not load the model in {model_dir}: {type(e).__name__}: {e}") from e


# -- files ---------------------------------------------------------------------------------------
def png_bytes(image) -> bytes:
    """PNG of the pixels only: a fresh image without any text/metadata chunks."""
    import numpy as np
    from PIL import Image

    clean = Image.fromarray(np.asarray(image.convert("RGB")))
    buf = io.BytesIO()
    clean.save(buf, format="PNG")
    return buf.getvalue()


def write_file(folder: Path, data: bytes, suffix: str = ".png") -> str:
    """Write `data` under an opaque random name (32 hex + suffix) via temp file + fsync + rename;
    return the name."""
    name = secrets.token_hex(16) + suffix
    tmp = folder / f".tmp-{secrets.token_hex(8)}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    return name


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class _ManifestKeys:
    """The pair keys in a manifest that other processes may be appending to. `refresh` reads
    only the bytes added since the last call; call it under the manifest lock."""

    def __init__(self, path: Path):
        self.path, self.offset, self.keys = path, 0, set()

    def refresh(self) -> set[str]:
        if self.path.is_file():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.offset += len(complete)
            for line in complete.splitlines():
                if line.strip():
                    try:
                        self.keys.add(json.loads(line)["pair_key"])
                    except (ValueError, KeyError, TypeError):
                        pass  # iter_records reports bad lines; here only keys matter
        return self.keys


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


def _plain_json(value: Any) -> Any:
    """Strict-JSON values (a manifest is read by other tools): tuples to lists, non-finite floats
    (e.g. DPMSolver's lambda_min_clipped = -inf) and other objects to strings."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _signature(rec: dict[str, Any]) -> dict[str, Any]:
    """What must not change between runs writing into one folder."""
    return {
        "params": rec["params"],
        "baseline": rec["baseline"]["params"],
        "treatment": rec["treatment"]["params"],
        "model": rec["model"]["fingerprint"],
    }


def finished_pairs(out_dir: Path) -> dict[str, PairRecord]:
    """pair_key -> record of every pair already in OUT/manifest.jsonl (empty when none)."""
    if not (Path(out_dir) / MANIFEST_NAME).is_file():
        return {}
    try:
        return {rec.pair_key: rec for _, rec in iter_records(Path(out_dir))}
    except ManifestError as e:
        raise GenerateError(f"cannot resume: {e}") from None


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
) -> GenerateSummary:
    """Generate CFG/SFG pairs for `prompts` (a prompt file path, PromptRecords, or plain strings,
    whose ids are then 1, 2, ...) into `out_dir`.

    Resumable: pairs whose key is already in the manifest are skipped; a folder holding pairs
    made with other settings or another model is refused. `limit` keeps the first N prompts.
    `pipeline` (an SFGPipeline already loaded from `model_dir`) skips loading. `on_pair` is
    called after each manifest line is appended. Returns counts for this process.
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

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
    if settings.token_select not in ("head_mean", "per_head"):
        raise GenerateError(f"token_select must be head_mean or per_head, not {settings.token_select!r}")
    if settings.num_inference_steps < 1:
        raise GenerateError("steps must be at least 1")
    model_dir = Path(model_dir)
    check_model_folder(model_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenerateError(f"output path {out_dir} exists and is not a folder")

    num_processes, process_index = process_share()
    if num_processes > 1 and PartialState().num_processes > 1:
        dev = PartialState().device
    elif num_processes > 1 and device == "auto" and torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", process_index)) % torch.cuda.device_count())
    else:
        dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if pipeline is None:
        pipeline = load_pipeline(model_dir, dev, torch_dtype)
    pipe = pipeline.pipe
    default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    height, width = settings.height or default_size, settings.width or default_size
    if height % 8 or width % 8:
        raise GenerateError(f"height and width must be multiples of 8 (got {height}x{width})")

    work = shard(plan_pairs(records, seeds_per_prompt, base_seed), num_processes, process_index)
    out_dir.mkdir(parents=True, exist_ok=True)
    if save_maps:
        (out_dir / MAPS_DIR).mkdir(exist_ok=True)
    manifest = out_dir / MANIFEST_NAME

    from filelock import FileLock

    lock = FileLock(str(out_dir / ".manifest.lock"))
    identity = model_identity(model_dir, model_name)
    t_s = settings.start_step()
    shared = {
        "num_inference_steps": settings.num_inference_steps,
        "guidance_scale": settings.guidance_scale,
        "shared_prefix_steps": t_s,
        "height": height,
        "width": width,
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_config": {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")},
        "dtype": str(torch_dtype).removeprefix("torch."),
        "noise": "torch.Generator('cpu').manual_seed(seed), one per pair",
    }
    baseline_params = {"guidance": "cfg", "guidance_scale": settings.guidance_scale}
    treatment_params = {
        "guidance": "sfg",
        "guidance_scale": settings.guidance_scale,
        "sfg_scale": settings.sfg_scale,
        "sfg_guidance_scale": settings.sfg_guidance_scale,
        "sfg_start_step": t_s,
        "token_select": settings.token_select,
        "include_eos": settings.include_eos,
    }
    shared = _plain_json(shared)
    with lock:
        done = finished_pairs(out_dir)
        keys = _ManifestKeys(manifest)
        keys.refresh()
    mine = {
        "params": shared,
        "baseline": baseline_params,
        "treatment": treatment_params,
        "model": identity["fingerprint"],
    }
    for rec in done.values():
        theirs = _signature(rec.model_dump(by_alias=True))
        if theirs != mine:
            diff = sorted(k for k in mine if mine[k] != theirs[k])
            raise GenerateError(
                f"{out_dir} already holds pairs made with different {', '.join(diff)}; "
                "use another --out folder (nothing was changed)"
            )
        break
    todo = [w for w in work if w.pair_key not in done]
    software = software_versions()

    bar = tqdm(
        total=len(work),
        initial=len(work) - len(todo),
        unit="pair",
        desc="pairs" if num_processes == 1 else f"pairs [{process_index}]",
        position=process_index,
        disable=not progress,
    )
    written = 0
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            out = pipeline.pairs(
                [w.prompt.prompt for w in batch],
                num_inference_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale,
                sfg_scale=settings.sfg_scale,
                sfg_guidance_scale=settings.sfg_guidance_scale,
                sfg_start_step=t_s,
                token_select=settings.token_select,
                include_eos=settings.include_eos,
                generator=[torch.Generator("cpu").manual_seed(w.seed) for w in batch],
                height=height,
                width=width,
                record_token_maps=save_maps,
            )
            for j, w in enumerate(batch):
                images = {arm: out.images[arm][j] for arm in (BASELINE_ARM, TREATMENT_ARM)}
                record = _write_pair(
                    out_dir, w, images, out.token_maps[j] if save_maps else None, shared,
                    baseline_params, treatment_params, identity, software,
                )
                with lock:
                    # Another run writing into this folder may have made this pair meanwhile:
                    # a pair key is never appended twice.
                    duplicate = w.pair_key in keys.refresh()
                    if not duplicate:
                        _append_line(manifest, record.to_json())
                        keys.keys.add(w.pair_key)
                if duplicate:
                    _remove_files(out_dir, record)
                    continue
                written += 1
                bar.update(1)
                if on_pair is not None:
                    on_pair(record)
    finally:
        bar.close()
    return GenerateSummary(out_dir=out_dir, total=len(work), skipped=len(work) - len(todo), written=written)


def _remove_files(out_dir: Path, record: PairRecord) -> None:
    for name in (record.baseline.file, record.treatment.file, record.map_file):
        if name:
            (out_dir / name).unlink(missing_ok=True)


def _write_pair(out_dir, item, images, token_map, shared, baseline_params, treatment_params, identity, software):
    """Write both images (in random order, equal mtimes) and the optional map; return the record."""
    data = {arm: png_bytes(img) for arm, img in images.items()}
    order = [BASELINE_ARM, TREATMENT_ARM]
    if secrets.randbelow(2):
        order.reverse()  # creation order must not tell the arms apart
    files = {arm: write_file(out_dir, data[arm]) for arm in order}
    stamp = _dt.datetime.now(_dt.timezone.utc).timestamp()
    for arm in order:
        os.utime(out_dir / files[arm], (stamp, stamp))
    map_file = None
    if token_map is not None:
        from sampler.token_maps import render_token_map

        png = render_token_map(token_map, images[BASELINE_ARM], images[TREATMENT_ARM])
        map_file = f"{MAPS_DIR}/" + write_file(out_dir / MAPS_DIR, png)
    p = item.prompt
    return PairRecord.model_validate(
        {
            "schema": SCHEMA,
            "pair_key": item.pair_key,
            "prompt_id": p.prompt_id,
            "prompt": p.prompt,
            "stratum": p.stratum,
            "seed": item.seed,
            "baseline": {
                "arm": BASELINE_ARM,
                "file": files[BASELINE_ARM],
                "sha256": hashlib.sha256(data[BASELINE_ARM]).hexdigest(),
                "params": baseline_params,
            },
            "treatment": {
                "arm": TREATMENT_ARM,
                "file": files[TREATMENT_ARM],
                "sha256": hashlib.sha256(data[TREATMENT_ARM]).hexdigest(),
                "params": treatment_params,
            },
            "params": shared,
            "model": identity,
            "software": software,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "map_file": map_file,
        }
    )
