"""SFG cross-attention: the pure weight function and the diffusers processor (spec properties)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

from sampler.attention import (  # noqa: E402
    SegmentationFreeAttnProcessor,
    SFGControl,
    select_local_semantic,
    sfg_attention_weights,
)

B, H, N, K, D_TXT = 3, 4, 10, 77, 16


def _module():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=D_TXT, heads=H, dim_head=8)
    attn.set_processor(AttnProcessor2_0())
    return attn.eval()


def _inputs(batch=B):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(batch, N, 32, generator=g)
    text = torch.randn(batch, K, D_TXT, generator=g) * 3
    return hidden, text


def _mask(batch=B, words=(5, 9, 1)):
    """Candidate mask like a tokenized prompt: positions 1..n are word tokens."""
    m = torch.zeros(batch, K, dtype=torch.bool)
    for b in range(batch):
        m[b, 1 : 1 + words[b % len(words)]] = True
    return m


def _probs(batch=B, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, H, N, K, generator=g).mul(3).softmax(-1)


def _explicit_probs(attn, hidden, text):
    q = attn.to_q(hidden).view(hidden.shape[0], -1, H, 8).transpose(1, 2)
    k = attn.to_k(text).view(text.shape[0], -1, H, 8).transpose(1, 2)
    v = attn.to_v(text).view(text.shape[0], -1, H, 8).transpose(1, 2)
    return (q @ k.transpose(-1, -2) * 8**-0.5).softmax(-1), v


def _run(attn, proc, hidden, text):
    attn.set_processor(proc)
    with torch.no_grad():
        return attn(hidden, encoder_hidden_states=text)


def test_scale_minus_one_is_identity():
    attn = _module()
    hidden, text = _inputs()
    stock = _run(attn, AttnProcessor2_0(), hidden, text)
    control = SFGControl(scale=-1.0, perturbed_from=0, candidate_mask=_mask())
    sfg = _run(attn, SegmentationFreeAttnProcessor(control), hidden, text)
    torch.testing.assert_close(sfg, stock, atol=1e-5, rtol=1e-5)
    probs = _probs()
    for mode in ("head_mean", "per_head"):
        assert torch.equal(sfg_attention_weights(probs, _mask(), -1.0, mode), probs)


@pytest.mark.parametrize("token_select", ["head_mean", "per_head"])
def test_scale_zero_removes_the_chosen_tokens_value(token_select):
    attn = _module()
    hidden, text = _inputs()
    mask = _mask()
    control = SFGControl(scale=0.0, token_select=token_select, perturbed_from=0, candidate_mask=mask)
    sfg = _run(attn, SegmentationFreeAttnProcessor(control), hidden, text)

    with torch.no_grad():
        probs, v = _explicit_probs(attn, hidden, text)  # [B,H,N,K], [B,H,K,d]
        scores = probs.mean(1, keepdim=True).expand(-1, H, -1, -1) if token_select == "head_mean" else probs
        scores = scores.masked_fill(~mask[:, None, None, :], -1.0)
        kstar = scores.argmax(-1)  # [B,H,N]
        # Stock attention, but patch n's output without token k*(n)'s value: A @ (V with V[k*] = 0).
        out = torch.empty(B, H, N, 8)
        for b in range(B):
            for h in range(H):
                for n in range(N):
                    v_removed = v[b, h].clone()
                    v_removed[kstar[b, h, n]] = 0
                    out[b, h, n] = probs[b, h, n] @ v_removed
        ref = attn.to_out[0](out.transpose(1, 2).reshape(B, N, H * 8))
    torch.testing.assert_close(sfg, ref, atol=1e-5, rtol=1e-5)


def test_bos_is_never_chosen_even_when_it_dominates():
    probs = _probs()
    probs[..., 0] += 50.0  # BOS takes almost all attention, as in SD
    probs[..., 20:] += 10.0  # so do EOS/padding positions
    probs = probs / probs.sum(-1, keepdim=True)
    mask = _mask()
    for mode in ("head_mean", "per_head"):
        idx = select_local_semantic(probs, mask, mode)
        assert (idx >= 1).all()
        assert mask.gather(1, idx.reshape(B, -1)).all(), "k* must be a candidate (a word token)"


def test_eos_and_padding_only_when_included():
    probs = _probs()
    probs[..., 30] += 20.0  # a padding position dominates every patch
    mask = _mask()
    assert not (select_local_semantic(probs, mask) == 30).any()
    with_eos = mask.clone()
    with_eos[:, 1:] = True  # include_eos: every position but BOS
    assert (select_local_semantic(probs, with_eos) == 30).all()


def test_only_the_chosen_weight_changes_and_nothing_is_renormalised():
    probs = _probs()
    mask = _mask()
    out = sfg_attention_weights(probs, mask, 10.0, "head_mean")
    idx = select_local_semantic(probs, mask, "head_mean")  # [B, N]
    onehot = torch.nn.functional.one_hot(idx, K).bool()[:, None].expand(-1, H, -1, -1)
    torch.testing.assert_close(out[onehot], -10.0 * probs[onehot])
    assert torch.equal(out[~onehot], probs[~onehot])
    # head_mean: one token per patch for all heads; per_head: each head its own argmax
    per_head = select_local_semantic(probs, mask, "per_head")
    masked = probs.masked_fill(~mask[:, None, None, :], -1)
    assert torch.equal(per_head, masked.argmax(-1))
    assert torch.equal(idx, masked.mean(1).argmax(-1))


def test_prompt_without_candidates_is_left_alone():
    probs = _probs()
    mask = _mask()
    mask[1] = False  # the empty prompt: no word tokens
    out = sfg_attention_weights(probs, mask, 10.0)
    assert torch.equal(out[1], probs[1])
    assert not torch.equal(out[0], probs[0])


def test_rows_before_the_perturbed_part_take_the_stock_path():
    attn = _module()
    hidden, text = _inputs(batch=4)
    stock = _run(attn, AttnProcessor2_0(), hidden, text)
    control = SFGControl(scale=10.0, perturbed_from=3, candidate_mask=_mask(batch=1))
    sfg = _run(attn, SegmentationFreeAttnProcessor(control), hidden, text)
    torch.testing.assert_close(sfg[:3], stock[:3], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(sfg[3], stock[3], atol=1e-3)
    control.perturbed_from = None  # SFG off: exactly the original processor
    assert torch.equal(_run(attn, SegmentationFreeAttnProcessor(control), hidden, text), stock)


def test_choices_are_recorded_at_the_requested_resolution():
    attn = _module()
    hidden, text = _inputs()
    control = SFGControl(perturbed_from=0, candidate_mask=_mask(), record_queries=N)
    _run(attn, SegmentationFreeAttnProcessor(control), hidden, text)
    _run(attn, SegmentationFreeAttnProcessor(control), hidden, text)
    counts = control.token_counts
    assert counts.shape == (B, N, K)
    assert torch.equal(counts.sum(-1), torch.full((B, N), 2.0))  # one choice per patch per call
    assert counts[..., 0].sum() == 0
    other = SFGControl(perturbed_from=0, candidate_mask=_mask(), record_queries=N + 1)
    _run(attn, SegmentationFreeAttnProcessor(other), hidden, text)
    assert other.token_counts is None


def test_general_path_matches_the_fast_path():
    """Modules whose original processor is not stock SDPA take the general (split) path."""
    from diffusers.models.attention_processor import AttnProcessor

    attn = _module()
    hidden, text = _inputs(batch=4)
    for mode in ("head_mean", "per_head"):
        fast = SFGControl(scale=10.0, token_select=mode, perturbed_from=2, candidate_mask=_mask(batch=2), record_queries=N)
        general = SFGControl(scale=10.0, token_select=mode, perturbed_from=2, candidate_mask=_mask(batch=2), record_queries=N)
        out_fast = _run(attn, SegmentationFreeAttnProcessor(fast), hidden, text)
        out_general = _run(attn, SegmentationFreeAttnProcessor(general, AttnProcessor()), hidden, text)
        torch.testing.assert_close(out_general, out_fast, atol=1e-5, rtol=1e-5)
        assert torch.equal(general.token_counts, fast.token_counts)
