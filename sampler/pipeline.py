"""Segmentation-free guidance (SFG) on top of diffusers' `StableDiffusionPipeline`.

`SFGPipeline` wraps a stock pipeline and reuses its building blocks (`encode_prompt`,
`prepare_latents`, `prepare_extra_step_kwargs`, the VAE, `image_processor`,
`run_safety_checker`); only the denoising loop is ours, because SFG changes what the two halves
of the batch see and how their predictions combine:

- phase 1 (step index i < sfg_start_step): the stock CFG step, batch [uncond, cond],
  eps = eps_u + g * (eps_c - eps_u)  (diffusers' convention for g = `guidance_scale`);
- phase 2: batch [cond, perturbed], both halves see the prompt embedding, the SFG processor
  (`sampler.attention`) is active on the perturbed half only,
  eps = eps_bar + g_bar * (eps_c - eps_bar)  (g_bar = `sfg_guidance_scale`).

`pairs` makes a CFG image and an SFG image from each seed sharing the first t_s steps: the
prefix runs once; at t_s the scheduler (and a stochastic scheduler's generators) is forked by
deep copy, and both arms continue in one UNet batch [u, c | c, perturbed] of 4B rows.
Step indices count iterations over `scheduler.timesteps` (PNDM's PLMS adds one warm-up iteration).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sampler.attention import (
    SegmentationFreeAttnProcessor,
    SFGControl,
    cross_attention_names,
)
from sampler.conditioning import decode, encode, native_size
from sampler.params import SamplerParams

ARMS = ("cfg", "sfg")


@contextmanager
def sfg_attention(unet, control: SFGControl) -> Iterator[SFGControl]:
    """Install SFG processors on the UNet's `attn2` modules (wrapping their current processors)
    for the duration of the block; the exact previous processor objects are put back on exit,
    also when the block raises."""
    before = unet.attn_processors
    cross = set(cross_attention_names(unet))
    if not cross:
        raise ValueError("this UNet has no text cross-attention (attn2) modules: SFG cannot apply")
    unet.set_attn_processor(
        {name: SegmentationFreeAttnProcessor(control, proc) if name in cross else proc for name, proc in before.items()}
    )
    try:
        yield control
    finally:
        unet.set_attn_processor(before)


@dataclass
class TokenMap:
    """What SFG saw for one prompt: how often each text token was chosen as k* per patch.

    counts: float32 [h, w, K], summed over the cross-attention layers at one resolution (h x w
    patches) and over the SFG steps. tokens: the K token strings (`</w>` stripped), index 0 BOS.
    """

    prompt: str
    counts: np.ndarray
    tokens: list[str]

    def chosen(self) -> np.ndarray:
        """int [h, w]: the most often chosen token per patch (-1 where nothing was recorded)."""
        idx = self.counts.argmax(-1)
        return np.where(self.counts.sum(-1) > 0, idx, -1)


@dataclass
class SFGOutput:
    """images: PIL list (or an array, per `output_type`) per arm; latents: final latents
    [B, 4, H/8, W/8] per arm, before VAE decoding."""

    images: dict[str, object]
    latents: dict[str, torch.Tensor]
    token_maps: list[TokenMap] = field(default_factory=list)
    nsfw: dict[str, list[bool] | None] = field(default_factory=dict)


def is_sdxl_folder(model_dir: str | Path) -> bool:
    """True when a diffusers folder's model_index.json names an SDXL pipeline class."""
    import json

    index = json.loads((Path(model_dir) / "model_index.json").read_text(encoding="utf-8"))
    return "XL" in str(index.get("_class_name", ""))


def _dtype_argument() -> str:
    """`from_pretrained`'s dtype keyword in the installed diffusers."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (diffusers with `dtype`)
    except ImportError:
        return "torch_dtype"
    return "dtype"


def default_start_step(num_inference_steps: int) -> int:
    """The spec's default t_s = T // 2 (`SamplerParams.start_step`)."""
    return SamplerParams(num_inference_steps=num_inference_steps).start_step()


def apply_guidance(noise_pred: torch.Tensor, arm: str, scale: float) -> torch.Tensor:
    """The guided prediction of one arm from its 2B-row UNet output (diffusers' convention).

    cfg rows are [eps_u | eps_c]: eps_u + g (eps_c - eps_u), g = `guidance_scale`.
    sfg rows are [eps_c | eps_bar] (eps_bar: the perturbed, segmentation-free branch):
    eps_bar + g_bar (eps_c - eps_bar), g_bar = `sfg_guidance_scale`. Shapes [2B, C, h, w] -> [B, C, h, w].
    """
    first, second = noise_pred.chunk(2)
    if arm == "cfg":
        return first + scale * (second - first)
    return second + scale * (first - second)


