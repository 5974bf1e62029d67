"""Several arms from one seed (sampler.arm_set, sampler.guidance) on the tiny SD 1.x and SDXL
models: each arm equals diffusers' own pipeline, or a plain reference loop calling diffusers'
guider, to float tolerance; shared steps run once; nfe is what was spent."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from sampler.arm_set import generate_set  # noqa: E402
from sampler.arms import parse_arms, resolve_matching  # noqa: E402
from sampler.guidance import nfe_alone  # noqa: E402
from sampler.params import SamplerParams  # noqa: E402

STEPS = 4
PROMPT = "a cute white dog next to a cat"
ATOL = 1e-3  # latents are O(1); arms share UNet batches and references batch differently: float tolerance
DEFAULTS = SamplerParams(num_inference_steps=STEPS)


def gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def arms_of(*items):
    return resolve_matching(parse_arms([{"name": n, "method": m, "params": p} for n, m, p in items], DEFAULTS), nfe_alone)


@pytest.fixture(scope="module")
def tiny_sdxl(tiny_cache):
    from sampler.pipeline import SFGPipeline
    from sampler.tiny import ensure_tiny_model

    return SFGPipeline.from_pretrained(ensure_tiny_model(tiny_cache / "tiny-sdxl", sdxl=True), device="cpu")


def _pag_pipeline(sfg, layers):
    import diffusers

    cls = diffusers.StableDiffusionXLPAGPipeline if "XL" in type(sfg.pipe).__name__ else diffusers.StableDiffusionPAGPipeline
    comps = {k: v for k, v in sfg.pipe.components.items() if k not in ("image_encoder",)}
    pipe = cls(**comps, pag_applied_layers=layers)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _guider_reference(sfg, guider, seed):
    """A plain loop driving a diffusers guider through its own interface (prepare_inputs ->
    prepare_models, one UNet pass per condition, cleanup_models -> guider(batches)), SD 1.x,
    batch 1."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        retrieve_timesteps,
    )

    pipe = copy.copy(sfg.pipe)
    pipe.scheduler = copy.deepcopy(sfg.pipe.scheduler)
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True)
    timesteps, _ = retrieve_timesteps(pipe.scheduler, STEPS, "cpu")
    latents = pipe.prepare_latents(1, 4, 64, 64, cond.dtype, "cpu", gen(seed))
    for i, t in enumerate(timesteps):
        guider.set_state(step=i, num_inference_steps=STEPS, timestep=t)
        batches = guider.prepare_inputs({"prompt_embeds": (cond, uncond)})
        for batch in batches:
            guider.prepare_models(pipe.unet)
            x = pipe.scheduler.scale_model_input(latents, t)
            batch.noise_pred = pipe.unet(x, t, encoder_hidden_states=batch.prompt_embeds, return_dict=False)[0]
            guider.cleanup_models(pipe.unet)
        latents = pipe.scheduler.step(guider(batches).pred, t, latents, return_dict=False)[0]
    return latents


def test_cfg_sfg_pag_equal_the_diffusers_pipelines(tiny_sfg):
    arms = arms_of(("cfg", "cfg", {}), ("sfg", "sfg", {}), ("pag", "pag", {"pag_applied_layers": ["mid"], "pag_scale": 2.0}))
    out = generate_set(tiny_sfg, PROMPT, arms, generator=gen(3), output_type="latent")
    stock = tiny_sfg.pipe(PROMPT, generator=gen(3), num_inference_steps=STEPS, output_type="latent").images
    torch.testing.assert_close(out.latents["cfg"], stock, atol=ATOL, rtol=0)
    sfg = tiny_sfg(PROMPT, arm="sfg", generator=gen(3), num_inference_steps=STEPS, output_type="latent")
    torch.testing.assert_close(out.latents["sfg"], sfg.latents["sfg"], atol=ATOL, rtol=0)
    pag = _pag_pipeline(tiny_sfg, ["mid"])(PROMPT, generator=gen(3), num_inference_steps=STEPS, guidance_scale=7.5,
                                             pag_scale=2.0, output_type="latent").images
    torch.testing.assert_close(out.latents["pag"], pag, atol=ATOL, rtol=0)
    assert (out.latents["pag"] - stock).abs().max() > 100 * ATOL  # PAG really perturbed something
    before = dict(tiny_sfg.pipe.unet.attn_processors)
    generate_set(tiny_sfg, PROMPT, arms, generator=gen(3), output_type="latent")
    assert all(tiny_sfg.pipe.unet.attn_processors[k] is v for k, v in before.items())


