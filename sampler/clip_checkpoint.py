"""Which open_clip model a command means, and whether a checkpoint fits it, before building it.

An architecture is named three ways on the command line: an open_clip name (`ViT-g-14`), a
config file (`--clip-config FILE.json`, registered with open_clip under the file's stem, e.g. a
fine-tuned or custom architecture), or open_clip's `local-dir:PATH` (a folder holding
`open_clip_config.json` and the checkpoint). `check_checkpoint` reads only the checkpoint's
tensor shapes (safetensors header or a memory-mapped torch file) and compares them with the
architecture's config, so a checkpoint of another architecture is refused in seconds with the
names of the architectures it does fit, instead of after building a multi-GB model.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampler.weights import WeightsError, file_fingerprint, require_file

DEFAULT_CLIP_MODEL = "ViT-g-14"
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pt")
LOCAL_DIR = "local-dir:"


@dataclass(frozen=True)
class ClipSpec:
    """A resolved open_clip model: the name open_clip builds, its config, the checkpoint file."""

    name: str  # an open_clip architecture name or 'local-dir:PATH'
    config: dict[str, Any]  # the model config (embed_dim, vision_cfg, text_cfg)
    weights: Path

    def identity(self) -> dict[str, Any]:
        """What a cache built with this model records (architecture and weights fingerprint)."""
        out = {"library": "open_clip", "model": self.name, "weights": str(self.weights.resolve()),
               "weights_fingerprint": file_fingerprint(self.weights)}
        if self.name.startswith(LOCAL_DIR) or self.name not in _builtin_models():
            out["config"] = self.config  # a custom architecture: its shape is part of its identity
        return out


def _builtin_models() -> set[str]:
    import open_clip

    folder = Path(open_clip.__file__).parent / "model_configs"
    return {p.stem for p in folder.glob("*.json")}


def _model_cfg(data: Any, where: str) -> dict[str, Any]:
    cfg = data.get("model_cfg", data) if isinstance(data, dict) else None
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise WeightsError(f"{where}: not an open_clip model config (needs embed_dim, vision_cfg and text_cfg)")
    return cfg


def resolve_clip(model: str | None, weights: str | os.PathLike | None, config_file: str | os.PathLike | None = None) -> ClipSpec:
    """The model meant by `--clip-model`, `--clip-weights` and `--clip-config` (see the module doc).

    Raises WeightsError naming what is missing or unknown. Builds nothing.
    """
    import open_clip

    if config_file is not None:
        path = Path(config_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise WeightsError(f"--clip-config {path}: cannot read it as JSON ({e})") from None
        if isinstance(data, dict) and "model_cfg" in data:
            raise WeightsError(f"{path}: an open_clip_config.json (with model_cfg): use --clip-model local-dir:{path.parent}")
        _model_cfg(data, str(path))
        if model not in (None, path.stem):
            raise WeightsError(f"--clip-config {path} defines architecture {path.stem!r}, but --clip-model says {model!r}")
        open_clip.add_model_config(path)  # registered under the file's stem
        model = path.stem
    model = model or DEFAULT_CLIP_MODEL
    if model.startswith(LOCAL_DIR):
        folder = Path(model[len(LOCAL_DIR):])
        cfg_path = folder / "open_clip_config.json"
        if not cfg_path.is_file():
            raise WeightsError(f"{model}: expected a folder holding open_clip_config.json and the checkpoint")
        cfg = _model_cfg(json.loads(cfg_path.read_text(encoding="utf-8")), str(cfg_path))
        if weights is not None:
            raise WeightsError(f"{model} holds its own checkpoint: leave out --clip-weights")
        weights = folder
    elif model not in open_clip.list_models():
        raise WeightsError(
            f"unknown open_clip architecture {model!r} (the paper uses 'ViT-g-14'; see open_clip.list_models(); "
            "for a custom one give --clip-config FILE.json or --clip-model local-dir:FOLDER)"
        )
    else:
        cfg = open_clip.get_model_config(model)
    if weights is None:
        raise WeightsError(f"give --clip-weights: the open_clip {model} checkpoint file")
    path = require_file(weights, f"an open_clip {model} checkpoint file", CHECKPOINT_NAMES)
    return ClipSpec(model, cfg, path)


# -- shapes ------------------------------------------------------------------------------------
def checkpoint_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, without reading the tensors (safetensors header, or mmap torch file)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    import torch

    try:
        sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001 -- old (non-zip) files cannot be memory-mapped; some cannot be read at all
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path} is not a loadable open_clip checkpoint: {first[:300]}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} is not a loadable open_clip checkpoint: no state_dict inside")
    return {re.sub(r"^module\.", "", k): tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}


def _layers(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in shapes if (m := pat.match(k))})


def shape_summary(shapes: dict[str, tuple[int, ...]]) -> dict[str, int] | None:
    """The dimensions that tell standard CLIP architectures apart, or None for other layouts."""
    if not _layers(shapes, "visual.transformer.resblocks."):
        return None  # not a ViT image tower (ResNet, timm): left to open_clip
    try:
        conv = shapes["visual.conv1.weight"]
        return {
            "embed_dim": shapes["text_projection"][1],
            "text_width": shapes["positional_embedding"][1],
            "context_length": shapes["positional_embedding"][0],
            "text_layers": _layers(shapes, "transformer.resblocks."),
            "vision_width": conv[0],
            "patch_size": conv[2],
            "vision_layers": _layers(shapes, "visual.transformer.resblocks."),
        }
    except (KeyError, IndexError):
        return None


def config_summary(cfg: dict[str, Any]) -> dict[str, int] | None:
    """`shape_summary` as the config says it (None for timm or Hugging Face towers)."""
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if v.get("timm_model_name") or t.get("hf_model_name") or not isinstance(v.get("layers"), int):
        return None
    patch = v.get("patch_size")
    return {
        "embed_dim": cfg.get("embed_dim"),
        "text_width": t.get("width", 512),
        "context_length": t.get("context_length", 77),
        "text_layers": t.get("layers", 12),
        "vision_width": v.get("width", 768),
        "patch_size": patch[0] if isinstance(patch, (list, tuple)) else patch,
        "vision_layers": v.get("layers"),
    }


def matching_architectures(summary: dict[str, int]) -> list[str]:
    import open_clip

    return [name for name in open_clip.list_models() if config_summary(open_clip.get_model_config(name) or {}) == summary]


def check_checkpoint(spec: ClipSpec) -> None:
    """WeightsError, with the architectures the checkpoint does fit, unless it fits `spec`."""
    found = shape_summary(checkpoint_shapes(spec.weights))
    expected = config_summary(spec.config)
    if found is None or expected is None or found == expected:
        return  # a layout we cannot summarise is left to open_clip's own loading
    diff = ", ".join(f"{k} {found[k]} (expected {expected[k]})" for k in expected if found[k] != expected[k])
    fits = matching_architectures(found)
    hint = (f"did you mean --clip-model {' or '.join(fits[:3])}?" if fits else
            "no registered architecture fits it: describe it with --clip-config FILE.json")
    raise WeightsError(f"{spec.weights} is not an open_clip {spec.name} checkpoint: {diff}; {hint}")
