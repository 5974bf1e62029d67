"""SFG as a diffusers guider: `SegmentationFreeGuidance`, a `diffusers.guiders.BaseGuidance`.

The same method as `sampler.pipeline` / `sampler.guidance` (spec: docs/sfg-algorithm.md), in
the shape diffusers' modular pipelines drive a guider: per step `set_state`, `prepare_inputs`
(which passes to run), for each pass `prepare_models` -> denoiser -> `cleanup_models`, then
`__call__` / `forward`. Steps before t_s are CFG (passes pred_cond, pred_uncond); from t_s on the
passes are pred_cond and pred_cond_sfg, both on the prompt's inputs, and `prepare_models`
installs the SFG cross-attention on every `attn2` module for the second pass only. The caller
gives the candidate tokens once per generation (`set_candidate_mask`, from the first tokenizer:
`SFGPipeline.candidate_mask`), since a guider never sees token ids.

Not used by `generate` (its own loop batches the passes); shipped for modular-pipeline users and
tested against the SFG pipeline.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput

from sampler.attention import (
    SegmentationFreeAttnProcessor,
    SFGControl,
    cross_attention_names,
)
from sampler.params import SamplerParams, check_token_select


class SegmentationFreeGuidance(BaseGuidance):
    """Segmentation-free guidance (Azarian et al. 2024). Arguments as `SamplerParams`:
    guidance_scale g (CFG phase, diffusers convention), sfg_scale a, sfg_guidance_scale g_bar,
    sfg_start_step t_s (None: T // 2), token_select."""

    _input_predictions = ["pred_cond", "pred_uncond", "pred_cond_sfg"]

    @register_to_config
    def __init__(
        self,
        guidance_scale: float = SamplerParams.guidance_scale,
        sfg_scale: float = SamplerParams.sfg_scale,
        sfg_guidance_scale: float = SamplerParams.sfg_guidance_scale,
        sfg_start_step: int | None = None,
        token_select: str = SamplerParams.token_select,
        enabled: bool = True,
    ):
        super().__init__(0.0, 1.0, enabled)
        check_token_select(token_select)
        self.guidance_scale, self.sfg_guidance_scale = guidance_scale, sfg_guidance_scale
        self.sfg_start_step = sfg_start_step
        self.control = SFGControl(scale=sfg_scale, token_select=token_select)
        self.candidate_mask: torch.Tensor | None = None
        self._before = None

    def set_candidate_mask(self, mask: torch.Tensor) -> None:
        """bool [B, 77]: the tokens each prompt's patches may choose (BOS never)."""
        self.candidate_mask = mask

    def _is_sfg_step(self) -> bool:
        if not self._enabled or self._num_inference_steps is None:
            return False
        t_s = self._num_inference_steps // 2 if self.sfg_start_step is None else self.sfg_start_step
        return self._step >= t_s

    @property
    def num_conditions(self) -> int:
        return 2 if self._enabled else 1

    @property
    def is_conditional(self) -> bool:
        return self._count_prepared == 1

    def _predictions(self) -> tuple[list[int], list[str]]:
        if self.num_conditions == 1:
            return [0], ["pred_cond"]
        if self._is_sfg_step():
            return [0, 0], ["pred_cond", "pred_cond_sfg"]  # both passes on the prompt's inputs
        return [0, 1], ["pred_cond", "pred_uncond"]

    def prepare_inputs(self, data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list:
        return [self._prepare_batch(data, i, name) for i, name in zip(*self._predictions())]

    def prepare_inputs_from_block_state(self, data, input_fields) -> list:
        return [self._prepare_batch_from_block_state(input_fields, data, i, name) for i, name in zip(*self._predictions())]

    def prepare_models(self, denoiser: torch.nn.Module) -> None:
        self._count_prepared += 1
        if not (self._is_sfg_step() and self._count_prepared == 2):
            return
        if self.candidate_mask is None:
            raise RuntimeError("SegmentationFreeGuidance needs set_candidate_mask(mask) before its SFG steps")
        self._before = denoiser.attn_processors
        cross = set(cross_attention_names(denoiser))
        denoiser.set_attn_processor({n: SegmentationFreeAttnProcessor(self.control, p) if n in cross else p
                                     for n, p in self._before.items()})
        self.control.perturbed_from, self.control.candidate_mask = 0, self.candidate_mask

    def cleanup_models(self, denoiser: torch.nn.Module) -> None:
        if self._before is not None:
            denoiser.set_attn_processor(self._before)
            self._before = None
            self.control.perturbed_from, self.control.candidate_mask = None, None

    def forward(self, pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None = None,
                pred_cond_sfg: torch.Tensor | None = None) -> GuiderOutput:
        if pred_cond_sfg is not None:  # eps_bar + g_bar (eps_c - eps_bar)
            pred = pred_cond_sfg + self.sfg_guidance_scale * (pred_cond - pred_cond_sfg)
        elif pred_uncond is not None:  # eps_u + g (eps_c - eps_u)
            pred = pred_uncond + self.guidance_scale * (pred_cond - pred_uncond)
        else:
            pred = pred_cond
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)