def test_pag_on_several_layers_and_decoded_pixels(tiny_sfg):
    layers = ["down_blocks.1", "mid"]
    arms = arms_of(("cfg", "cfg", {}), ("pag", "pag", {"pag_applied_layers": layers}))
    out = generate_set(tiny_sfg, PROMPT, arms, generator=gen(1), output_type="np")
    ref = _pag_pipeline(tiny_sfg, layers)(PROMPT, generator=gen(1), num_inference_steps=STEPS, guidance_scale=7.5,
                                          pag_scale=3.0, output_type="np").images
    assert abs(out.images["pag"] - ref).max() < 2e-3


@pytest.mark.parametrize(
    "method, params",
    [
        ("apg", {}),
        ("apg", {"adaptive_projected_guidance_momentum": -0.5, "eta": 0.5}),
        ("cfg-zero-star", {}),
        ("cfg-zero-star", {"zero_init_steps": 0, "start": 0.0, "stop": 0.5}),
    ],
)
def test_guider_arms_equal_a_reference_loop_with_the_diffusers_guider(tiny_sfg, method, params):
    arms = arms_of(("cfg", "cfg", {}), ("g", method, params))
    out = generate_set(tiny_sfg, PROMPT, arms, generator=gen(4), output_type="latent")
    from sampler.guidance import make_guider

    ref = _guider_reference(tiny_sfg, make_guider(arms[1]), 4)
    torch.testing.assert_close(out.latents["g"], ref, atol=ATOL, rtol=0)
    expected = 2 * STEPS if params.get("stop", 1.0) == 1.0 else 2 * 2 + 1 * 2  # one pass outside [start, stop)
    assert out.nfe["g"] == out.nfe_alone["g"] == expected


def test_sfg_as_a_diffusers_guider_equals_the_sfg_pipeline(tiny_sfg):
    from sampler.guiders import SegmentationFreeGuidance

    guider = SegmentationFreeGuidance(sfg_scale=5.0, sfg_start_step=1)
    guider.set_candidate_mask(tiny_sfg.candidate_mask([PROMPT]))
    before = dict(tiny_sfg.pipe.unet.attn_processors)
    ref = _guider_reference(tiny_sfg, guider, 8)
    alone = tiny_sfg(PROMPT, arm="sfg", sfg_scale=5.0, sfg_start_step=1, generator=gen(8), num_inference_steps=STEPS,
                     output_type="latent")
    torch.testing.assert_close(ref, alone.latents["sfg"], atol=ATOL, rtol=0)
    assert all(tiny_sfg.pipe.unet.attn_processors[k] is v for k, v in before.items())
    assert SegmentationFreeGuidance.from_config(guider.config).config == guider.config  # a value to name and hash


