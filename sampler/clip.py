"""open_clip models from a local checkpoint: text and image embeddings, CLIP score.

The paper encodes prompts and scores images with open_clip ViT-g-14; any open_clip architecture
works (`sampler.clip_checkpoint`: names, --clip-config files, local-dir:). The checkpoint is a local
file (``open_clip_pytorch_model.bin`` or ``open_clip_model.safetensors`` from the
``laion/CLIP-ViT-g-14-laion2B-s34B-b88K`` release) or the folder holding it; nothing downloads.

Conventions: embeddings are float32 NumPy arrays ``[N, D]`` with unit L2 norm rows. The CLIP
score is ``100 * cosine(image, text)`` without clamping at zero (torchmetrics' ``CLIPScore``
clamps at 0; for real models the cosine is positive anyway, and unclamped keeps means unbiased
for random-weight test models).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from sampler.devices import resolve_device
from sampler.clip_checkpoint import CHECKPOINT_NAMES, LOCAL_DIR, ClipSpec, check_checkpoint, resolve_clip
from sampler.weights import WeightsError

__all__ = ["CHECKPOINT_NAMES", "ClipSpec", "OpenClip", "clip_identity", "clip_scores", "encode_images", "encode_texts",
           "load_open_clip", "open_rgb"]


@dataclass
class OpenClip:
    """A loaded open_clip model with its image transform and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: torch.device
    identity: dict[str, Any] = field(default_factory=dict)


def clip_identity(model_name: str | None, weights: str | os.PathLike | None, config: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a cache built with this model records: architecture and weights fingerprint.

    Cheap (no model is built), so callers can check a cache before loading a multi-GB model.
    Raises WeightsError for an unknown architecture or a missing checkpoint.
    """
    return resolve_clip(model_name, weights, config).identity()


def load_open_clip(model: str | ClipSpec | None, weights: str | os.PathLike | None = None, device: str | None = None,
                   config: str | os.PathLike | None = None) -> OpenClip:
    """Build the open_clip model (an architecture name such as ``ViT-g-14``, ``local-dir:PATH``, a
    `--clip-config` file's architecture, or a resolved `ClipSpec`) and load its checkpoint.

    ``weights`` is a checkpoint file, or a folder holding one of ``CHECKPOINT_NAMES``. The
    checkpoint's shapes are checked against the architecture first (`check_checkpoint`: seconds,
    with a hint naming the architectures it fits). ``identity`` is `ClipSpec.identity`: caches
    built from this model compare it to decide whether they are still valid.
    """
    import open_clip

    spec = model if isinstance(model, ClipSpec) else resolve_clip(model, weights, config)
    dev = resolve_device(device)
    check_checkpoint(spec)
    local = spec.name.startswith(LOCAL_DIR)
    try:
        built, _, preprocess = open_clip.create_model_and_transforms(
            spec.name, pretrained=None if local else str(spec.weights), device=dev
        )
    except Exception as e:  # noqa: BLE001 -- unpickling errors and state_dict mismatches come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{spec.weights} is not a loadable open_clip {spec.name} checkpoint: {first[:300]}") from None
    built.eval()
    tokenizer = open_clip.get_tokenizer(spec.name)
    return OpenClip(model=built, preprocess=preprocess, tokenizer=tokenizer, device=dev, identity=spec.identity())


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.inference_mode()
def encode_texts(clip: OpenClip, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Unit-norm text embeddings ``[len(texts), D]`` float32; texts longer than the context are truncated."""
    out = []
    with tqdm(total=len(texts), desc="encode prompts", unit="prompt", disable=not progress) as bar:
        for chunk in _batches(list(texts), batch_size):
            tokens = clip.tokenizer(list(chunk)).to(clip.device)
            emb = clip.model.encode_text(tokens, normalize=True)
            out.append(emb.float().cpu().numpy())
            bar.update(len(chunk))
    if not out:
        raise ValueError("no texts to encode")
    return np.concatenate(out)


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """An image file as RGB (PNG with alpha, greyscale and palette images converted)."""
    with Image.open(path) as im:
        return im.convert("RGB")


@torch.inference_mode()
def encode_images(
    clip: OpenClip, paths: Sequence[str | os.PathLike], batch_size: int = 64, progress: bool = True, desc: str = "encode images"
) -> np.ndarray:
    """Unit-norm image embeddings ``[len(paths), D]`` float32, with the model's own transform."""
    out = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for chunk in _batches(list(paths), batch_size):
            x = torch.stack([clip.preprocess(open_rgb(p)) for p in chunk]).to(clip.device)
            out.append(clip.model.encode_image(x, normalize=True).float().cpu().numpy())
            bar.update(len(chunk))
    if not out:
        raise ValueError("no images to encode")
    return np.concatenate(out)


def clip_scores(
    clip: OpenClip,
    paths: Sequence[str | os.PathLike],
    texts: Sequence[str],
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "CLIP score",
) -> np.ndarray:
    """``100 * cosine(image_i, text_i)`` for each (image, text) pair, float64 ``[N]``."""
    if len(paths) != len(texts):
        raise ValueError(f"{len(paths)} images but {len(texts)} texts")
    img = encode_images(clip, paths, batch_size, progress, desc=desc)
    txt = encode_texts(clip, texts, batch_size, progress=False)
    return 100.0 * np.sum(img.astype(np.float64) * txt.astype(np.float64), axis=1)
