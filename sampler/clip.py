"""open_clip models from a local checkpoint: text and image embeddings, CLIP score.

The paper encodes prompts and scores images with open_clip ViT-g-14. The checkpoint is a local
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from sampler.weights import WeightsError, file_fingerprint, require_file

CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pt")


def pick_device(device: str | None = None) -> torch.device:
    """``auto``/None: CUDA when present, else CPU. Any other value must name a usable torch device."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available on this machine")
    return dev


@dataclass
class OpenClip:
    """A loaded open_clip model with its image transform and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: torch.device
    identity: dict[str, Any] = field(default_factory=dict)


def clip_identity(model_name: str, weights: str | os.PathLike) -> dict[str, Any]:
    """What a cache built with this model records: architecture and weights fingerprint.

    Cheap (no model is built), so callers can check a cache before loading a multi-GB model.
    Raises WeightsError for an unknown architecture or a missing checkpoint.
    """
    import open_clip

    if model_name not in open_clip.list_models():
        raise WeightsError(
            f"unknown open_clip architecture {model_name!r} (the paper uses 'ViT-g-14'; "
            f"see open_clip.list_models())"
        )
    path = require_file(weights, f"an open_clip {model_name} checkpoint file", CHECKPOINT_NAMES)
    return {
        "library": "open_clip",
        "model": model_name,
        "weights": str(path.resolve()),
        "weights_fingerprint": file_fingerprint(path),
    }


def load_open_clip(model_name: str, weights: str | os.PathLike, device: str | None = None) -> OpenClip:
    """Build ``model_name`` (an open_clip architecture, e.g. ``ViT-g-14``) and load ``weights``.

    ``weights`` is a checkpoint file, or a folder holding one of ``CHECKPOINT_NAMES``.
    ``identity`` is `clip_identity`: caches built from this model compare it to decide whether
    they are still valid.
    """
    import open_clip

    identity = clip_identity(model_name, weights)
    path = Path(identity["weights"])
    dev = pick_device(device)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path), device=dev)
    except Exception as e:  # noqa: BLE001 -- unpickling errors and state_dict mismatches come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} is not a loadable open_clip {model_name} checkpoint: {first[:300]}") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    return OpenClip(model=model, preprocess=preprocess, tokenizer=tokenizer, device=dev, identity=identity)


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