def test_shared_steps_run_once_and_nfe_counts_them_once(tiny_sfg):
    arms = arms_of(("cfg", "cfg", {}), ("sfg", "sfg", {}), ("early", "sfg", {"sfg_start_step": 1}),
                   ("apg", "apg", {}))
    out = generate_set(tiny_sfg, [PROMPT, "a red car"], arms, generator=[gen(0), gen(1)], output_type="latent")
    # Lanes: step 0 cfg/sfg/early + apg; step 1 cfg/sfg + apg + early; steps 2-3 cfg, apg, sfg, early.
    # Plain lanes and one SFG lane share a forward; a second SFG lane runs its own.
    assert out.unet_calls == 1 + 1 + 2 + 2
    assert out.nfe == {"cfg": 8, "sfg": 4, "early": 6, "apg": 8}
    assert out.unet_rows == 2 * sum(out.nfe.values())  # B = 2 prompts; every evaluation counted once
    assert out.nfe_alone == {"cfg": 8, "sfg": 8, "early": 8, "apg": 8}
    assert {(tuple(s["arms"]), s["steps"], s["counted_in"]) for s in out.shared} == {
        (("cfg", "sfg", "early"), 1, "cfg"), (("cfg", "sfg"), 1, "cfg")}
    for j, (p, seed) in enumerate(((PROMPT, 0), ("a red car", 1))):
        alone = tiny_sfg(p, arm="sfg", sfg_start_step=1, generator=gen(seed), num_inference_steps=STEPS, output_type="latent")
        torch.testing.assert_close(out.latents["early"][j : j + 1], alone.latents["sfg"], atol=ATOL, rtol=0)


def test_compute_matched_cfg_spends_what_pag_spends(tiny_sfg):
    arms = arms_of(("cfg", "cfg", {}), ("pag", "pag", {}), ("cfg-m", "cfg", {"match_nfe_of": "pag"}))
    assert arms[2].steps == 6 and arms[2].params["base_num_inference_steps"] == STEPS
    out = generate_set(tiny_sfg, PROMPT, arms, generator=gen(2), output_type="latent")
    assert out.nfe["cfg-m"] == out.nfe["pag"] == 3 * STEPS
    stock = tiny_sfg.pipe(PROMPT, generator=gen(2), num_inference_steps=6, output_type="latent").images
    torch.testing.assert_close(out.latents["cfg-m"], stock, atol=ATOL, rtol=0)


def test_a_stochastic_scheduler_forks_its_noise(tiny_sfg):
    from diffusers import EulerAncestralDiscreteScheduler

    original = tiny_sfg.pipe.scheduler
    tiny_sfg.pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(original.config)
    try:
        out = generate_set(tiny_sfg, PROMPT, arms_of(("cfg", "cfg", {}), ("sfg", "sfg", {})), generator=gen(7),
                           output_type="latent")
        stock = tiny_sfg.pipe(PROMPT, generator=gen(7), num_inference_steps=STEPS, output_type="latent").images
        alone = tiny_sfg(PROMPT, arm="sfg", generator=gen(7), num_inference_steps=STEPS, output_type="latent")
    finally:
        tiny_sfg.pipe.scheduler = original
    torch.testing.assert_close(out.latents["cfg"], stock, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.latents["sfg"], alone.latents["sfg"], atol=ATOL, rtol=0)


# -- SDXL ----------------------------------------------------------------------------------------
def test_sdxl_cfg_arm_equals_the_stock_sdxl_pipeline(tiny_sdxl):
    out = generate_set(tiny_sdxl, PROMPT, arms_of(("cfg", "cfg", {}), ("sfg", "sfg", {})), generator=gen(3),
                       output_type="np")
    stock = tiny_sdxl.pipe(PROMPT, generator=gen(3), num_inference_steps=STEPS, guidance_scale=7.5, output_type="latent").images
    torch.testing.assert_close(out.latents["cfg"], stock, atol=ATOL, rtol=0)
    pixels = tiny_sdxl.pipe(PROMPT, generator=gen(3), num_inference_steps=STEPS, guidance_scale=7.5, output_type="np").images
    assert abs(out.images["cfg"] - pixels).max() < 2e-3


def test_sdxl_pag_arm_equals_the_sdxl_pag_pipeline(tiny_sdxl):
    out = generate_set(tiny_sdxl, PROMPT, arms_of(("cfg", "cfg", {}), ("pag", "pag", {"pag_applied_layers": ["mid"]})),
                       generator=gen(5), output_type="latent")
    ref = _pag_pipeline(tiny_sdxl, ["mid"])(PROMPT, generator=gen(5), num_inference_steps=STEPS, guidance_scale=7.5,
                                            pag_scale=3.0, output_type="latent").images
    torch.testing.assert_close(out.latents["pag"], ref, atol=ATOL, rtol=0)


