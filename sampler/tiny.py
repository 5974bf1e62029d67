"""Random-weight Stable Diffusion 1.x pipelines built in code: the tiny test model and the full
SD 1.x architecture for CPU benchmarks.

Model weights can never be downloaded here, so the real loading path
(`StableDiffusionPipeline.from_pretrained(local_dir)`) is exercised on a tiny model that is built
from a fixed seed, saved with `save_pretrained` and loaded back like any SD 1.x folder. Its
tokenizer is the real CLIP BPE tokenizer (49,408 tokens, BOS 49406, EOS 49407 = padding), rebuilt
offline from the BPE merges file that open_clip ships, so prompts tokenize exactly as for
`runwayml/stable-diffusion-v1-5`.

The tiny model has the SD 1.x layout (VAE with scale factor 8, 4 latent channels, a UNet whose
`attn2` modules cross-attend to 77 CLIP text tokens, several heads, cross-attention at two
resolutions) but small widths: 64x64 pixel images, 8x8 latents.
"""

from __future__ import annotations

import gzip
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_SEED = 20240705
# Bump when the tiny architecture changes so cached copies are rebuilt.
TINY_VERSION = "tiny-sd1-v1"
TINY_SDXL_VERSION = "tiny-sdxl-v1"
_STAMP = "sfgeval_tiny.json"


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP BPE vocabulary (token -> id) and merge list, from open_clip's bundled BPE file.

    Same construction as OpenAI CLIP / open_clip's SimpleTokenizer, with the Hugging Face
    spelling of the special tokens (`<|startoftext|>` = 49406, `<|endoftext|>` = 49407).
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges  # type: ignore[return-value]


def build_clip_tokenizer(work_dir: Path, **extra):
    """A real `CLIPTokenizer` built from vocab.json / merges.txt files written into `work_dir`
    (`extra`: tokenizer arguments, e.g. SDXL's second tokenizer pads with pad_token="!")."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (work_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    if "vocab_file" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers 4.x
        return CLIPTokenizer(str(work_dir / "vocab.json"), str(work_dir / "merges.txt"), model_max_length=77, **extra)
    # transformers 5 takes the vocabulary and merges themselves (not file paths).
    loaded_vocab = json.loads((work_dir / "vocab.json").read_text(encoding="utf-8"))
    loaded_merges = [
        tuple(line.split())
        for line in (work_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        if line
    ]
    return CLIPTokenizer(vocab=loaded_vocab, merges=loaded_merges, model_max_length=77, **extra)


def _sd_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    # SD 1.x noise schedule; a multistep solver so that pair generation must fork its history.
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
    )


def _assemble_sd(tokenizer, seed: int, unet: dict, vae: dict, text: dict):
    """A StableDiffusionPipeline of SD 1.x layout with random weights from `seed`, from the
    sizes that differ between the tiny and the full architecture."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet_model = UNet2DConditionModel(in_channels=4, out_channels=4, **unet)
    torch.manual_seed(seed + 1)
    vae_model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        **vae,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            **text,
        )
    )
    return StableDiffusionPipeline(
        vae=vae_model,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet_model,
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_pipeline(work_dir: Path, seed: int = TINY_SEED):
    """The tiny SD 1.x pipeline, in memory, float32, on CPU. Same weights for the same seed."""
    return _assemble_sd(
        build_clip_tokenizer(work_dir / "tokenizer-src"),
        seed,
        unet=dict(
            sample_size=8,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,  # SD 1.x naming: this is the number of heads
            norm_num_groups=8,
        ),
        vae=dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64),
        text=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
        ),
    )


def build_tiny_sdxl_pipeline(work_dir: Path, seed: int = TINY_SEED):
    """A tiny SDXL pipeline (random weights from `seed`, float32, CPU): SDXL's layout (two CLIP
    text encoders whose 77 token embeddings are concatenated, the second with a projection for
    the pooled `text_embeds`; a UNet with `text_time` added conditioning, no attention at its
    first level, linear projections, 2 transformer layers at the second) at small widths:
    64x64 pixel images, 8x8 latents. The second tokenizer pads with "!" as SDXL's does."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, projection_dim=32)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8, cross_attention_dim=64, norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, block_out_channels=(8, 8, 16, 16),
                        layers_per_block=1, norm_num_groups=4, sample_size=64, scaling_factor=0.13025)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text))
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=build_clip_tokenizer(work_dir / "tokenizer-src"),
        tokenizer_2=build_clip_tokenizer(work_dir / "tokenizer-2-src", pad_token="!"),
        unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False,
    )


def build_full_sd_pipeline(seed: int = TINY_SEED):
    """The full SD 1.x architecture (v1.5 layer shapes: 860M-parameter UNet, ViT-L/14 text
    encoder, 84M VAE) with random weights, in memory, float32 on CPU. For benchmarks only:
    its images are noise, its cost per step is that of the real model.
    """
    return _assemble_sd(
        build_clip_tokenizer(Path(tempfile.mkdtemp(prefix="sfgeval-tok-"))),
        seed,
        unet=dict(
            sample_size=64,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        ),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512),
        text=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            hidden_act="quick_gelu",
            projection_dim=768,
        ),
    )


def _is_built(path: Path, version: str = TINY_VERSION) -> bool:
    stamp = path / _STAMP
    if not (path / "model_index.json").is_file() or not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()).get("version") == version
    except (OSError, ValueError):
        return False


def ensure_tiny_model(path: Path | str, sdxl: bool = False) -> Path:
    """Build the tiny model (SD 1.x, or SDXL with `sdxl`) into `path` once (a normal diffusers
    folder) and return `path`.

    Reuses an existing build of the same TINY_VERSION. Built in a temporary sibling folder and
    renamed into place, so concurrent callers and interrupted builds never leave half a model.
    """
    path = Path(path)
    version = TINY_SDXL_VERSION if sdxl else TINY_VERSION
    if _is_built(path, version):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-build-", dir=path.parent))
    try:
        pipe = build_tiny_sdxl_pipeline(tmp) if sdxl else build_tiny_pipeline(tmp)
        out = tmp / "model"
        pipe.save_pretrained(out, safe_serialization=True)
        (out / _STAMP).write_text(json.dumps({"version": version, "seed": TINY_SEED}))
        if path.exists() and not _is_built(path, version):
            shutil.rmtree(path)
        try:
            os.replace(out, path)
        except OSError:
            if not _is_built(path, version):  # lost a race only if the winner's copy is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def default_tiny_model_dir() -> Path:
    """Where `--tiny` keeps its model: $SFGEVAL_CACHE/tiny-sd (default ~/.cache/sfgeval)."""
    root = os.environ.get("SFGEVAL_CACHE") or Path.home() / ".cache" / "sfgeval"
    return Path(root) / "tiny-sd"
