"""A local diffusers Stable Diffusion 1.x or SDXL folder: checks, identity, configs, loading.

Everything here but `load_pipeline` reads only config files and file sizes, so a wrong folder or
a resume with other settings fails in seconds, before gigabytes of weights load.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

_MODEL_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_SDXL_PARTS = ("text_encoder_2", "tokenizer_2")  # model_index.json's _class_name names an SDXL pipeline


class GenerateError(ValueError):
    """Bad input to the generator (model folder, device, prompts, output folder); says what."""


def check_model_folder(model_dir: Path) -> None:
    """Raise GenerateError unless `model_dir` looks like a diffusers SD 1.x or SDXL pipeline folder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise GenerateError(f"model folder {model_dir} does not exist")
    index = model_dir / "model_index.json"
    if not index.is_file():
        raise GenerateError(f"{model_dir} is not a diffusers pipeline folder (no model_index.json)")
    try:
        if not isinstance(json.loads(index.read_text(encoding="utf-8")), dict):
            raise ValueError("expected a JSON object")
    except (ValueError, OSError) as e:
        raise GenerateError(f"{index}: not valid JSON ({e})") from None
    index_json = json.loads(index.read_text(encoding="utf-8"))
    parts = _MODEL_PARTS + (_SDXL_PARTS if "XL" in str(index_json.get("_class_name", "")) else ())
    missing = [p for p in parts if not (model_dir / p).is_dir()]
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


def load_pipeline(model_dir: Path, device, dtype):
    """SFGPipeline from a local diffusers folder; GenerateError with the cause when that fails."""
    from sampler.pipeline import SFGPipeline

    check_model_folder(model_dir)
    try:
        return SFGPipeline.from_pretrained(model_dir, device=device, torch_dtype=dtype)
    except Exception as e:  # diffusers raises many types for a broken folder
        raise GenerateError(f"could not load the model in {model_dir}: {type(e).__name__}: {e}") from e


def scheduler_facts(model_dir: Path, pipeline) -> tuple[str, dict[str, Any], int]:
    """(scheduler class name, its config, native image side in pixels) of the loaded pipeline, or
    read from the model folder's config files without loading any weights."""
    if pipeline is not None:
        pipe = pipeline.pipe
        return type(pipe.scheduler).__name__, dict(pipe.scheduler.config), pipe.unet.config.sample_size * pipe.vae_scale_factor
    import diffusers

    try:
        index = json.loads((model_dir / "model_index.json").read_text(encoding="utf-8"))
        name = index["scheduler"][1]
        scheduler = getattr(diffusers, name).from_pretrained(str(model_dir), subfolder="scheduler")
        unet = json.loads((model_dir / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((model_dir / "vae" / "config.json").read_text(encoding="utf-8"))
        size = int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except Exception as e:  # a broken folder fails in many ways; say which file
        raise GenerateError(f"could not read the model configuration in {model_dir}: {type(e).__name__}: {e}") from None
    return name, dict(scheduler.config), size


