"""Downloads for the paper: a figure of chosen pairs (PNG or PDF) and the report bundle (zip)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import HTTPException, Query, Request
from fastapi.responses import Response

from app.web.deps import SessionDep
from app.web.pages import admin_router, get_study, render
from app.web.auth import CurrentAdmin
from app.reporting.explorer import study_pairs, top_pairs
from app.reporting.figures import FORMATS, figure_bytes
from app.statistics import StatisticsInputError

router = admin_router()


@router.get("/studies/{slug}/figure")
def figure_page(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    return render(request, "admin/figure.html", admin, study=study, pairs=study_pairs(session, study))


@router.get("/studies/{slug}/figure.{fmt}")
def figure_file(
    request: Request, slug: str, fmt: str, admin: CurrentAdmin, session: SessionDep,
    pair: Annotated[list[int], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    top: Annotated[int, Query(ge=0, le=20)] = 0,
    which: Literal["wins", "losses", "both"] = "both",
    width: Annotated[float, Query(ge=1, le=30)] = 7.0,
    maps: bool = False,
) -> Response:
    """`pair=ID` (repeated) picks pairs; `top=K` takes the K best (`which=wins`), worst
    (`losses`) or both per stratum instead. `width` in inches; `maps` adds the token-map column."""
    if fmt not in FORMATS:
        raise HTTPException(status_code=404, detail="figure formats: .png or .pdf")
    study = get_study(session, slug)
    pairs = study_pairs(session, study)
    if top:
        chosen = [] if which == "losses" else top_pairs(pairs, top, "wins")
        chosen += [p for p in ([] if which == "wins" else top_pairs(pairs, top, "losses")) if p not in chosen]
    else:
        by_id = {p["pair_id"]: p for p in pairs}
        unknown = [i for i in pair if i not in by_id]
        if unknown:
            raise HTTPException(status_code=422, detail=f"pairs not in this study: {unknown}")
        chosen = [by_id[i] for i in pair]
    if not chosen:
        # The form's own page again with the reason, never a raw JSON error in the browser.
        return render(request, "admin/figure.html", admin, 422, study=study, pairs=pairs,
                      message="Nothing selected: tick at least one pair, or set \"Top pairs per stratum\" above 0.")
    try:
        body = figure_bytes(session, chosen, fmt, width_in=width, maps=maps)
    except ValueError as e:
        return render(request, "admin/figure.html", admin, 422, study=study, pairs=pairs, message=str(e))
    return Response(body, media_type=FORMATS[fmt], headers={
        "Content-Disposition": f'attachment; filename="{slug}-pairs.{fmt}"', "Cache-Control": "no-store"})


@router.get("/studies/{slug}/report.zip")
def report_zip(slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    """What `sfgeval report` writes (report.html with its gallery, statistics.json, ratings.csv, the
    paper-ready methods, tables and figures), zipped. Only reads the database."""
    from app.reporting.report import write_study_report

    study = get_study(session, slug)
    with tempfile.TemporaryDirectory(prefix="sfgeval-report-") as tmp:
        try:
            paths = write_study_report(session, study, Path(tmp)).paths
        except StatisticsInputError as e:
            raise HTTPException(status_code=422, detail=f"cannot compute statistics: {e}") from None
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(set(paths.values())):
                zf.write(path, f"{slug}-report/{path.relative_to(tmp).as_posix()}")
    return Response(buf.getvalue(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{slug}-report.zip"', "Cache-Control": "no-store"})
