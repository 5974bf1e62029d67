"""Tiny random-weight models of the real architectures, saved to disk so the real loaders load them.

- open_clip: a registered custom config (a small ViT + text transformer with the real 49,408-token
  BPE vocabulary), state_dict saved to a file, loaded with ``pretrained=FILE``.
- PickScore: a tiny transformers ``CLIPModel`` + ``CLIPProcessor`` (tokenizer rebuilt offline from
  open_clip's BPE file) saved with ``save_pretrained``.
- Inception: torch-fidelity's ``FeatureExtractorInceptionV3`` (the real architecture; it has no
  small variant) with random weights, state_dict saved to a file (~95 MB; build once per session).
- A tiny manifest of PNGs written through ``sampler.manifest`` types.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLIP_NAME = "sfgeval-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip(folder: Path) -> str:
    """Write the tiny config JSON and register it with open_clip; returns the architecture name."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / f"{TINY_CLIP_NAME}.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(cfg)
    return TINY_CLIP_NAME


def save_tiny_clip(path: Path, seed: int, name: str = TINY_CLIP_NAME) -> Path:
    """Random-weight tiny open_clip checkpoint at ``path`` (a state_dict file) of the registered
    architecture ``name`` (the tiny config)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    torch.save(model.state_dict(), path)
    return path


def save_tiny_pickscore(folder: Path, seed: int) -> Path:
    """A tiny HF ``CLIPModel`` + ``CLIPProcessor`` folder, the layout of yuvalkirstain/PickScore_v1."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sampler.tiny import build_clip_tokenizer  # the real CLIP BPE, rebuilt offline

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_clip_tokenizer(folder)
    img = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=img, tokenizer=tok).save_pretrained(folder)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    return folder


def save_random_inception(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's InceptionV3 feature extractor with random weights, saved as a state_dict file.

    The class loads weights in its constructor (from a URL when no path is given), so the random
    state_dict is built from the layer definitions without ever calling that loader.
    """
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):  # the constructor's load: skip it
            if state_dict is None:
                return None
            return super().load_state_dict(state_dict, *args, **kwargs)

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    original = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: None  # never touch the network
    try:
        net = _Unloaded("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url = original
    # He-initialised convolutions and identity BatchNorm keep activations near unit scale through
    # the ~95 layers (PyTorch's default init shrinks them into denormals: wrong and very slow on
    # CPU); a larger fc gives logits whose softmax is not uniform, so IS differs from 1.
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("conv.weight"):
            fan_in = v[0].numel()
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif k.endswith(("running_var", "bn.weight")):
            sd[k] = torch.ones_like(v)
        elif k.endswith(("running_mean", "bn.bias")):
            sd[k] = torch.zeros_like(v)
        elif k == "fc.weight":
            sd[k] = torch.randn(v.shape, generator=g) * (4.0 / v.shape[1]) ** 0.5
        else:
            sd[k] = v.clone()
    torch.save(sd, path)
    return path


def _png(path: Path, rgb: np.ndarray) -> str:
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(path, format="PNG")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_tiny_manifest(folder: Path, prompts: list[tuple[str, str]], seeds=(0,), size: int = 48, seed: int = 0,
                        treatment_equals_baseline: bool = False) -> Path:
    """A valid pair-set folder: one record per (prompt, seed), random PNGs with opaque names."""
    from sampler.manifest import MANIFEST_NAME, ArmImage, PairRecord

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for pid, text in prompts:
        for s in seeds:
            base = rng.integers(0, 256, size=(size, size, 3))
            treat = base if treatment_equals_baseline else np.clip(base + rng.integers(-60, 60, size=base.shape), 0, 255)
            names = [rng.bytes(16).hex() + ".png" for _ in range(2)]
            sha_b = _png(folder / names[0], base)
            sha_t = _png(folder / names[1], treat) if not treatment_equals_baseline else _png(folder / names[1], base)
            rec = PairRecord.model_validate(
                {
                    "schema": "sfgeval.pair/1",
                    "pair_key": f"{pid}:{s}",
                    "prompt_id": pid,
                    "prompt": text,
                    "seed": s,
                    "baseline": ArmImage(arm="cfg", file=names[0], sha256=sha_b, params={"guidance_scale": 7.5}),
                    "treatment": ArmImage(arm="sfg", file=names[1], sha256=sha_t, params={"sfg_scale": 10}),
                    "params": {"steps": 2},
                    "model": {"name_or_path": "tiny", "fingerprint": "0" * 8},
                }
            )
            lines.append(rec.to_json())
    (folder / MANIFEST_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_reference_images(folder: Path, n: int, seed: int = 1, size=(64, 40)) -> Path:
    """``n`` random non-square JPEG/PNG reference images (COCO images are not square)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3)).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"ref{i:03d}.{'jpg' if i % 2 else 'png'}")
    return folder
