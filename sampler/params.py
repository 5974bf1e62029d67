"""Sampler parameters: the one place that holds their defaults and checks them.

`SamplerParams` is used by the command line (option defaults), `sampler.generate` (the manifest's
recorded settings), `SFGPipeline` (its keyword arguments) and `SFGControl` (the processor's
scale and token selection). Conventions (spec: sfg-algorithm.md): `guidance_scale` g and
`sfg_guidance_scale` g_bar follow diffusers, eps = eps_ref + g (eps_c - eps_ref), so the paper's
w = g - 1; `sfg_scale` a multiplies each patch's own token weight by -a in the perturbed branch;
`sfg_start_step` t_s counts plain CFG steps before SFG takes over (None: T // 2).
"""

from __future__ import annotations

from dataclasses import dataclass

TOKEN_SELECT = ("head_mean", "per_head")


def check_token_select(value: str) -> str:
    """`value` if it names a token selection rule, else ValueError naming the choices."""
    if value not in TOKEN_SELECT:
        raise ValueError(f"token_select must be one of {TOKEN_SELECT}, not {value!r}")
    return value


@dataclass(frozen=True)
class SamplerParams:
    """Guidance parameters of one image or pair, checked on construction (ValueError)."""

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    sfg_scale: float = 10.0
    sfg_guidance_scale: float = 3.0
    sfg_start_step: int | None = None
    token_select: str = "head_mean"
    include_eos: bool = False

    def __post_init__(self) -> None:
        if int(self.num_inference_steps) < 1:
            raise ValueError("num_inference_steps (steps) must be at least 1")
        if self.guidance_scale <= 1.0:
            raise ValueError("guidance_scale must be > 1 (the unconditional pass is what SFG builds on)")
        if self.sfg_start_step is not None and int(self.sfg_start_step) < 0:
            raise ValueError("sfg_start_step must be >= 0")
        check_token_select(self.token_select)

    def start_step(self) -> int:
        """t_s: the spec's default T // 2 unless `sfg_start_step` is set."""
        return self.num_inference_steps // 2 if self.sfg_start_step is None else int(self.sfg_start_step)
