"""Objective metrics of the paper's Tables 1 and 2: FID, CLIP score, Inception Score, PickScore win rate.

FID and IS: torchmetrics' ``FrechetInceptionDistance`` and ``InceptionScore`` (float64
statistics) computed on features of torch-fidelity's ``FeatureExtractorInceptionV3`` (the
TF-ported Inception of the original FID code, the same network torchmetrics uses by default),
with weights from a local file (``pt_inception-2015-12-05-6726825d.pth``, the file torch-fidelity
and torchmetrics would download). Each image goes through Inception once for both metrics.

Image preparation (``resize`` modes, recorded in every table):
- every image is converted to RGB and centre-cropped to a square (reference photos are not square);
- ``pil-bicubic`` (default): resized to 299x299 with PIL bicubic (antialiased, as clean-fid's
  "clean" mode);
- ``torch-antialias``: ``torch.nn.functional.interpolate(bilinear, antialias=True)`` to 299x299
  (torchmetrics' default resize), rounded to uint8;
- ``tf1``: the native square goes to the extractor's TF1-compatible bilinear resize without
  antialiasing (the original TensorFlow FID code; aliases when downscaling 512 -> 299).
Images already 299x299 are not resized in any mode.

Score conventions: CLIP score is ``100 * cosine`` (see `sampler.clip`); PickScore is
``logit_scale.exp() * cosine`` as in the PickScore paper; win rate orients treatment vs baseline.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sampler.weights import WeightsError, require_file, require_folder

RESIZE_MODES = ("pil-bicubic", "torch-antialias", "tf1")
INCEPTION_SIZE = 299
INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# ---- pure functions ------------------------------------------------------------------------


@dataclass(frozen=True)
class WinRate:
    """Treatment vs baseline over paired scores. Rates are fractions of all ``n`` pairs.

    ``ci_low``/``ci_high``: Wilson score 95% interval of ``win_rate`` (wins out of n, ties count
    as non-wins), assuming independent pairs.
    """

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    tie_rate: float
    loss_rate: float
    ci_low: float
    ci_high: float


def win_rate(treatment: Sequence[float], baseline: Sequence[float], tie_tolerance: float = 0.0) -> WinRate:
    """Count pairs where ``treatment > baseline`` (win), ``|t - b| <= tie_tolerance`` (tie), else loss."""
    from scipy.stats import binomtest

    t = np.asarray(treatment, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if t.shape != b.shape or t.ndim != 1:
        raise ValueError(f"need two equal-length score lists, got {t.shape} and {b.shape}")
    n = len(t)
    if n == 0:
        raise ValueError("no pairs to compare")
    diff = t - b
    ties = int(np.sum(np.abs(diff) <= tie_tolerance))
    wins = int(np.sum(diff > tie_tolerance))
    losses = n - wins - ties
    ci = binomtest(wins, n).proportion_ci(confidence_level=0.95, method="wilson")
    return WinRate(n, wins, ties, losses, wins / n, ties / n, losses / n, float(ci.low), float(ci.high))


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """PIL crop box (left, upper, right, lower) of the largest centred square."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise ValueError(f"{p}: reference image folder not found")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


# ---- Inception: FID and IS -------------------------------------------------------------------


FID_FEATURES = (2048, 768, 192, 64)


def load_inception(weights: str | os.PathLike, device: Any = "cpu", fid_features: int = 2048):
    """torch-fidelity's FeatureExtractorInceptionV3 with weights from a local file.

    Called on uint8 ``[B, 3, H, W]`` it returns ``(features [B, fid_features], logits_unbiased
    [B, 1008])``: one forward pass serves both FID and IS. ``fid_features`` is the standard 2048
    (pool3) or one of torchmetrics' smaller feature layers (768, 192, 64). It resizes to 299x299 with its TF1-compatible
    bilinear resize, which is the identity for inputs already 299x299.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if fid_features not in FID_FEATURES:
        raise ValueError(f"FID features must be one of {FID_FEATURES}, got {fid_features}")
    path = require_file(weights, f"the torch-fidelity InceptionV3 weights file ({INCEPTION_WEIGHTS_NAME})", (INCEPTION_WEIGHTS_NAME,))
    try:
        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", [str(fid_features), "logits_unbiased"], feature_extractor_weights_path=str(path)
        )
        net.fid_features = fid_features
    except Exception as e:  # noqa: BLE001 -- unpickling errors and state_dict mismatches come in many types
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} is not torch-fidelity InceptionV3 weights ({INCEPTION_WEIGHTS_NAME}): {msg[:300]}") from None
    return net.to(device).eval()


def _prepare(im, resize: str) -> np.ndarray:
    """PIL image -> uint8 ``[H, W, 3]`` centre square, resized per ``resize`` (see module docstring)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    im = im.convert("RGB")
    im = im.crop(center_crop_box(*im.size))
    if im.size == (INCEPTION_SIZE, INCEPTION_SIZE) or resize == "tf1":
        return np.asarray(im, dtype=np.uint8)
    if resize == "pil-bicubic":
        return np.asarray(im.resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.Resampling.BICUBIC), dtype=np.uint8)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def inception_batches(
    paths: Sequence[str | os.PathLike], resize: str, batch_size: int
) -> Iterable[tuple[int, torch.Tensor]]:  # noqa: F821
    """uint8 ``[B, 3, H, W]`` batches of prepared images (299x299 unless ``tf1``).

    Batches hold images of one size; yields (images consumed so far, batch).
    """
    import torch
    from PIL import Image

    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    pending: dict[tuple[int, int], list[torch.Tensor]] = {}
    consumed = 0
    for p in paths:
        with Image.open(p) as im:
            arr = _prepare(im, resize)
        consumed += 1
        key = arr.shape[:2]
        pending.setdefault(key, []).append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        if len(pending[key]) >= batch_size:
            yield consumed, torch.stack(pending.pop(key))
    for batch in pending.values():
        yield consumed, torch.stack(batch)


