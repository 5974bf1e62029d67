"""Researcher-only pictures of what SFG "saw" (the paper's Figure 8 idea).

For each patch, the prompt token SFG suppressed most often (k*, counted over the cross-attention
layers at one resolution and over the SFG steps) is drawn as a colour, with a legend of the prompt
words, beside the CFG and SFG images. These pictures name the arms: never serve them to
participants.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sampler.pipeline import TokenMap


def render_token_map(token_map: TokenMap, cfg_image: Image.Image, sfg_image: Image.Image) -> bytes:
    """PNG bytes: CFG image | SFG image | coloured token map with a legend of prompt words."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    chosen = token_map.chosen()  # [h, w], -1 = no record
    used = [int(k) for k in np.unique(chosen) if k >= 0]
    palette = plt.get_cmap("tab20").colors
    rgb = np.full(chosen.shape + (3,), 0.5)
    for j, k in enumerate(used):
        rgb[chosen == k] = palette[j % len(palette)]

    fig, axes = plt.subplots(1, 3, figsize=(11, 4.2), dpi=100)
    for ax, img, title in ((axes[0], cfg_image, "CFG"), (axes[1], sfg_image, "SFG")):
        ax.imshow(img)
        ax.set_title(title)
    axes[2].imshow(rgb, interpolation="nearest")
    axes[2].set_title(f"SFG token per patch ({chosen.shape[0]}x{chosen.shape[1]})")
    for ax in axes:
        ax.set_axis_off()
    total = token_map.counts.sum(axis=(0, 1))
    handles = [
        Patch(color=palette[j % len(palette)], label=f"{token_map.tokens[k]} (#{k}, {total[k]:.0f})")
        for j, k in enumerate(used)
    ]
    if handles:
        axes[2].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    prompt = token_map.prompt if len(token_map.prompt) <= 110 else token_map.prompt[:107] + "..."
    fig.suptitle(prompt, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
