"""Several arms from one seed: the denoising loop of `generate --arms` (SD 1.x and SDXL).

Every arm of a prompt and seed starts from the same initial latents (`prepare_latents` once with
the seed's generator). Arms with the same step count run in lockstep on their own copy of the
scheduler; arms that do the same thing at a step share it. Arms begin together in one *lane*
(one latent state); at each step a lane's arms are split by what they do at that step (plain CFG
with (steps, guidance_scale) while inside their `cfg_prefix`, else their own method) and a lane
that splits forks (latents cloned, scheduler and stochastic generators deep-copied, as
`SFGPipeline.pairs` forks). So SFG's CFG phase and a CFG arm of the same scale run once, as do
the CFG phases of several SFG arms up to the earliest t_s.

Per step, the lanes that need only the stock processors (CFG steps, APG, CFG-Zero*) and one SFG
lane share one UNet forward; PAG lanes and further SFG lanes run their own.

nfe: each lane's step costs len(rows) evaluations (batch rows) per image; they are counted in the nfe
of the lane's first arm (arms-file order), and steps run for several arms are listed in
`shared` (sfgeval.set/1's `shared_steps`). The sum of a set's nfe is what the set cost.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from sampler.arms import ArmSpec
from sampler.attention import SFGControl
from sampler.conditioning import Conditioning, decode, encode, native_size
from sampler.guidance import Guide, GuiderGuide, SFGGuide, make_guide, nfe_alone
from sampler.pipeline import _Arm, _clone_generator, sfg_attention


@dataclass
class SetOutput:
    """images / latents per arm name (PIL list or array per `output_type`; latents [B, 4, h, w]),
    nfe per arm (evaluations per image, shared steps in their first arm), nfe_alone per arm,
    shared: [{arms, steps, nfe, counted_in}], unet_calls / unet_rows: UNet forwards of this call
    and the batch rows they evaluated (= B x the sum of nfe)."""

    images: dict[str, object]
    latents: dict[str, torch.Tensor]
    nfe: dict[str, int]
    nfe_alone: dict[str, int]
    shared: list[dict] = field(default_factory=list)
    unet_calls: int = 0
    unet_rows: int = 0


@dataclass
class _Lane:
    state: _Arm
    arms: list[str]


def _step_key(guide: Guide, i: int) -> tuple:
    return ("cfg", guide.share_key) if i < guide.cfg_prefix else ("own", guide.spec.name)


@torch.no_grad()
def generate_set(sfg, prompts: str | list[str], arms: list[ArmSpec], *, generator=None, height: int | None = None,
                 width: int | None = None, output_type: str = "pil") -> SetOutput:
    """The images of `arms` (resolved: `match_nfe_of` already applied) for each prompt, all
    from the noise of `generator` (one torch.Generator, or one per prompt). `sfg`: an
    SFGPipeline (its `.pipe` is a stock SD 1.x or SDXL pipeline; its scheduler is not changed)."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        retrieve_timesteps,
    )

    pipe = sfg.pipe
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not arms:
        raise ValueError("no prompts or no arms")
    if isinstance(generator, list) and len(generator) != len(prompts):
        raise ValueError(f"{len(generator)} generators for {len(prompts)} prompts")
    if pipe.unet.config.time_cond_proj_dim is not None:
        raise ValueError("guidance-distilled UNets (time_cond_proj_dim) are not supported")
    height, width = height or native_size(pipe), width or native_size(pipe)
    if height % 8 or width % 8:
        raise ValueError(f"height and width must be multiples of 8 (got {height}x{width})")
    device, b = pipe._execution_device, len(prompts)
    text = encode(pipe, prompts, height, width, device)
    control = SFGControl()
    masks = {a.name: sfg.candidate_mask(prompts, a.params["include_eos"]).to(device) for a in arms if a.method == "sfg"}
    guides = {a.name: make_guide(a, pipe, control, masks.get(a.name)) for a in arms}
    order = {a.name: k for k, a in enumerate(arms)}
    out = SetOutput({}, {}, {a.name: 0 for a in arms}, {}, [])
    counted = _count_calls(pipe.unet, out)

    with counted, sfg_attention(pipe.unet, control) if masks else nullcontext():
        for steps in sorted({a.steps for a in arms}):
            group = [a.name for a in arms if a.steps == steps]
            scheduler = copy.deepcopy(pipe.scheduler)
            timesteps, _ = retrieve_timesteps(scheduler, steps, device)
            # The same noise for every group, scaled by this schedule's init_noise_sigma, as the
            # stock pipeline scales it after setting its timesteps.
            gen = _clone_generator(generator)
            stock, pipe.scheduler = pipe.scheduler, scheduler
            try:
                latents = pipe.prepare_latents(b, pipe.unet.config.in_channels, height, width, text.dtype, device, gen)
            finally:
                pipe.scheduler = stock
            lanes = [_Lane(_Arm(latents, scheduler, gen), group)]
            shared: dict[tuple, dict] = {}
            for i, t in enumerate(timesteps):
                lanes = _split(lanes, guides, i)
                for call in _calls([_Plan(lane, guides[lane.arms[0]], i) for lane in lanes]):
                    for plan, eps in zip(call, _unet(pipe, call, text, t, i, b)):
                        lane, guide = plan.lane, plan.guide
                        eps = Guide.combine(guide, eps, i, t) if plan.in_prefix else guide.combine(eps, i, t)
                        extra = pipe.prepare_extra_step_kwargs(lane.state.generator, 0.0)
                        lane.state.latents = lane.state.scheduler.step(eps, t, lane.state.latents, **extra,
                                                                       return_dict=False)[0]
                        first = min(lane.arms, key=order.__getitem__)
                        out.nfe[first] += len(plan.rows)
                        if len(lane.arms) > 1:
                            entry = shared.setdefault(tuple(lane.arms), {"arms": list(lane.arms), "steps": 0,
                                                                         "nfe": 0, "counted_in": first})
                            entry["steps"] += 1
                            entry["nfe"] += len(plan.rows)
                        for name in lane.arms:
                            out.latents[name] = lane.state.latents
            out.shared.extend(shared.values())
    for a in arms:
        out.nfe_alone[a.name] = nfe_alone(a)
        out.images[a.name], _ = decode(pipe, out.latents[a.name], output_type)
    return out