def _precomputed(num_features: int):
    """A feature 'network' for torchmetrics that passes precomputed features through."""
    import torch

    class Precomputed(torch.nn.Identity):
        pass

    mod = Precomputed()
    mod.num_features = num_features
    return mod


def inception_metrics(
    net,
    reference: Sequence[str | os.PathLike] | None,
    arms: dict[str, Sequence[str | os.PathLike]],
    resize: str = "pil-bicubic",
    batch_size: int = 32,
    device: Any = "cpu",
    is_splits: int = 10,
    seed: int = 0,
    progress: bool = True,
    reference_state: dict | None = None,
) -> tuple[dict[str, dict[str, float]], dict]:
    """FID of each arm against ``reference`` (when given) and Inception Score of each arm.

    Each image goes through Inception once; torchmetrics' ``FrechetInceptionDistance`` (float64
    sums) and ``InceptionScore`` receive the pool features and logits. Returns
    ``({arm: {"fid", "is_mean", "is_std", "is_splits"}}, reference_state)``; ``reference_state``
    holds the accumulated reference sums and can be passed back to skip the reference pass.
    IS uses ``min(is_splits, n // 2)`` splits (at least 1) so no split holds a single image (whose
    IS is 1 by definition); torch is seeded because IS permutes before splitting.
    """
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from tqdm.auto import tqdm

    def passes(paths, desc):
        with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
            for consumed, batch in inception_batches(paths, resize, batch_size):
                pool, logits = net(batch.to(device))
                yield pool, logits
                bar.update(consumed - bar.n)

    out: dict[str, dict[str, float]] = {a: {} for a in arms}
    state: dict = {}
    fid = None
    if reference is not None or reference_state is not None:
        fid = FrechetInceptionDistance(feature=_precomputed(net.fid_features), reset_real_features=False).to(device)
        if reference_state is not None:
            for k, v in reference_state.items():
                setattr(fid, k, v.to(device))
        else:
            if len(reference) < 2:
                raise ValueError("FID needs at least 2 reference images")
            for pool, _ in passes(list(reference), "Inception: reference"):
                fid.update(pool, real=True)
        state = {k: getattr(fid, k).detach().cpu() for k in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")}
    for arm, paths in arms.items():
        if fid is not None and len(paths) < 2:
            raise ValueError(f"FID needs at least 2 images of arm {arm!r}, got {len(paths)}")
        splits = max(1, min(is_splits, len(paths) // 2))
        with warnings.catch_warnings():  # "will save all extracted features": 1008 floats per image, fine
            warnings.simplefilter("ignore", UserWarning)
            isc = InceptionScore(feature=_precomputed(1008), splits=splits).to(device)
        if fid is not None:
            fid.reset()  # keeps the reference sums (reset_real_features=False)
        for pool, logits in passes(list(paths), f"Inception: {arm}"):
            isc.update(logits)
            if fid is not None:
                fid.update(pool, real=False)
        if fid is not None:
            out[arm]["fid"] = float(fid.compute())
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # one split: torch warns that std has no degrees of freedom
            warnings.simplefilter("ignore", UserWarning)
            mean, std = isc.compute()
        out[arm]["is_mean"] = float(mean)
        out[arm]["is_std"] = float(std) if splits > 1 else float("nan")
        out[arm]["is_splits"] = splits
    return out, state


# ---- PickScore ---------------------------------------------------------------------------------


def load_pickscore(model_dir: str | os.PathLike, processor_dir: str | os.PathLike | None = None, device: Any = "cpu"):
    """PickScore_v1 (a transformers CLIPModel) and its CLIPProcessor from local folders.

    The official release loads the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``; pass
    that folder as ``processor_dir`` if the model folder has no processor files.
    """
    from transformers import CLIPModel, CLIPProcessor

    model_path = require_folder(model_dir, "a PickScore_v1 model folder (transformers CLIPModel)", ["config.json"])
    if not any((model_path / n).is_file() for n in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
        raise WeightsError(f"{model_path} is not a PickScore_v1 model folder: missing model.safetensors (or pytorch_model.bin)")
    proc_path = Path(processor_dir) if processor_dir else model_path
    try:
        model = CLIPModel.from_pretrained(model_path, local_files_only=True).to(device).eval()
    except Exception as e:  # noqa: BLE001 -- config, weights and shape errors come in many types
        raise WeightsError(f"{model_path} does not load as a CLIPModel (PickScore_v1): {str(e).splitlines()[0][:300]}") from None
    try:
        processor = CLIPProcessor.from_pretrained(proc_path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 -- missing tokenizer/config files raise many types
        raise WeightsError(
            f"{proc_path} does not load as a CLIPProcessor (expected preprocessor_config.json, tokenizer files; "
            f"PickScore uses the processor of CLIP-ViT-H-14-laion2B-s32B-b79K): {str(e).splitlines()[0][:200]}"
        ) from None
    return model, processor


def pickscores(
    model, processor, paths: Sequence[str | os.PathLike], prompts: Sequence[str], batch_size: int = 32,
    device: Any = "cpu", progress: bool = True, desc: str = "PickScore",
) -> np.ndarray:
    """PickScore of each (image, prompt): ``logit_scale.exp() * cosine(image, text)``, float64 ``[N]``."""
    import torch
    from tqdm.auto import tqdm

    from sampler.clip import open_rgb

    if len(paths) != len(prompts):
        raise ValueError(f"{len(paths)} images but {len(prompts)} prompts")

    def _emb(out):  # transformers 5 returns a model output, 4.x a tensor
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    scores = []
    with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(paths), batch_size):
            imgs = [open_rgb(p) for p in paths[i : i + batch_size]]
            txt = list(prompts[i : i + batch_size])
            image_inputs = processor(images=imgs, return_tensors="pt").to(device)
            text_inputs = processor(text=txt, padding=True, truncation=True, max_length=77, return_tensors="pt").to(device)
            ie = _emb(model.get_image_features(**image_inputs))
            te = _emb(model.get_text_features(**text_inputs))
            ie = ie / ie.norm(dim=-1, keepdim=True)
            te = te / te.norm(dim=-1, keepdim=True)
            scores.append((model.logit_scale.exp() * (ie * te).sum(-1)).double().cpu().numpy())
            bar.update(len(imgs))
    return np.concatenate(scores)


# ---- the table ---------------------------------------------------------------------------------

TABLE_COLUMNS = (
    "manifest", "arm", "role", "images", "fid", "clip_score", "is_mean", "is_std", "is_splits",
    "pickscore_mean", "pickscore_pairs", "pickscore_wins", "pickscore_ties", "pickscore_losses",
    "pickscore_win_rate", "pickscore_tie_rate", "pickscore_win_ci_low", "pickscore_win_ci_high",
)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The paper-style table: one line per arm; win rate shown on the treatment line."""
    lines = [
        "| Method | Role | Images | FID ↓ | CLIP score ↑ | IS ↑ | PickScore win rate ↑ (95% CI) | Ties |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        is_txt = "—" if r.get("is_mean") is None else _fmt(r["is_mean"])
        if r.get("is_mean") is not None and r.get("is_std") is not None:
            is_txt += f" ± {_fmt(r['is_std'])}"
        if r.get("pickscore_win_rate") is None:
            win, ties = "—", "—"
        else:
            win = (f"{100 * r['pickscore_win_rate']:.1f}% ({100 * r['pickscore_win_ci_low']:.1f}–"
                   f"{100 * r['pickscore_win_ci_high']:.1f}%)")
            ties = f"{r['pickscore_ties']} / {r['pickscore_pairs']}"
        name = r["arm"] if not r.get("manifest_label") else f"{r['manifest_label']}/{r['arm']}"
        lines.append(
            f"| {name} | {r['role']} | {r['images']} | {_fmt(r.get('fid'))} | {_fmt(r.get('clip_score'))} | "
            f"{is_txt} | {win} | {ties} |"
        )
    notes = [
        "",
        (
            f"FID: torchmetrics FrechetInceptionDistance, Inception-V3 features ({settings.get('fid_features')}), "
            f"resize `{settings.get('resize')}`, reference: {settings.get('reference') or 'none'} "
            f"({settings.get('reference_images', 0)} images)."
        ),
        (
            f"CLIP score: 100 × cosine(image, prompt), open_clip {settings.get('clip_model') or '—'}. "
            f"IS: torchmetrics InceptionScore, {settings.get('is_splits')} splits (at most images/2), mean ± sd over splits."
        ),
        (
            "PickScore win rate: share of pairs (same prompt and seed) where the treatment's PickScore is higher "
            "than the baseline's; ties (equal scores) counted separately; 95% Wilson interval."
        ),
    ]
    return "\n".join(lines + notes) + "\n"
