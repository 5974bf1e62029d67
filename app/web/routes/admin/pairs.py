"""The pair explorer: every pair of a study with its images labelled by arm, its SFG token map
and its answers; sortable and filterable, each pair at a permalink. Admin only: these pages
name the arms, so nothing here is reachable from the participant side."""

from __future__ import annotations

from typing import Literal

from fastapi import HTTPException
from fastapi.responses import Response

from app.web.deps import SessionDep
from app.web.pages import admin_router, get_study, twin
from app.web.schemas import PairDetail, PairList
from app.web.auth import CurrentAdmin
from app.reporting.explorer import SORTS, filter_pairs, legend_entries, overlay_png, study_pairs
from app.store.models import Image, Pair

router = admin_router()

SortKey = Literal["score", "-score", "disagreement", "ratings", "prompt"]
assert set(SortKey.__args__) == set(SORTS)  # type: ignore[attr-defined]


@twin(router, "/studies/{slug}/pairs", "admin/pairs.html", PairList)
def pairs_data(slug: str, admin: CurrentAdmin, session: SessionDep, sort: SortKey = "score",
               stratum: str | None = None, comparison: str | None = None) -> PairList:
    study = get_study(session, slug)
    pairs = study_pairs(session, study)
    return PairList(
        study=study.slug, title=study.title, sort=sort, stratum=stratum or None, comparison=comparison or None,
        strata=sorted({p["stratum"] for p in pairs if p["stratum"]}),
        comparisons=list(dict.fromkeys(p["comparison"] for p in pairs)),
        pairs=filter_pairs(pairs, stratum=stratum or None, comparison=comparison or None, sort=sort),
    )


@twin(router, "/studies/{slug}/pairs/{pair_id}", "admin/pair.html", PairDetail)
def pair_data(slug: str, pair_id: int, admin: CurrentAdmin, session: SessionDep) -> PairDetail:
    study = get_study(session, slug)
    summary = next((p for p in study_pairs(session, study) if p["pair_id"] == pair_id), None)
    if summary is None:
        raise HTTPException(status_code=404, detail=f"pair {pair_id} is not in study {slug!r}")
    pair = session.get(Pair, pair_id)
    legend = legend_entries(pair.token_map)
    return PairDetail(study=study.slug, title=study.title, pair=summary, legend=legend)


@router.get("/pairs/{pair_id}/{which}.png")
def pair_image(pair_id: int, which: Literal["baseline", "treatment", "map"], admin: CurrentAdmin,
               session: SessionDep) -> Response:
    """A pair's image by arm, or its token map as an overlay the size of the SFG image."""
    pair = session.get(Pair, pair_id)
    if pair is None:
        raise HTTPException(status_code=404, detail=f"no pair {pair_id}")
    image = session.get(Image, pair.treatment_image_id if which != "baseline" else pair.baseline_image_id)
    if which == "map":
        if pair.token_map is None:
            raise HTTPException(status_code=404, detail="this pair has no token map (generate --save-maps)")
        body = overlay_png(pair.token_map, (image.width, image.height))
    else:
        body = image.data
    return Response(body, media_type="image/png", headers={"Cache-Control": "private, no-store"})
