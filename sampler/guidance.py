"""One denoising step's guidance per method: which UNet rows an arm needs and how they combine.

Each arm gets a `Guide` for one generation. A step asks it for `rows(i)` (the row kinds of its
UNet call, B rows each: 'uncond' = the empty prompt, 'cond' = the prompt), runs the UNet on them
inside `attention(i)` (the processors the method needs), and gets the guided prediction from
`combine(eps, i, t)`. The formulas are diffusers' own, called, not rewritten:

- cfg: eps_u + g (eps_c - eps_u) (diffusers' convention, as StableDiffusionPipeline);
- sfg: CFG for t_s steps, then [cond | perturbed] with our SFG processor (sampler.attention);
- pag: `PAGMixin`'s processors (PAGCFGIdentitySelfAttnProcessor2_0 on `pag_applied_layers`),
  its row layout [uncond, cond, perturbed] and `_apply_perturbed_attention_guidance`, as
  StableDiffusionPAGPipeline / StableDiffusionXLPAGPipeline;
- apg, cfg-zero-star: `diffusers.guiders.AdaptiveProjectedGuidance` /
  `ClassifierFreeZeroStarGuidance`: `set_state`, `prepare_inputs`, `num_conditions` (one or two
  rows kinds this step) and `forward(pred_cond, pred_uncond)`.

`cfg_prefix` is how many first steps are plain CFG with (steps, guidance_scale) = `share_key`:
arms with the same key share those steps (sampler.arm_set).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from sampler.arms import ArmSpec
from sampler.attention import SFGControl
from sampler.pipeline import apply_guidance

UNCOND_COND = ["uncond", "cond"]


class Guide:
    """Plain CFG; the base of the other methods."""

    def __init__(self, spec: ArmSpec, pipe=None):
        self.spec = spec
        self.pipe = pipe
        self.scale = float(spec.params["guidance_scale"])

    @property
    def share_key(self) -> tuple:
        return (self.spec.steps, self.scale)

    @property
    def cfg_prefix(self) -> int:
        return self.spec.steps

    def rows(self, i: int) -> list[str]:
        return UNCOND_COND

    def attention(self, i: int, perturbed_from: int):
        """The processors of this arm's UNet call at step i; `perturbed_from`: first batch row of
        its perturbed pass (its last B rows)."""
        return nullcontext()

    def combine(self, eps: torch.Tensor, i: int, t) -> torch.Tensor:
        return apply_guidance(eps, "cfg", self.scale)


class SFGGuide(Guide):
    """CFG for t_s steps, then the SFG step: rows [cond | cond], SFG on the second half."""

    def __init__(self, spec: ArmSpec, pipe=None, control: SFGControl | None = None, mask=None):
        super().__init__(spec, pipe)
        p = spec.params
        self.t_s = int(p["sfg_start_step"])
        self.control = control
        self.mask = mask  # [B, 77] candidate tokens
        self.sfg_scale, self.g_bar = float(p["sfg_scale"]), float(p["sfg_guidance_scale"])

    @property
    def cfg_prefix(self) -> int:
        return min(self.t_s, self.spec.steps)

    def rows(self, i):
        return UNCOND_COND if i < self.t_s else ["cond", "cond"]

    @contextmanager
    def attention(self, i, perturbed_from):
        c = self.control
        if i < self.t_s or c is None:
            yield
            return
        c.scale, c.token_select = self.sfg_scale, self.spec.params["token_select"]
        c.perturbed_from, c.candidate_mask = perturbed_from, self.mask
        try:
            yield
        finally:
            c.perturbed_from, c.candidate_mask = None, None

    def combine(self, eps, i, t):
        return apply_guidance(eps, "cfg", self.scale) if i < self.t_s else apply_guidance(eps, "sfg", self.g_bar)


class PAGGuide(Guide):
    """Perturbed-attention guidance through diffusers' PAGMixin."""

    def __init__(self, spec: ArmSpec, pipe=None):
        super().__init__(spec, pipe)
        from diffusers.pipelines.pag.pag_utils import PAGMixin

        class _PAG(PAGMixin):
            def __init__(self, unet, layers, scale, adaptive):
                self.unet = unet
                self.set_pag_applied_layers(layers)
                self._pag_scale, self._pag_adaptive_scale = scale, adaptive

        p = spec.params
        self.mixin = _PAG(None if pipe is None else pipe.unet, list(p["pag_applied_layers"]),
                          float(p["pag_scale"]), float(p["pag_adaptive_scale"]))
        # As the PAG pipelines: CFG is on for guidance_scale > 1.
        self.do_cfg = self.scale > 1.0

    @property
    def cfg_prefix(self) -> int:
        return 0 if self.mixin.do_perturbed_attention_guidance else super().cfg_prefix

    def rows(self, i):
        if not self.mixin.do_perturbed_attention_guidance:
            return UNCOND_COND if self.do_cfg else ["cond"]
        return ["uncond", "cond", "cond"] if self.do_cfg else ["cond", "cond"]

    @contextmanager
    def attention(self, i, perturbed_from):
        if not self.mixin.do_perturbed_attention_guidance:
            yield
            return
        unet = self.mixin.unet
        before = unet.attn_processors
        self.mixin._set_pag_attn_processor(self.mixin.pag_applied_layers, self.do_cfg)
        try:
            yield
        finally:
            unet.set_attn_processor(before)

    def combine(self, eps, i, t):
        if self.mixin.do_perturbed_attention_guidance:
            return self.mixin._apply_perturbed_attention_guidance(eps, self.do_cfg, self.scale, t)
        return apply_guidance(eps, "cfg", self.scale) if self.do_cfg else eps