def _split(lanes: list[_Lane], guides: dict[str, Guide], i: int) -> list[_Lane]:
    """Lanes for step i: each lane's arms grouped by what they do at step i; the first group keeps
    the lane's state, the others get forked copies."""
    out = []
    for lane in lanes:
        groups: dict[tuple, list[str]] = {}
        for name in lane.arms:
            groups.setdefault(_step_key(guides[name], i), []).append(name)
        for k, names in enumerate(groups.values()):
            out.append(_Lane(lane.state if k == 0 else lane.state.fork(), names))
    return out


class _Plan:
    """What one lane does at step i: its guide, whether it is inside its CFG prefix, its rows and
    its kind ('plain': stock processors; 'sfg': SFG on its last B rows; 'own': PAG)."""

    def __init__(self, lane: _Lane, guide: Guide, i: int):
        self.lane, self.guide = lane, guide
        self.in_prefix = i < guide.cfg_prefix
        self.rows = ["uncond", "cond"] if self.in_prefix else guide.rows(i)
        if self.in_prefix or type(guide) in (Guide, GuiderGuide):
            self.kind = "plain"
        else:
            self.kind = "sfg" if isinstance(guide, SFGGuide) else "own"


def _calls(plans: list[_Plan]) -> list[list[_Plan]]:
    """The UNet forwards of one step: every lane that needs only the stock processors, with at
    most one SFG lane last (the SFG processor perturbs the batch's last rows); PAG lanes
    (diffusers' PAG processors split their whole batch into [uncond, cond, perturbed]) and any
    further SFG lane (another scale or mask) each on their own."""
    plain = [p for p in plans if p.kind == "plain"]
    sfg = [p for p in plans if p.kind == "sfg"]
    first = plain + sfg[:1]
    return ([first] if first else []) + [[p] for p in sfg[1:] + [p for p in plans if p.kind == "own"]]


def _unet(pipe, call: list[_Plan], text: Conditioning, t, i: int, b: int) -> list[torch.Tensor]:
    """One UNet forward over the lanes of `call`: each lane's latents once per row kind, scaled by
    its own scheduler; returns each lane's rows of the prediction."""
    inputs = [p.lane.state.scheduler.scale_model_input(torch.cat([p.lane.state.latents] * len(p.rows)), t) for p in call]
    x = torch.cat(inputs)
    states, added = text.rows([k for p in call for k in p.rows])
    last = call[-1]
    attention = nullcontext() if last.kind == "plain" else last.guide.attention(i, x.shape[0] - b)
    with attention:
        eps = pipe.unet(x, t, encoder_hidden_states=states, added_cond_kwargs=added, return_dict=False)[0]
    return list(eps.split([len(p.rows) * b for p in call]))


class _count_calls:
    """Counts the UNet's forward calls and batch rows into `out` while active."""

    def __init__(self, unet, out: SetOutput):
        self.unet, self.out = unet, out

    def _count(self, module, args):
        self.out.unet_calls += 1
        self.out.unet_rows += args[0].shape[0]

    def __enter__(self):
        self.handle = self.unet.register_forward_pre_hook(self._count)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

