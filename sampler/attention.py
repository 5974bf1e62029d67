"""The segmentation-free cross-attention of SFG (spec: shared/spec/sfg-algorithm.md).

For every image patch of the perturbed batch rows, inside every text cross-attention (`attn2`)
module, the prompt token the patch attends to most (its "local semantic" k*) gets its attention
weight multiplied by `-scale` in every head; nothing else changes and nothing is renormalised.

Shapes: B batch rows, H heads, N query patches, K text tokens (77 for SD 1.x).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sampler.params import SamplerParams, check_token_select


def _check(probs: torch.Tensor, candidate_mask: torch.Tensor, token_select: str) -> None:
    check_token_select(token_select)
    if probs.ndim != 4 or candidate_mask.shape != (probs.shape[0], probs.shape[-1]):
        raise ValueError(
            f"expected probs [B, H, N, K] and candidate_mask [B, K]; got {tuple(probs.shape)} "
            f"and {tuple(candidate_mask.shape)}"
        )


def _candidate_bias(candidate_mask: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(bias [B, 1, 1, K]: 0 for candidates, -inf otherwise; has [B, 1, 1, 1]: any candidate)."""
    mask = candidate_mask.to(torch.bool)
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    return bias[:, None, None, :], mask.any(dim=-1)[:, None, None, None]


def _choose(probs: torch.Tensor, bias: torch.Tensor, has: torch.Tensor, token_select: str):
    """(idx [B, 1|H, N, 1] of k*, chosen: bool one-hot [B, 1|H, N, K], all False for rows
    without candidates). head_mean scores are the head-averaged weights."""
    scores = probs.mean(dim=1, keepdim=True) if token_select == "head_mean" else probs
    idx = (scores + bias).argmax(dim=-1, keepdim=True)
    chosen = torch.zeros(scores.shape, dtype=torch.bool, device=probs.device)
    chosen.scatter_(-1, idx, has.expand(idx.shape))
    return idx, chosen


def select_local_semantic(
    probs: torch.Tensor, candidate_mask: torch.Tensor, token_select: str = SamplerParams.token_select
) -> torch.Tensor:
    """Index k* of each patch's local semantic among the candidate tokens.

    probs: [B, H, N, K] post-softmax attention weights; candidate_mask: [B, K] bool.
    Returns int64 [B, N] (`head_mean`: argmax of the head-averaged weights) or [B, H, N]
    (`per_head`: each head's own argmax). Rows without any candidate (an empty prompt) get -1.
    """
    _check(probs, candidate_mask, token_select)
    bias, has = _candidate_bias(candidate_mask, probs.dtype)
    idx, _ = _choose(probs, bias, has, token_select)
    idx = torch.where(has, idx, -1).squeeze(-1)
    return idx.squeeze(1) if token_select == "head_mean" else idx


def sfg_attention_weights(
    probs: torch.Tensor, candidate_mask: torch.Tensor, scale: float, token_select: str = SamplerParams.token_select
) -> torch.Tensor:
    """SFG's modified cross-attention weights A'.

    probs: [B, H, N, K] post-softmax weights A; candidate_mask: [B, K] bool, True for tokens that
    may be a patch's local semantic (the prompt's word tokens; never BOS). For every (b, n) the
    selected token k*'s weight is multiplied by `-scale` in every head (`head_mean`: one k* per
    patch from the head-averaged weights; `per_head`: each head its own k*). No renormalisation,
    so scale = -1 is the identity and scale = 0 drops k*'s value from the patch's output.
    """
    _check(probs, candidate_mask, token_select)
    bias, has = _candidate_bias(candidate_mask, probs.dtype)
    _, chosen = _choose(probs, bias, has, token_select)
    return torch.where(chosen, probs * -float(scale), probs)


