"""The pair explorer's data: every main pair of a study with its answers, for researchers.

Scores are the stored `Rating.score` (-2..+2, positive = treatment preferred), over all main
ratings of the pair (before exclusions; the statistics page applies the study's rules).
`agreement` is the share of a pair's ratings on its most common side (treatment, baseline or
tie); `disagreement` is 1 - agreement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from app.store.models import Comparison, Pair, PairSet, Rating, Study, Trial

SCORES = (-2, -1, 0, 1, 2)
SORTS = {
    "score": lambda p: (p["mean_score"] is None, -(p["mean_score"] or 0)),
    "-score": lambda p: (p["mean_score"] is None, p["mean_score"] or 0),
    "disagreement": lambda p: (p["disagreement"] is None, -(p["disagreement"] or 0)),
    "ratings": lambda p: -p["n_ratings"],
    "prompt": lambda p: p["prompt"].lower(),
}


def _answers(scores: list[int]) -> dict[str, Any]:
    n = len(scores)
    counts = {str(s): scores.count(s) for s in SCORES}
    if not n:
        return {"n_ratings": 0, "distribution": counts, "mean_score": None, "agreement": None, "disagreement": None}
    sides = (sum(s > 0 for s in scores), sum(s < 0 for s in scores), sum(s == 0 for s in scores))
    agreement = max(sides) / n
    return {"n_ratings": n, "distribution": counts, "mean_score": round(sum(scores) / n, 4),
            "agreement": round(agreement, 4), "disagreement": round(1 - agreement, 4)}


def study_pairs(session: Session, study: Study) -> list[dict[str, Any]]:
    """Every pair of the study's comparisons, in comparison then pair order, with its answers."""
    rows = session.execute(
        select(Pair, Comparison.label, PairSet.baseline_arm, PairSet.treatment_arm, PairSet.params)
        .join(Comparison, and_(Comparison.pair_set_id == Pair.pair_set_id, Comparison.study_id == study.id))
        .join(PairSet, PairSet.id == Pair.pair_set_id)
        .order_by(Comparison.id, Pair.id)
    ).all()
    scores: dict[int, list[int]] = {}
    for pair_id, score in session.execute(
        select(Trial.pair_id, Rating.score).join(Rating, Rating.trial_id == Trial.id)
        .where(Trial.study_id == study.id, Trial.kind == "main", Rating.is_primary)  # the primary criterion
    ):
        scores.setdefault(pair_id, []).append(int(score))
    return [
        {
            "pair_id": pair.id, "pair_key": pair.pair_key, "pair_set": pair.pair_set_id, "comparison": label,
            "prompt_id": pair.prompt_id, "prompt": pair.prompt, "stratum": pair.stratum, "seed": pair.seed,
            "baseline_arm": baseline, "treatment_arm": treatment, "params": params or {},
            "has_token_map": pair.token_map is not None,
            **_answers(scores.get(pair.id, [])),
        }
        for pair, label, baseline, treatment, params in rows
    ]


def filter_pairs(pairs: list[dict[str, Any]], *, stratum: str | None = None, comparison: str | None = None,
                 sort: str = "score", min_ratings: int = 0) -> list[dict[str, Any]]:
    """Pairs of one stratum / comparison (None: all) with at least `min_ratings`, sorted by `sort`
    (one of SORTS: score = best for the treatment first, -score = worst first, disagreement)."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    kept = [p for p in pairs if (stratum is None or p["stratum"] == stratum)
            and (comparison is None or p["comparison"] == comparison) and p["n_ratings"] >= min_ratings]
    return sorted(kept, key=SORTS[sort])


def top_pairs(pairs: list[dict[str, Any]], k: int, which: str) -> list[dict[str, Any]]:
    """The k best ('wins') or worst ('losses') rated pairs of each stratum, strata in name order."""
    if which not in ("wins", "losses"):
        raise ValueError("which must be 'wins' or 'losses'")
    rated = [p for p in pairs if p["mean_score"] is not None]
    out = []
    for stratum in sorted({p["stratum"] or "" for p in rated}):
        group = filter_pairs([p for p in rated if (p["stratum"] or "") == stratum],
                             sort="score" if which == "wins" else "-score")
        out.extend(group[:k])
    return out


OVERLAY_ALPHA = 150


def legend_entries(token_map: dict[str, Any] | None, alpha: int = OVERLAY_ALPHA) -> list[dict[str, Any]]:
    """The token map's legend as the page shows it: `label` tells a word that occurs more than once
    in the prompt apart by its token position ("a (token 2)", "a (token 7)"), and `swatch` is the
    colour at the overlay's own opacity, so a swatch looks like the patches it names."""
    from PIL import ImageColor

    legend = (token_map or {}).get("legend", [])
    counts: dict[str, int] = {}
    for e in legend:
        counts[e["word"]] = counts.get(e["word"], 0) + 1
    out = []
    for e in legend:
        r, g, b = ImageColor.getrgb(e["colour"])[:3]
        label = f"{e['word']} (token {e['index']})" if counts[e["word"]] > 1 else e["word"]
        out.append({**e, "label": label, "swatch": f"rgba({r}, {g}, {b}, {alpha / 255:.3f})"})
    return out


def overlay_png(token_map: dict[str, Any], size: tuple[int, int], alpha: int = OVERLAY_ALPHA) -> bytes:
    """The token map as a translucent PNG of `size` (patch colours from the legend, no colour
    where nothing was recorded), to lay over the SFG image."""
    import io

    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageColor

    grid = np.asarray(token_map["grid"], dtype=np.int64)
    rgba = np.zeros(grid.shape + (4,), dtype=np.uint8)
    for entry in token_map["legend"]:
        rgba[grid == entry["index"]] = (*ImageColor.getrgb(entry["colour"])[:3], alpha)
    buf = io.BytesIO()
    PILImage.fromarray(rgba, "RGBA").resize(size, PILImage.NEAREST).save(buf, format="PNG")
    return buf.getvalue()
