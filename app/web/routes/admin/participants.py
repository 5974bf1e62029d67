"""The participants page: one row per participant with crowd ids, timing, quality checks and
exclusions, a suggested approve/reject decision, and the CSV files for the crowd platform."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import Response

from app.web.deps import SessionDep
from app.web.pages import FormDep, admin_router, get_study, redirect, twin
from app.web.schemas import ParticipantsPage
from app.web.auth import CurrentAdmin, flash
from app.analysis.participant_review import (
    completion_codes_csv,
    decisions_csv,
    participant_rows,
    set_review,
)

router = admin_router()


@twin(router, "/studies/{slug}/participants", "admin/participants.html", ParticipantsPage)
def participants_data(slug: str, admin: CurrentAdmin, session: SessionDep) -> ParticipantsPage:
    study = get_study(session, slug)
    return ParticipantsPage(study=study.slug, title=study.title, participants=participant_rows(session, study))


def _csv_download(body: str, filename: str) -> Response:
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@router.get("/studies/{slug}/participants/decisions.csv")
def decisions_file(slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    return _csv_download(decisions_csv(participant_rows(session, study)), f"{slug}-decisions.csv")


@router.get("/studies/{slug}/participants/completion-codes.csv")
def completion_codes_file(slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    return _csv_download(completion_codes_csv(participant_rows(session, study)), f"{slug}-completion-codes.csv")


@router.post("/studies/{slug}/participants/{participant_id}/decision")
def decide(request: Request, slug: str, participant_id: int, admin: CurrentAdmin, session: SessionDep,
           form: FormDep) -> Response:
    """Set (or with an empty decision, clear) the researcher's decision for one participant."""
    study = get_study(session, slug)
    try:
        set_review(session, study, participant_id, str(form.get("decision") or ""), str(form.get("reason") or ""))
    except ValueError as e:
        session.rollback()
        raise HTTPException(status_code=422, detail=str(e)) from None
    session.commit()
    flash(request, f"Participant #{participant_id}: decision saved.", "success")
    return redirect(f"/admin/studies/{slug}/participants#p{participant_id}")