@dataclass
class SFGControl:
    """Shared, mutable state of all SFG processors of one UNet: the one mutable object of SFG.

    Who writes what: `scale` and `token_select` are fixed for a generation (from
    `SamplerParams`, checked here). `perturbed_from` and `candidate_mask` are the per-step state:
    `SFGPipeline._unet` sets them just before each UNet forward and resets them to None right
    after (also on error), so between UNet calls every processor is a pass-through. The
    processors only read them, and only add to `token_counts` (via `record`).

    `perturbed_from`: batch rows from this index on are the perturbed (eps_bar) rows; None turns
    SFG off so every module runs its original processor untouched. `candidate_mask` [R, K] bool
    for those R rows. When `record_queries` equals a module's number of query patches N, the
    chosen tokens are accumulated into `token_counts` [R, N, K] (one count per head-mean choice,
    or one per head with `per_head`) for the researcher's token maps.
    """

    scale: float = SamplerParams.sfg_scale
    token_select: str = SamplerParams.token_select
    perturbed_from: int | None = None
    candidate_mask: torch.Tensor | None = None
    record_queries: int | None = None
    token_counts: torch.Tensor | None = field(default=None, repr=False)
    _bias_key: tuple | None = field(default=None, repr=False)
    _bias: tuple | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_token_select(self.token_select)

    def record(self, chosen: torch.Tensor) -> None:
        """Add one module's choices, bool one-hot [R, 1|H, N, K], summed over heads."""
        counts = chosen.sum(dim=1, dtype=torch.float32)
        self.token_counts = counts if self.token_counts is None else self.token_counts + counts

    def candidate_bias(self, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """`_candidate_bias` of the current candidate_mask, computed once per mask and dtype."""
        # Holding the mask itself (not its id) so a new mask can never match a stale cache.
        if self._bias_key is None or self._bias_key[0] is not self.candidate_mask or self._bias_key[1] != dtype:
            self._bias = _candidate_bias(self.candidate_mask, dtype)
            self._bias_key = (self.candidate_mask, dtype)
        return self._bias


class SegmentationFreeAttnProcessor:
    """Attention processor for the text cross-attention (`attn2`) modules.

    Rows before `control.perturbed_from` (and every row when SFG is off) go through the module's
    original processor (diffusers' fused SDPA path by default). The perturbed rows get explicit
    weights A = softmax(QK^T / sqrt(d)) over the 77 text tokens, A' from
    `sfg_attention_weights`, then A'V and the module's output projection as usual.
    """

    def __init__(self, control: SFGControl, original=None):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.control = control
        self.original = original if original is not None else AttnProcessor2_0()
        self._stock_sdpa = type(self.original) is AttnProcessor2_0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        c = self.control
        start = c.perturbed_from
        if start is None or encoder_hidden_states is None or start >= hidden_states.shape[0]:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if self._plain(attn, hidden_states, attention_mask):
            return self._joint(attn, hidden_states, encoder_hidden_states, start)
        outs = []
        if start > 0:
            outs.append(
                self.original(
                    attn,
                    hidden_states[:start],
                    encoder_hidden_states[:start],
                    None if attention_mask is None else attention_mask[:start],
                    None if temb is None else temb[:start],
                )
            )
        outs.append(
            self._perturbed(
                attn,
                hidden_states[start:],
                encoder_hidden_states[start:],
                None if attention_mask is None else attention_mask[start:],
                None if temb is None else temb[start:],
            )
        )
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _plain(self, attn, hidden_states, attention_mask) -> bool:
        """SD 1.x's attn2 on the stock SDPA processor: nothing but projections and attention."""
        return (
            self._stock_sdpa
            and hidden_states.ndim == 3
            and attention_mask is None
            and attn.spatial_norm is None
            and attn.group_norm is None
            and not attn.norm_cross
            and attn.norm_q is None
            and attn.norm_k is None
            and not attn.residual_connection
            and attn.rescale_output_factor == 1.0
        )

    def _joint(self, attn, hidden_states, encoder_hidden_states, start: int):
        """Fast path: the q/k/v/out projections run once over the whole batch (as in the stock
        processor); rows before `start` take stock SDPA, the perturbed rows the explicit SFG
        weights."""
        b = hidden_states.shape[0]
        query, key, value, head_dim = _heads(attn, attn.to_q(hidden_states), encoder_hidden_states, b)
        parts = []
        if start > 0:
            parts.append(F.scaled_dot_product_attention(query[:start], key[:start], value[:start]))
        parts.append(self._sfg_attention(query[start:], key[start:], value[start:]))
        hidden_states = torch.cat(parts) if len(parts) > 1 else parts[0]
        hidden_states = hidden_states.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](hidden_states))

    def _sfg_attention(self, query, key, value, attention_mask=None):
        """A'V for the perturbed rows. query [R, H, N, d], key/value [R, H, K, d] -> [R, H, N, d]."""
        c = self.control
        if c.candidate_mask is None or c.candidate_mask.shape[0] != query.shape[0]:
            raise RuntimeError("SFG candidate_mask must have one row per perturbed batch row")
        scores = torch.matmul(query, key.transpose(-1, -2)) * (query.shape[-1] ** -0.5)  # [R, H, N, K]
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = scores.softmax(dim=-1, dtype=torch.float32)  # float32 softmax, as SDPA computes it
        bias, has = c.candidate_bias(probs.dtype)
        _, chosen = _choose(probs, bias.to(probs.device), has.to(probs.device), c.token_select)
        if c.record_queries == query.shape[2]:
            c.record(chosen)
        weights = torch.where(chosen, probs * -float(c.scale), probs)
        return torch.matmul(weights.to(value.dtype), value)

    def _perturbed(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb):
        """General path (any attn2 configuration): the perturbed rows on their own."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, height, width = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, height * width).transpose(1, 2)
        b = hidden_states.shape[0]
        k_len = encoder_hidden_states.shape[1]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query, key, value, head_dim = _heads(attn, query, encoder_hidden_states, b)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, k_len, b)
            attention_mask = attention_mask.view(b, attn.heads, -1, attention_mask.shape[-1])
        hidden_states = self._sfg_attention(query, key, value, attention_mask)  # [b, H, N, d]
        hidden_states = hidden_states.transpose(1, 2).reshape(b, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, ch, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _heads(attn, query, encoder_hidden_states, b: int):
    """Keys and values projected from the text tokens, and query, key and value split into heads.

    query [b, N, H*d] (already projected), encoder_hidden_states [b, K, C] ->
    (query [b, H, N, d], key [b, H, K, d], value [b, H, K, d], d).
    """
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)
    head_dim = key.shape[-1] // attn.heads

    def split(t):
        return t.view(b, -1, attn.heads, head_dim).transpose(1, 2)

    return split(query), split(key), split(value), head_dim


def cross_attention_names(unet) -> list[str]:
    """Processor names of the UNet's text cross-attention modules (the `attn2` of every
    transformer block), as keys of `unet.attn_processors`."""
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]
