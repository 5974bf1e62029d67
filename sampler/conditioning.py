"""Text conditioning of SD 1.x and SDXL pipelines in one shape, for our own denoising loops.

SD 1.x conditions the UNet on CLIP token embeddings only. SDXL concatenates the token embeddings
of two text encoders (feature axis; both tokenizers give 77 positions) and adds "added
conditioning": the second encoder's pooled embedding (`text_embeds`) and the size/crop ids
(`time_ids`), exactly as `StableDiffusionXLPipeline.__call__` builds them for the default
original/target size (height, width) and crop (0, 0). An empty negative prompt is zeros when the
pipeline's `force_zeros_for_empty_prompt` says so (SDXL's default), as in the stock pipeline.

`Conditioning.rows(kinds)` stacks the per-row inputs of one UNet call for a list of row kinds
('uncond' or 'cond'), each kind B rows (one per prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def is_sdxl(pipe) -> bool:
    """True for an SDXL pipeline (two text encoders and added conditioning)."""
    return hasattr(pipe, "text_encoder_2") and hasattr(pipe, "_get_add_time_ids")


@dataclass
class Conditioning:
    """Token embeddings [B, 77, D] of the prompts and of the empty negative prompt, and for SDXL
    the added conditioning of each ({'text_embeds': [B, P], 'time_ids': [B, 6]}), else None."""

    cond: torch.Tensor
    uncond: torch.Tensor
    cond_added: dict[str, torch.Tensor] | None = None
    uncond_added: dict[str, torch.Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.cond.dtype

    def rows(self, kinds: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """(encoder_hidden_states, added_cond_kwargs) for the row kinds in order, B rows each."""
        states = torch.cat([self.cond if k == "cond" else self.uncond for k in kinds])
        if self.cond_added is None:
            return states, None
        added = {
            key: torch.cat([(self.cond_added if k == "cond" else self.uncond_added)[key] for k in kinds])
            for key in self.cond_added
        }
        return states, added


def encode(pipe, prompts: list[str], height: int, width: int, device) -> Conditioning:
    """The conditioning of `prompts` (and of the empty negative prompt) as the stock pipeline
    computes it with classifier-free guidance on."""
    if not is_sdxl(pipe):
        cond, uncond = pipe.encode_prompt(prompts, device, 1, True)
        return Conditioning(cond, uncond)
    cond, uncond, pooled, neg_pooled = pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                                          do_classifier_free_guidance=True)
    proj = int(pooled.shape[-1]) if pipe.text_encoder_2 is None else pipe.text_encoder_2.config.projection_dim
    time_ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=cond.dtype,
                                      text_encoder_projection_dim=proj).to(device).repeat(len(prompts), 1)
    return Conditioning(cond, uncond, {"text_embeds": pooled.to(device), "time_ids": time_ids},
                        {"text_embeds": neg_pooled.to(device), "time_ids": time_ids})


def decode(pipe, latents: torch.Tensor, output_type: str):
    """Images from final latents as the stock pipeline decodes them: (images, nsfw flags or None)."""
    if output_type == "latent":
        return latents, None
    if not is_sdxl(pipe):
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        image, nsfw = pipe.run_safety_checker(image, pipe._execution_device, latents.dtype)
        denorm = [True] * image.shape[0] if nsfw is None else [not x for x in nsfw]
        return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=denorm), nsfw
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        pipe.upcast_vae()
        latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    image = vae.decode(latents, return_dict=False)[0]
    if upcast:
        vae.to(dtype=torch.float16)
    if pipe.watermark is not None:
        image = pipe.watermark.apply_watermark(image)
    return pipe.image_processor.postprocess(image, output_type=output_type), None


def native_size(pipe) -> int:
    """The model's native image side in pixels."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor
