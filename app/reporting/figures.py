"""Paper-ready figures of chosen pairs: one row per pair, baseline | treatment [| token map over
the treatment image], the prompt under each row; PNG or PDF at a chosen width. The same pairs,
downscaled to data URIs, make the gallery embedded in report.html.

Pairs are `app.reporting.explorer.study_pairs` dicts; images come from the database (the blinded copies
participants saw).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from sqlalchemy.orm import Session

from app.store.models import Image, Pair

FORMATS = {"png": "image/png", "pdf": "application/pdf"}
MAX_ROWS = 60


def _images(session: Session, pair_id: int) -> tuple[Any, Any, dict[str, Any] | None]:
    from PIL import Image as PILImage

    pair = session.get(Pair, pair_id)
    base, treat = (PILImage.open(io.BytesIO(session.get(Image, i).data)).convert("RGB")
                   for i in (pair.baseline_image_id, pair.treatment_image_id))
    return base, treat, pair.token_map


def _with_overlay(image: Any, token_map: dict[str, Any]) -> Any:
    from PIL import Image as PILImage

    from app.reporting.explorer import overlay_png

    overlay = PILImage.open(io.BytesIO(overlay_png(token_map, image.size))).convert("RGBA")
    return PILImage.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def figure_bytes(session: Session, pairs: list[dict[str, Any]], fmt: str = "png", width_in: float = 7.0,
                 maps: bool = False, dpi: int = 200) -> bytes:
    """The grid figure of `pairs` as PNG or PDF bytes, `width_in` inches wide."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if not pairs:
        raise ValueError("choose at least one pair")
    if len(pairs) > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} pairs in one figure")
    if not 1 <= width_in <= 30:
        raise ValueError("width must be between 1 and 30 inches")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = maps and any(p["has_token_map"] for p in pairs)
    cols = 3 if maps else 2
    cell = width_in / cols
    fig, axes = plt.subplots(len(pairs), cols, figsize=(width_in, len(pairs) * (cell + 0.3) + 0.25), squeeze=False)
    for row, p in enumerate(pairs):
        base, treat, token_map = _images(session, p["pair_id"])
        panels = [(base, p["baseline_arm"].upper()), (treat, p["treatment_arm"].upper())]
        if maps:
            panels.append((_with_overlay(treat, token_map) if token_map else None, "token map"))
        for col, (img, label) in enumerate(panels):
            ax = axes[row][col]
            ax.set_axis_off()
            if img is not None:
                ax.imshow(img, interpolation="nearest")
                if label == "token map":
                    _map_legend(ax, token_map)
            if row == 0:
                ax.set_title(label, fontsize=9)
        prompt = p["prompt"] if len(p["prompt"]) <= 90 else p["prompt"][:87] + "..."
        axes[row][0].text(0, -0.04, prompt, transform=axes[row][0].transAxes, fontsize=7, va="top", ha="left")
    # Fixed margins in inches (titles above, each prompt under its row), so the width is exact.
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.3 / height, bottom=0.25 / height, wspace=0.03,
                        hspace=0.3 / cell + 0.02)
    buf = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else {"Creator": None, "Producer": None}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    plt.close(fig)
    return buf.getvalue()


def _map_legend(ax: Any, token_map: dict[str, Any]) -> None:
    """The token map's legend inside its panel: the overlay's colours, repeated words told apart."""
    from matplotlib.patches import Patch

    from app.reporting.explorer import OVERLAY_ALPHA, legend_entries

    entries = legend_entries(token_map)
    if entries:
        handles = [Patch(facecolor=e["colour"], alpha=OVERLAY_ALPHA / 255, label=e["label"]) for e in entries]
        ax.legend(handles=handles, loc="lower left", fontsize=5, framealpha=0.8, handlelength=1, borderpad=0.3,
                  labelspacing=0.2)


def _data_uri(image: Any, size: int) -> str:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def gallery(session: Session, pairs: list[dict[str, Any]], size: int = 160) -> list[dict[str, Any]]:
    """The pairs with their images downscaled to `size` px as data URIs (for report.html)."""
    out = []
    for p in pairs:
        base, treat, token_map = _images(session, p["pair_id"])
        out.append({
            **{k: p[k] for k in ("prompt", "stratum", "mean_score", "n_ratings", "baseline_arm", "treatment_arm")},
            "baseline": _data_uri(base, size), "treatment": _data_uri(treat, size),
            "map": _data_uri(_with_overlay(treat, token_map), size) if token_map else None,
        })
    return out