class _ReferenceSFG:
    """SFG cross-attention written out plainly for one batch-1 row (the spec's 4 steps)."""

    def __init__(self, mask, scale):
        self.mask, self.scale = mask, scale  # mask [77] bool

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        h = attn.heads
        q, k, v = (x.view(1, -1, h, x.shape[-1] // h).transpose(1, 2) for x in (q, k, v))  # [1, H, N|77, d]
        a = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)  # [1, H, N, 77]
        score = a.mean(1, keepdim=True).masked_fill(~self.mask, float("-inf"))
        chosen = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, score.argmax(-1, keepdim=True), True)
        a = torch.where(chosen, -self.scale * a, a)
        out = (a @ v).transpose(1, 2).reshape(1, -1, h * v.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))


def test_sdxl_sfg_arm_equals_a_plain_batch_1_reference(tiny_sdxl):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        retrieve_timesteps,
    )

    out = generate_set(tiny_sdxl, PROMPT, arms_of(("cfg", "cfg", {}), ("sfg", "sfg", {"sfg_scale": 5.0})),
                       generator=gen(6), output_type="latent")
    pipe = copy.copy(tiny_sdxl.pipe)
    pipe.scheduler = copy.deepcopy(tiny_sdxl.pipe.scheduler)
    unet = pipe.unet
    cond, uncond, pooled, neg_pooled = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1,
                                                          do_classifier_free_guidance=True)
    time_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=cond.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77).input_ids  # the first tokenizer's positions
    words = len(pipe.tokenizer(PROMPT).input_ids) - 2
    mask = torch.zeros(77, dtype=torch.bool)
    mask[1 : words + 1] = True
    assert ids[words + 1] == pipe.tokenizer.eos_token_id
    timesteps, _ = retrieve_timesteps(pipe.scheduler, STEPS, "cpu")
    latents = pipe.prepare_latents(1, 4, 64, 64, cond.dtype, "cpu", gen(6))
    stock = dict(unet.attn_processors)
    sfg_procs = {n: (_ReferenceSFG(mask, 5.0) if n.endswith("attn2.processor") else p) for n, p in stock.items()}

    def eps(x, states, pooled_, perturbed=False):
        unet.set_attn_processor(dict(sfg_procs if perturbed else stock))  # it empties the dict it gets
        try:
            return unet(x, t, encoder_hidden_states=states, added_cond_kwargs={"text_embeds": pooled_, "time_ids": time_ids},
                        return_dict=False)[0]
        finally:
            unet.set_attn_processor(dict(stock))

    for i, t in enumerate(timesteps):
        x = pipe.scheduler.scale_model_input(latents, t)
        if i < STEPS // 2:
            e_u, e_c = eps(x, uncond, neg_pooled), eps(x, cond, pooled)
            e = e_u + 7.5 * (e_c - e_u)
        else:
            e_c, e_bar = eps(x, cond, pooled), eps(x, cond, pooled, perturbed=True)
            e = e_bar + 3.0 * (e_c - e_bar)
        latents = pipe.scheduler.step(e, t, latents, return_dict=False)[0]
    torch.testing.assert_close(out.latents["sfg"], latents, atol=ATOL, rtol=0)
    assert (out.latents["sfg"] - out.latents["cfg"]).abs().max() > 100 * ATOL


@pytest.mark.parametrize("method, params", [("apg", {}), ("cfg-zero-star", {})])
def test_sdxl_runs_every_guider_arm(tiny_sdxl, method, params):
    out = generate_set(tiny_sdxl, PROMPT, arms_of(("cfg", "cfg", {}), ("g", method, params)), generator=gen(0),
                       output_type="latent")
    assert torch.isfinite(out.latents["g"]).all() and out.nfe["g"] == 2 * STEPS
