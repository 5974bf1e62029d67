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

TOKEN_SELECT = ("head_mean", "per_head")


def select_local_semantic(
    probs: torch.Tensor, candidate_mask: torch.Tensor, token_select: str = "head_mean"
) -> torch.Tensor:
    """Index k* of each patch's local semantic among the candidate tokens.

    probs: [B, H, N, K] post-softmax attention weights; candidate_mask: [B, K] bool.
    Returns int64 [B, N] (`head_mean`: argmax of the head-averaged weights) or [B, H, N]
    (`per_head`: each head's own argmax). Rows without any candidate (an empty prompt) get -1.
    """
    if token_select not in TOKEN_SELECT:
        raise ValueError(f"token_select must be one of {TOKEN_SELECT}, not {token_select!r}")
    if probs.ndim != 4 or candidate_mask.shape != (probs.shape[0], probs.shape[-1]):
        raise ValueError(
            f"expected probs [B, H, N, K] and candidate_mask [B, K]; got {tuple(probs.shape)} "
            f"and {tuple(candidate_mask.shape)}"
        )
    scores = probs.mean(dim=1) if token_select == "head_mean" else probs  # [B,N,K] | [B,H,N,K]
    view = (-1,) + (1,) * (scores.ndim - 2) + (probs.shape[-1],)
    mask = candidate_mask.to(torch.bool).view(view)
    idx = scores.masked_fill(~mask, float("-inf")).argmax(dim=-1)
    has_candidate = candidate_mask.any(dim=-1).view((-1,) + (1,) * (idx.ndim - 1))
    return torch.where(has_candidate, idx, torch.full_like(idx, -1))


def _apply_choice(probs: torch.Tensor, idx: torch.Tensor, scale: float) -> torch.Tensor:
    """probs with probs[b, h, n, idx] multiplied by -scale (idx -1: row left unchanged)."""
    if idx.ndim == 2:  # head_mean [B, N]: the same token in every head
        idx = idx.unsqueeze(1).expand(-1, probs.shape[1], -1)
    keep = idx < 0
    gather_idx = idx.clamp(min=0).unsqueeze(-1)  # [B, H, N, 1]
    chosen = probs.gather(-1, gather_idx)
    factor = torch.where(keep, 1.0, -float(scale)).unsqueeze(-1).to(probs.dtype)
    return probs.scatter(-1, gather_idx, chosen * factor)


def sfg_attention_weights(
    probs: torch.Tensor, candidate_mask: torch.Tensor, scale: float, token_select: str = "head_mean"
) -> torch.Tensor:
    """SFG's modified cross-attention weights A'.

    probs: [B, H, N, K] post-softmax weights A; candidate_mask: [B, K] bool, True for tokens that
    may be a patch's local semantic (the prompt's word tokens; never BOS). For every (b, n) the
    selected token k*'s weight is multiplied by `-scale` in every head (`head_mean`: one k* per
    patch from the head-averaged weights; `per_head`: each head its own k*). No renormalisation,
    so scale = -1 is the identity and scale = 0 drops k*'s value from the patch's output.
    """
    idx = select_local_semantic(probs, candidate_mask, token_select)
    return _apply_choice(probs, idx, scale)


@dataclass
class SFGControl:
    """Shared, mutable state of all SFG processors of one UNet (set by the pipeline per step).

    `perturbed_from`: batch rows from this index on are the perturbed (eps_bar) rows; None turns
    SFG off so every module runs its original processor untouched. `candidate_mask` [R, K] bool
    for those R rows. When `record_queries` equals a module's number of query patches N, the
    chosen tokens are accumulated into `token_counts` [R, N, K] (one count per head-mean choice,
    or one per head with `per_head`) for the researcher's token maps.
    """

    scale: float = 10.0
    token_select: str = "head_mean"
    perturbed_from: int | None = None
    candidate_mask: torch.Tensor | None = None
    record_queries: int | None = None
    token_counts: torch.Tensor | None = field(default=None, repr=False)

    def record(self, idx: torch.Tensor, num_tokens: int) -> None:
        onehot = F.one_hot(idx.clamp(min=0), num_tokens).to(torch.float32)
        onehot = onehot * (idx >= 0).unsqueeze(-1)
        if onehot.ndim == 4:  # per_head: [R, H, N, K] -> counts over heads
            onehot = onehot.sum(dim=1)
        self.token_counts = onehot if self.token_counts is None else self.token_counts + onehot


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

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        c = self.control
        start = c.perturbed_from
        if start is None or encoder_hidden_states is None or start >= hidden_states.shape[0]:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
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

    def _perturbed(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb):
        c = self.control
        if c.candidate_mask is None or c.candidate_mask.shape[0] != hidden_states.shape[0]:
            raise RuntimeError("SFG candidate_mask must have one row per perturbed batch row")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, height, width = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, height * width).transpose(1, 2)
        b, n, _ = hidden_states.shape
        k_len = encoder_hidden_states.shape[1]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)  # [b, H, N, d]
        key = key.view(b, -1, attn.heads, head_dim).transpose(1, 2)  # [b, H, K, d]
        value = value.view(b, -1, attn.heads, head_dim).transpose(1, 2)  # [b, H, K, d]
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        scores = torch.matmul(query, key.transpose(-1, -2)) * (head_dim**-0.5)  # [b, H, N, K]
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k_len, b)
            scores = scores + mask.view(b, attn.heads, -1, mask.shape[-1])
        probs = scores.float().softmax(dim=-1)  # float32 softmax, as upcast SDPA does
        idx = select_local_semantic(probs, c.candidate_mask.to(probs.device), c.token_select)
        if c.record_queries == n:
            c.record(idx, k_len)
        weights = _apply_choice(probs, idx, c.scale).to(value.dtype)

        hidden_states = torch.matmul(weights, value)  # [b, H, N, d]
        hidden_states = hidden_states.transpose(1, 2).reshape(b, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, ch, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_names(unet) -> list[str]:
    """Processor names of the UNet's text cross-attention modules (the `attn2` of every
    transformer block), as keys of `unet.attn_processors`."""
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]
