"""Researcher-only pictures of what SFG "saw" (the paper's Figure 8 idea).

For each patch, the prompt token SFG suppressed most often (k*, counted over the cross-attention
layers at one resolution and over the SFG steps) is drawn as a colour, with a legend of the prompt
words, beside the CFG and SFG images. These pictures name the arms: never serve them to
participants.

The PNG also carries the map itself as a text chunk (`TOKEN_MAP_KEY`: JSON with `grid`, the token
index per patch or -1, and `legend`, [{index, word, colour}]) so a viewer can draw its own
overlay and legend without torch (`sampler.manifest.read_token_map`).
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from sampler.manifest import TOKEN_MAP_KEY
from sampler.pipeline import TokenMap


def token_map_data(token_map: TokenMap, colours: list[str]) -> dict:
    """The JSON the map PNG carries: the chosen token per patch and a legend in drawing colours."""
    chosen = token_map.chosen()
    used = [int(k) for k in np.unique(chosen) if k >= 0]
    return {
        "grid": chosen.astype(int).tolist(),
        "legend": [{"index": k, "word": token_map.tokens[k], "colour": colours[j]} for j, k in enumerate(used)],
    }


def render_token_map(token_map: TokenMap, cfg_image: Image.Image, sfg_image: Image.Image) -> bytes:
    """PNG bytes: CFG image | SFG image | coloured token map with a legend of prompt words."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    chosen = token_map.chosen()  # [h, w], -1 = no record
    used = [int(k) for k in np.unique(chosen) if k >= 0]
    palette = plt.get_cmap("tab20").colors
    colours = [matplotlib.colors.to_hex(palette[j % len(palette)]) for j in range(len(used))]
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
    data = json.dumps(token_map_data(token_map, colours), separators=(",", ":"))
    fig.savefig(buf, format="png", metadata={"Software": None, TOKEN_MAP_KEY: data})
    plt.close(fig)
    return buf.getvalue()
