"""SFG pipeline on the tiny SD 1.x model: the spec's 'Properties that must hold'."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

STEPS = 6
KW = dict(num_inference_steps=STEPS, height=64, width=64)
PROMPT = "a cute white dog next to a cat"
ATOL_LATENT = 1e-3  # latents are O(1); batch layouts differ, so float tolerance
ATOL_PIXEL = 2e-3  # pixels in [0, 1]


def gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def stock(tiny_sfg, prompt, seed, output_type):
    return tiny_sfg.pipe(prompt, generator=gen(seed), output_type=output_type, **KW).images


def test_tiny_model_loads_through_from_pretrained(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.cross_attention_dim == 32


def test_cfg_arm_equals_the_stock_pipeline(tiny_sfg):
    out = tiny_sfg.pairs(PROMPT, generator=gen(3), output_type="np", **KW)
    ref_latents = stock(tiny_sfg, PROMPT, 3, "latent")
    ref_pixels = stock(tiny_sfg, PROMPT, 3, "np")
    torch.testing.assert_close(out.latents["cfg"], ref_latents, atol=ATOL_LATENT, rtol=0)
    np.testing.assert_allclose(out.images["cfg"], ref_pixels, atol=ATOL_PIXEL, rtol=0)
    # and SFG really changed the other arm
    assert (out.latents["sfg"] - out.latents["cfg"]).abs().max() > 10 * ATOL_LATENT


def test_cfg_arm_equals_stock_for_several_prompts_per_batch(tiny_sfg):
    prompts = [PROMPT, "a red car in the snow"]
    out = tiny_sfg.pairs(prompts, generator=[gen(0), gen(1)], output_type="latent", **KW)
    for j, (p, seed) in enumerate(zip(prompts, (0, 1))):
        torch.testing.assert_close(out.latents["cfg"][j : j + 1], stock(tiny_sfg, p, seed, "latent"), atol=ATOL_LATENT, rtol=0)
        single = tiny_sfg(p, arm="sfg", generator=gen(seed), output_type="latent", **KW)
        torch.testing.assert_close(out.latents["sfg"][j : j + 1], single.latents["sfg"], atol=ATOL_LATENT, rtol=0)


def test_shared_prefix_sfg_arm_equals_sfg_from_scratch(tiny_sfg):
    pair = tiny_sfg.pairs(PROMPT, generator=gen(5), output_type="np", **KW)
    scratch = tiny_sfg(PROMPT, arm="sfg", generator=gen(5), output_type="np", **KW)
    torch.testing.assert_close(pair.latents["sfg"], scratch.latents["sfg"], atol=ATOL_LATENT, rtol=0)
    np.testing.assert_allclose(pair.images["sfg"], scratch.images["sfg"], atol=ATOL_PIXEL, rtol=0)


def test_shared_prefix_with_a_stochastic_scheduler(tiny_sfg):
    """Forking must also fork the generators an ancestral sampler draws its step noise from."""
    from diffusers import EulerAncestralDiscreteScheduler

    original = tiny_sfg.pipe.scheduler
    tiny_sfg.pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(original.config)
    try:
        pair = tiny_sfg.pairs(PROMPT, generator=gen(7), output_type="latent", **KW)
        scratch = tiny_sfg(PROMPT, arm="sfg", generator=gen(7), output_type="latent", **KW)
        ref = stock(tiny_sfg, PROMPT, 7, "latent")
    finally:
        tiny_sfg.pipe.scheduler = original
    torch.testing.assert_close(pair.latents["sfg"], scratch.latents["sfg"], atol=ATOL_LATENT, rtol=0)
    torch.testing.assert_close(pair.latents["cfg"], ref, atol=ATOL_LATENT, rtol=0)


@pytest.mark.parametrize("start", [STEPS, STEPS + 3])
def test_start_step_at_or_after_T_gives_exactly_cfg(tiny_sfg, start):
    out = tiny_sfg(PROMPT, arm="sfg", sfg_start_step=start, generator=gen(2), output_type="np", **KW)
    assert torch.equal(out.latents["sfg"], stock(tiny_sfg, PROMPT, 2, "latent"))
    np.testing.assert_array_equal(out.images["sfg"], stock(tiny_sfg, PROMPT, 2, "np"))


def test_processors_are_restored(tiny_sfg):
    unet = tiny_sfg.pipe.unet
    before = dict(unet.attn_processors)
    tiny_sfg.pairs(PROMPT, generator=gen(0), output_type="latent", **KW)
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)


def test_processors_are_restored_after_an_error(tiny_sfg, monkeypatch):
    unet = tiny_sfg.pipe.unet
    before = dict(unet.attn_processors)
    seen = {}
    calls = {"n": 0}
    real_step = type(tiny_sfg)._step

    def failing_step(self, arm, eps, t, eta):
        calls["n"] += 1
        if calls["n"] == STEPS // 2 + 1:  # inside phase 2, with SFG processors installed
            seen.update(unet.attn_processors)
            raise RuntimeError("boom")
        return real_step(self, arm, eps, t, eta)

    monkeypatch.setattr(type(tiny_sfg), "_step", failing_step)
    with pytest.raises(RuntimeError, match="boom"):
        tiny_sfg.pairs(PROMPT, generator=gen(0), output_type="latent", **KW)
    assert any(type(p).__name__ == "SegmentationFreeAttnProcessor" for p in seen.values())
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_token_maps_never_choose_bos_or_eos(tiny_sfg):
    prompt = "a red car next to a blue house"
    out = tiny_sfg.pairs(prompt, generator=gen(1), output_type="latent", record_token_maps=True, **KW)
    (tm,) = out.token_maps
    words = len(tiny_sfg.pipe.tokenizer(prompt).input_ids) - 2
    assert tm.counts.shape == (8, 8, 77)  # 64 px -> 8x8 latents; closest to 16x16 is 8x8
    assert tm.tokens[0] == "<|startoftext|>" and tm.tokens[1:3] == ["a", "red"]
    per_patch = tm.counts.sum(-1)
    # 3 attn2 layers at 8x8 in the tiny UNet, one choice each per SFG step
    assert np.all(per_patch == 3 * (STEPS - STEPS // 2))
    assert tm.counts[..., 0].sum() == 0
    assert tm.counts[..., words + 1 :].sum() == 0  # EOS and padding
    with_eos = tiny_sfg.pairs(prompt, generator=gen(1), output_type="latent", include_eos=True, record_token_maps=True, **KW)
    assert with_eos.token_maps[0].counts[..., 0].sum() == 0


def test_candidate_mask_from_the_tokenizer(tiny_sfg):
    mask = tiny_sfg.candidate_mask(["a cat", ""])
    assert mask[0].nonzero().flatten().tolist() == [1, 2]
    assert not mask[1].any()
    with_eos = tiny_sfg.candidate_mask(["a cat"], include_eos=True)
    assert not with_eos[0, 0] and with_eos[0, 1:].all()


def test_bad_arguments_are_refused(tiny_sfg):
    with pytest.raises(ValueError, match="token_select"):
        tiny_sfg.pairs(PROMPT, token_select="max", **KW)
    with pytest.raises(ValueError, match="generators"):
        tiny_sfg.pairs([PROMPT, PROMPT], generator=[gen(0)], **KW)