class GuiderGuide(Guide):
    """A `diffusers.guiders` guider with inputs pred_cond / pred_uncond (APG, CFG-Zero*)."""

    def __init__(self, spec: ArmSpec, pipe=None):
        super().__init__(spec, pipe)
        self.guider = make_guider(spec)

    @property
    def cfg_prefix(self) -> int:
        return 0

    def _at(self, i: int, t=None) -> int:
        g = self.guider
        g.set_state(step=i, num_inference_steps=self.spec.steps, timestep=t)
        g.prepare_inputs({})  # APG (re)starts its momentum buffer at step 0
        return g.num_conditions

    def rows(self, i):
        return UNCOND_COND if self._at(i) == 2 else ["cond"]

    def combine(self, eps, i, t):
        if self._at(i, t) == 2:
            uncond, cond = eps.chunk(2)
            return self.guider.forward(pred_cond=cond, pred_uncond=uncond).pred
        return self.guider.forward(pred_cond=eps).pred


def make_guider(spec: ArmSpec):
    """The diffusers guider object of an apg or cfg-zero-star arm (its params minus steps)."""
    import logging

    from diffusers.guiders import (
        AdaptiveProjectedGuidance,
        ClassifierFreeZeroStarGuidance,
    )

    cls = {"apg": AdaptiveProjectedGuidance, "cfg-zero-star": ClassifierFreeZeroStarGuidance}[spec.method]
    kwargs = {k: v for k, v in spec.params.items() if k not in ("num_inference_steps", "match_nfe_of",
                                                                 "base_num_inference_steps")}
    log = logging.getLogger("diffusers.guiders.guider_utils")
    level = log.level
    log.setLevel(logging.ERROR)  # "Guiders are currently an experimental feature" once per object
    try:
        return cls(**kwargs)
    finally:
        log.setLevel(level)


def make_guide(spec: ArmSpec, pipe=None, control: SFGControl | None = None, mask=None) -> Guide:
    """The Guide of one arm; `pipe` (the stock pipeline) is needed for pag's processors,
    `control`/`mask` for sfg's (None: only rows and costs are asked for)."""
    if spec.method == "sfg":
        return SFGGuide(spec, pipe, control, mask)
    if spec.method == "pag":
        return PAGGuide(spec, pipe)
    if spec.method in ("apg", "cfg-zero-star"):
        return GuiderGuide(spec, pipe)
    return Guide(spec, pipe)


def nfe_alone(spec: ArmSpec) -> int:
    """UNet evaluations one image of this arm costs generated on its own: the rows per image
    of every step (CFG, SFG and APG 2 per step; PAG with CFG 3; CFG-Zero* 2, or 1 where its
    guider runs the conditional pass only)."""
    guide = make_guide(spec)
    return sum(len(guide.rows(i)) for i in range(spec.steps))