@dataclass
class _Arm:
    latents: torch.Tensor
    scheduler: object
    generator: torch.Generator | list[torch.Generator] | None

    def fork(self) -> "_Arm":
        return _Arm(self.latents.clone(), copy.deepcopy(self.scheduler), _clone_generator(self.generator))


def _clone_generator(gen):
    if gen is None:
        return None
    if isinstance(gen, list):
        return [_clone_generator(g) for g in gen]
    twin = torch.Generator(device=gen.device)
    twin.set_state(gen.get_state())
    return twin


class SFGPipeline:
    """SFG and CFG/SFG pair generation for a diffusers `StableDiffusionPipeline` (SD 1.x).

    Wraps `pipe` (kept as `self.pipe`, usable as the stock pipeline). Parameter names follow
    diffusers: `guidance_scale` g (eps_u + g (eps_c - eps_u)), `num_inference_steps` T,
    `generator` (one torch.Generator, or one per prompt for a batch). SFG adds `sfg_scale` a,
    `sfg_guidance_scale` g_bar, `sfg_start_step` t_s (default T // 2), `token_select`
    (`head_mean` | `per_head`) and `include_eos`.
    """

    def __init__(self, pipe):
        self.pipe = pipe

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu", torch_dtype=torch.float32):
        """Load a local SD 1.x or SDXL folder (SDXL when model_index.json's `_class_name` names an
        SDXL pipeline)."""
        import diffusers

        # Load in the wanted dtype (casting afterwards with .to(dtype) makes diffusers warn once
        # per model). Newer diffusers call the argument `dtype`, older ones `torch_dtype`.
        pipe_class = diffusers.StableDiffusionXLPipeline if is_sdxl_folder(model_dir) else diffusers.StableDiffusionPipeline
        pipe = pipe_class.from_pretrained(str(model_dir), **{_dtype_argument(): torch_dtype})
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device))

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    # -- text side ---------------------------------------------------------------------------
    def candidate_mask(self, prompts: Sequence[str], include_eos: bool = False) -> torch.Tensor:
        """bool [B, 77]: tokens that may be a patch's local semantic, tokenized as `encode_prompt`
        does (pad to 77, truncate). The prompt's word tokens; BOS never; EOS and the padding
        after it only with `include_eos`."""
        tok = self.pipe.tokenizer
        ids = tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        if include_eos:
            return positions > 0
        special = torch.zeros_like(ids, dtype=torch.bool)
        for sid in {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id} - {None}:
            special |= ids == sid
        return (positions > 0) & ~special

    def token_strings(self, prompt: str) -> list[str]:
        tok = self.pipe.tokenizer
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
        return [t.replace("</w>", "") for t in tok.convert_ids_to_tokens(ids)]

    # -- public generation -------------------------------------------------------------------
    def __call__(self, prompt: str | Sequence[str], *, arm: str = "sfg", output_type: str = "pil", **kwargs) -> SFGOutput:
        """One arm from scratch: `arm="sfg"` (CFG for t_s steps, then SFG) or `arm="cfg"`
        (all steps CFG, identical to the stock pipeline). Keyword arguments as `pairs`."""
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, not {arm!r}")
        return self._generate(prompt, arms=(arm,), output_type=output_type, **kwargs)

    def pairs(self, prompt: str | Sequence[str], *, output_type: str = "pil", **kwargs) -> SFGOutput:
        """A CFG image and an SFG image per prompt, sharing their first t_s steps (run once).

        Keyword arguments: the fields of `sampler.params.SamplerParams` (num_inference_steps,
        guidance_scale, sfg_scale, sfg_guidance_scale, sfg_start_step, token_select, include_eos;
        defaults and checks there) or `params=SamplerParams(...)`, and generator=None,
        height=None, width=None, record_token_maps=False.
        """
        return self._generate(prompt, arms=ARMS, output_type=output_type, **kwargs)

    # -- the loop ----------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(
        self,
        prompt: str | Sequence[str],
        *,
        arms: tuple[str, ...],
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        record_token_maps: bool = False,
        params: SamplerParams | None = None,
        **guidance,
    ) -> SFGOutput:
        """`guidance`: the fields of `SamplerParams` (its defaults and checks), or `params` whole."""
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
            retrieve_timesteps,
        )

        pipe = self.pipe
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompts given")
        if params is not None and guidance:
            raise TypeError("give either params or its fields as keyword arguments, not both")
        p = params if params is not None else SamplerParams(**guidance)
        if pipe.unet.config.time_cond_proj_dim is not None:
            raise ValueError("guidance-distilled UNets (time_cond_proj_dim) are not supported")
        if isinstance(generator, list) and len(generator) != len(prompts):
            raise ValueError(f"{len(generator)} generators for {len(prompts)} prompts")
        t_s = p.start_step()
        height, width = height or native_size(pipe), width or native_size(pipe)
        if height % 8 or width % 8:
            raise ValueError(f"height and width must be multiples of 8 (got {height}x{width})")

        device = pipe._execution_device
        b = len(prompts)
        text = encode(pipe, prompts, height, width, device)
        cond = text.cond
        mask = self.candidate_mask(prompts, p.include_eos).to(device)
        timesteps, _ = retrieve_timesteps(pipe.scheduler, p.num_inference_steps, device)
        latents = pipe.prepare_latents(
            b, pipe.unet.config.in_channels, height, width, cond.dtype, device, generator
        )
        prefix = _Arm(latents, pipe.scheduler, generator)
        control = SFGControl(scale=p.sfg_scale, token_select=p.token_select)
        if record_token_maps and "sfg" in arms:
            map_h, map_w = self._map_resolution(height, width)
            control.record_queries = map_h * map_w

        forked: dict[str, _Arm] | None = None
        with sfg_attention(pipe.unet, control):
            for i, t in enumerate(timesteps):
                if i < t_s or arms == ("cfg",):
                    eps = self._unet([(prefix, ["uncond", "cond"])], t, control, None, text)[0]
                    self._step(prefix, apply_guidance(eps, "cfg", p.guidance_scale), t, eta=0.0)
                    continue
                if forked is None:
                    # The first arm continues the prefix's own objects, the others get copies.
                    forked = {arm: (prefix if k == 0 else prefix.fork()) for k, arm in enumerate(arms)}
                    forked = {arm: forked[arm] for arm in arms}
                batch = []
                for arm in arms:
                    batch.append((forked[arm], ["uncond", "cond"] if arm == "cfg" else ["cond", "cond"]))
                # The perturbed rows are the last B rows: arms are ordered cfg before sfg.
                perturbed_from = 2 * b * len(arms) - b if arms[-1] == "sfg" else None
                eps_all = self._unet(batch, t, control, (perturbed_from, mask), text)
                for arm, eps in zip(arms, eps_all):
                    g = p.guidance_scale if arm == "cfg" else p.sfg_guidance_scale
                    self._step(forked[arm], apply_guidance(eps, arm, g), t, eta=0.0)

        final = {arm: (forked[arm] if forked else prefix).latents for arm in arms}
        out = SFGOutput(images={}, latents=final)
        for arm in arms:
            out.images[arm], out.nsfw[arm] = self._decode(final[arm], output_type, cond.dtype)
        if control.token_counts is not None:
            counts = control.token_counts.reshape(b, map_h, map_w, -1).cpu().numpy()
            out.token_maps = [TokenMap(p, counts[j], self.token_strings(p)) for j, p in enumerate(prompts)]
        elif record_token_maps and "sfg" in arms:
            k = cond.shape[1]
            out.token_maps = [
                TokenMap(p, np.zeros((map_h, map_w, k), np.float32), self.token_strings(p)) for p in prompts
            ]
        return out

    def _unet(self, batch, t, control: SFGControl, perturbed, text) -> list[torch.Tensor]:
        """One UNet forward over the concatenated arms; returns each arm's 2B-row prediction.

        batch: list of (arm state, row kinds ['uncond'|'cond', ...] of `text`, a Conditioning);
        each arm's latents are doubled and scaled by that arm's own scheduler (schedulers may
        track their step index)."""
        inputs = [arm.scheduler.scale_model_input(torch.cat([arm.latents] * 2), t) for arm, _ in batch]
        sizes = [x.shape[0] for x in inputs]
        states, added = text.rows([k for _, kinds in batch for k in kinds])
        control.perturbed_from, control.candidate_mask = perturbed if perturbed else (None, None)
        try:
            eps = self.pipe.unet(
                torch.cat(inputs), t, encoder_hidden_states=states, added_cond_kwargs=added, return_dict=False
            )[0]
        finally:
            control.perturbed_from, control.candidate_mask = None, None
        return list(eps.split(sizes))

    def _step(self, arm: _Arm, eps: torch.Tensor, t, eta: float) -> None:
        extra = self.pipe.prepare_extra_step_kwargs(arm.generator, eta)
        arm.latents = arm.scheduler.step(eps, t, arm.latents, **extra, return_dict=False)[0]

    def _decode(self, latents: torch.Tensor, output_type: str, dtype):
        return decode(self.pipe, latents, output_type)

    def _map_resolution(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the cross-attention resolution used for token maps: the one whose side is
        closest to 16 patches (SD 1.x at 512 px: its 16x16 layers)."""
        cfg = self.pipe.unet.config
        lat_h, lat_w = height // self.pipe.vae_scale_factor, width // self.pipe.vae_scale_factor
        levels = [j for j, kind in enumerate(cfg.down_block_types) if "CrossAttn" in kind]
        levels.append(len(cfg.down_block_types) - 1)  # the mid block's cross-attention
        level = min(levels, key=lambda j: (abs(math.log2(max(lat_h >> j, 1) / 16)), j))
        return math.ceil(lat_h / 2**level), math.ceil(lat_w / 2**level)
