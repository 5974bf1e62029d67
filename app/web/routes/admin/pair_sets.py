"""Pair sets: the list (and its JSON twin) and the import from a server folder or a zip upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app.web.deps import SessionDep
from app.web.guard import max_upload_bytes
from app.web.pages import FormDep, admin_router, redirect, render, twin
from app.web.schemas import PairSetsList
from app.web.auth import CurrentAdmin, flash
from app.store.models import Pair, PairSet

router = admin_router()


def pair_set_rows(session: Session) -> list[dict[str, Any]]:
    counts = dict(session.execute(select(Pair.pair_set_id, func.count(Pair.id)).group_by(Pair.pair_set_id)).all())
    return [
        {
            "id": ps.id, "name": ps.name, "source": ps.source, "manifest_sha256": ps.manifest_sha256,
            "baseline_arm": ps.baseline_arm, "treatment_arm": ps.treatment_arm,
            "n_pairs": int(counts.get(ps.id, 0)), "imported_at": ps.imported_at,
        }
        for ps in session.scalars(select(PairSet).order_by(PairSet.id))
    ]


@twin(router, "/pair-sets", "admin/pair_sets.html", PairSetsList)
def pair_sets_data(admin: CurrentAdmin, session: SessionDep) -> PairSetsList:
    return PairSetsList(pair_sets=pair_set_rows(session))


@router.post("/pair-sets/import", max_body_size=max_upload_bytes())
def import_pair_set_page(request: Request, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    from app.studies.importer import import_pair_set
    from app.studies.uploads import import_zip
    from sampler.manifest import ManifestError

    folder_text = str(form.get("folder") or "").strip()
    upload = form.get("archive")
    has_upload = isinstance(upload, UploadFile) and bool(upload.filename)
    error = None
    pair_set = None
    if bool(folder_text) == has_upload:
        error = "Give either a folder on the server or a zip file (one of the two)."
    elif folder_text and not Path(folder_text).expanduser().is_dir():
        error = f"{Path(folder_text).expanduser()}: no such folder on the server"
    else:
        try:
            if folder_text:
                pair_set = import_pair_set(session, Path(folder_text).expanduser())
            else:
                assert isinstance(upload, UploadFile)
                pair_set = import_zip(session, upload.file, upload.filename or "upload.zip")
            session.commit()
        except (ManifestError, ValueError) as e:
            session.rollback()
            error = str(e)
    if error is not None:
        return render(
            request, "admin/pair_sets.html", admin, status_code=422, pair_sets=pair_set_rows(session), error=error
        )
    assert pair_set is not None
    n = session.scalar(select(func.count(Pair.id)).where(Pair.pair_set_id == pair_set.id))
    flash(request, f"Pair set #{pair_set.id} {pair_set.name!r}: {n} pairs "
                   f"({pair_set.treatment_arm} vs {pair_set.baseline_arm}).", "success")
    return redirect("/admin/pair-sets")
