"""The participant side: the JSON API of api.md and the HTML pages that drive the same flow.

Nothing here may tell a participant which image came from which method: responses carry random
trial ids and image tokens only (see tests/test_blinding.py).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Form, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from app.web.clients import client_address
from app.web.deps import SessionDep, SettingsDep
from app.web.monitoring_stop import check_after_answer
from app.web.routes.media import prefetch
from app.studies.lifecycle import close_if_complete
from app.assignment import (
    CROWD_ID_KEYS,
    FlowError,
    attach,
    create_participant,
    next_trial,
    pair_views,
    participant_id_of,
    study_at_version,
    submit_answer,
    trial_image_tokens,
)
from app.web.guard import API_BODY_MAX, PARTICIPANT_TOKEN, PUBLIC_ID, bad_text, clean_text, same_origin
from app.store.models import Participant, Study, utcnow
from app.studies.config import SLUG_RE
from app.studies.comparing import Compared
from app.store.db import end_reads
from app.studies.pacing import FULL_MESSAGE, ended_full, ending, locks_answers, returned_message
from app.studies.flow import has_capacity, split_progress, trial_instruction, trial_questions
from app.templating import templates

router = APIRouter(max_body_size=API_BODY_MAX)

# Neutral name: even the product name would hint at the hypothesis under test.
COOKIE = "participant"
CONSENT_ERROR = "Please tick the consent box to take part."


def _error(e: FlowError) -> JSONResponse:
    body = {"detail": e.message}
    if e.reason:
        body["reason"] = e.reason
    return JSONResponse(body, status_code=e.status)


def _study(session, slug: str) -> Study:
    study = session.scalar(select(Study).where(Study.slug == slug)) if SLUG_RE.match(slug) else None
    # A draft shows nothing of itself (not even its title) until it opens.
    if study is None or study.state in ("draft", "archived"):
        raise HTTPException(404, "no such study")
    return study


# The per-request lookup, built once and bound per call (building a select() costs more CPU than
# Postgres spends running it): the participant and their study's version, whose config comes
# from the process's cache (`study_at_version`).
# A Core statement: its row becomes the session's Participant (`attach`) at a fraction of an ORM
# query's cost.
_PARTICIPANT_AND_STUDY_BY_TOKEN = (
    select(*Participant.__table__.c, Study.version.label("study_version"))
    .join(Study, Study.id == Participant.study_id)
    .where(Participant.token == bindparam("token"))
)


# ------------------------------------------------------------------ JSON API
class NewParticipant(BaseModel):
    external_ids: dict[str, Any] | None = None


class Answer(BaseModel):
    choice: Any = Field(default=None, description="1..5 as shown (one-question studies); validated in "
                                                  "app.assignment for a clear message")
    answers: Any = Field(default=None, description="{question key: 1..5} for every question of the study (issue 24)")
    request_id: Annotated[str, AfterValidator(clean_text)] = Field(min_length=1, max_length=100)
    response_ms: int | None = Field(default=None, ge=0, lt=2**31, description="client-measured, optional")
    compared: Compared | None = Field(default=None, description="how the images were compared (app.studies.comparing)")


# The JSON routes a participant calls on every trial open their session in the endpoint's own
# worker thread instead of taking SessionDep/SettingsDep: FastAPI runs each sync dependency (and
# both halves of a yield dependency) in a thread of its own, so that saves three thread hops per
# request.
def _session(request: Request) -> Session:
    return request.app.state.sessionmaker()


SIGNUP_LIMITED = "too many sign-ups from your network address; try again in a moment"


def _signup_wait(request: Request) -> int:
    """0, or the seconds this client address must wait before signing up again (429)."""
    return request.app.state.signup_limiter.take(client_address(request))


@router.post("/api/studies/{slug}/participants", status_code=201)
def api_new_participant(
    slug: str, request: Request, body: Annotated[NewParticipant | None, Body()] = None
) -> JSONResponse:
    wait = _signup_wait(request)
    if wait:
        return JSONResponse({"detail": SIGNUP_LIMITED, "reason": "rate_limited"}, status_code=429,
                            headers={"Retry-After": str(wait)})
    with _session(request) as session:
        study = _study(session, slug)
        try:
            participant, created = create_participant(session, study, body.external_ids if body else None, utcnow())
        except FlowError as e:
            return _error(e)
        end_reads(session)  # a returning participant only read
        return JSONResponse({"participant": participant.token}, status_code=201 if created else 200)


def trial_payload(session, result, participant: Participant, study: Study) -> dict[str, Any]:
    """The /next body: a trial (random id, prompt, two opaque image URLs) or the end."""
    position = result.trial.position if result.trial is not None else None
    progress = split_progress(participant.plan, position, result.done, result.total)
    if result.trial is None:
        return {"done": True, "progress": progress}
    shown = [result.trial] + ([result.preload] if result.preload is not None else [])
    tokens = trial_image_tokens(session, shown, study)
    prefetch(session, [token for pair in tokens for token in pair])  # the browser asks for them next
    payload: dict[str, Any] = {
        "trial": result.trial.public_id,
        "prompt": pair_views(session, {result.trial.pair_id})[result.trial.pair_id].prompt,
        "left": f"/i/{tokens[0][0]}",
        "right": f"/i/{tokens[0][1]}",
        "progress": progress,
        "practice": result.trial.kind == "practice",
        "instruction": trial_instruction(study, result.trial.kind),
        "questions": trial_questions(study),
        "preload": None,
    }
    if result.preload is not None:
        payload["preload"] = {"left": f"/i/{tokens[1][0]}", "right": f"/i/{tokens[1][1]}"}
    return payload


@router.get("/api/participants/{token}/next")
def api_next(token: str, request: Request) -> JSONResponse:
    with _session(request) as session:
        return _next(token, session, request.app.state.settings)


@router.get("/api/next")
def api_next_by_header(request: Request, x_participant: Annotated[str | None, Header()] = None) -> JSONResponse:
    """`/next` with the token in the `X-Participant` header (what the pages use): no token in URLs."""
    if not x_participant:
        raise HTTPException(401, "missing participant token (X-Participant header)")
    with _session(request) as session:
        return _next(x_participant, session, request.app.state.settings)


def _next(token: str, session, settings) -> JSONResponse:
    # The participant and their study in one round trip (fresh: a session lives for one request).
    found = session.connection().execute(_PARTICIPANT_AND_STUDY_BY_TOKEN, {"token": token}).first() if (
        PARTICIPANT_TOKEN.match(token)) else None
    if found is None:
        end_reads(session)
        raise HTTPException(403, "unknown participant token")
    values = dict(found._mapping)
    version = values.pop("study_version")
    participant = attach(session, Participant, values)
    study = study_at_version(session, participant.study_id, version)
    try:
        result = next_trial(session, participant, utcnow(), settings.hold_minutes, study)
    except FlowError as e:
        return _error(e)
    payload = trial_payload(session, result, participant, study)
    if result.trial is None:
        study = session.get(Study, participant.study_id)
        end = ending(session, study, participant)
        payload["returned"] = end == "returned"
        # The study filled up under them before they answered every trial they were promised.
        payload["full"] = ended_full(participant)
        if end == "code":
            payload["completion_code"] = study.completion_code
            payload["redirect_url"] = study.redirect_url
    end_reads(session)
    return JSONResponse(payload, headers={"Cache-Control": "no-store"})


@router.post("/api/trials/{trial_id}/answer")
def api_answer(
    trial_id: str,
    answer: Answer,
    request: Request,
    x_participant: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    with _session(request) as session:
        response, monitored_study = _answer(session, trial_id, answer, x_participant)
    if monitored_study is not None:  # the monitoring stop, checked once the answer is sent
        response.background = BackgroundTask(check_after_answer, request.app.state.sessionmaker, monitored_study)
    return response


def _answer(session: Session, trial_id: str, answer: Answer,
            x_participant: str | None) -> tuple[JSONResponse, int | None]:
    """The answer's response, and the study whose monitoring stop to check after it (or None)."""
    if not x_participant:
        raise HTTPException(401, "missing participant token (X-Participant header)")
    if not PARTICIPANT_TOKEN.match(x_participant):
        raise HTTPException(403, "unknown participant token")
    try:
        if not PUBLIC_ID.match(trial_id):
            participant_id_of(session, x_participant)  # an unknown participant hears that first
            raise FlowError(404, "unknown trial")
        # By token: the participant is looked up in the same round trip as the trial.
        result = submit_answer(
            session, x_participant, trial_id, answer.choice, answer.request_id, utcnow(), answer.response_ms,
            answer.compared.model_dump() if answer.compared else None, answer.answers,
        )
    except FlowError as e:
        end_reads(session)
        return _error(e), None
    # The score is not returned: with the choice it would reveal which side was the treatment.
    body = {
        "trial": result.trial_public_id,
        "choice": result.rating.choice,
        "request_id": result.rating.request_id,
        "answered_at": result.rating.answered_at.isoformat(),
        "too_fast": result.rating.too_fast,
    }
    if result.answers and len(result.answers) > 1:
        body["answers"] = result.answers
    headers = {"Cache-Control": "no-store"}
    if result.created and result.auto_close:
        close_if_complete(session, result.study_id)
    if not result.created:
        headers["X-Idempotent-Replay"] = "true"
    end_reads(session)  # a replay only read
    return JSONResponse(body, headers=headers), (result.study_id if result.created and result.monitoring_close else None)


# ------------------------------------------------------------------ HTML pages
def _cookie_participant(request: Request, session, study: Study) -> Participant | None:
    token = request.cookies.get(COOKIE)
    if not token or not PARTICIPANT_TOKEN.match(token):
        return None
    p = session.scalar(select(Participant).where(Participant.token == token))
    return p if p is not None and p.study_id == study.id else None


def _page(request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
    # Never from a cache: the trial page carries the participant's token, the done page the code.
    response = templates.TemplateResponse(request, f"participant/{name}", ctx, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/s/{slug}", response_class=HTMLResponse, include_in_schema=False)
def page_consent(slug: str, request: Request, session: SessionDep) -> Response:
    study = _study(session, slug)
    participant = _cookie_participant(request, session, study)
    if participant is not None and (study.state == "open" or participant.finished_at is not None):
        return RedirectResponse(f"/s/{slug}/run", status_code=303)
    if study.state != "open":
        return _page(request, "closed.html", 409, study=study)
    if not has_capacity(session, study, utcnow()):
        return _page(request, "full.html", 409, study=study)
    crowd = {k: request.query_params[k] for k in CROWD_ID_KEYS if request.query_params.get(k)}
    error = CONSENT_ERROR if request.query_params.get("error") == "consent" else None
    # Never from the cache: Back/Forward shows a fresh form, not a stale error or a ticked box.
    response = _page(request, "consent.html", study=study, crowd=crowd, error=error)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/s/{slug}/start", include_in_schema=False)
async def page_start(slug: str, request: Request, session: SessionDep, settings: SettingsDep,
                     consent: Annotated[str | None, Form()] = None) -> Response:
    study = _study(session, slug)
    if not same_origin(request):
        raise HTTPException(403, "this form must be sent from the study's own page")
    form = await request.form()
    crowd = {k: str(form[k]) for k in CROWD_ID_KEYS if form.get(k)}
    if consent != "yes":
        # Post/redirect/get: the error page is a plain GET, so Back never resubmits the form.
        query = urlencode({**crowd, "error": "consent"})
        return RedirectResponse(f"/s/{slug}?{query}", status_code=303)
    if study.state == "open" and not has_capacity(session, study, utcnow()):
        return _page(request, "full.html", 409, study=study)
    wait = _signup_wait(request)
    if wait:
        response = _page(request, "consent.html", 429, study=study, crowd=crowd, error=SIGNUP_LIMITED)
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        participant, _ = create_participant(session, study, crowd, utcnow(), request.cookies.get(COOKIE))
    except FlowError as e:
        if e.reason == "not_open":
            return _page(request, "closed.html", 409, study=study)
        # A crowd id that is too long or malformed, or already in use by someone else.
        shown = {k: v for k, v in crowd.items() if len(v) <= 200 and not bad_text(v)}
        return _page(request, "consent.html", e.status, study=study, crowd=shown, error=e.message)
    response = RedirectResponse(f"/s/{slug}/run", status_code=303)
    response.set_cookie(COOKIE, participant.token, max_age=60 * 60 * 24 * 30, path=f"/s/{slug}",
                        httponly=True, samesite="lax", secure=settings.secure_cookies)
    return response


@router.get("/s/{slug}/run", response_class=HTMLResponse, include_in_schema=False)
def page_run(slug: str, request: Request, session: SessionDep) -> Response:
    study = _study(session, slug)
    participant = _cookie_participant(request, session, study)
    if participant is None:
        return RedirectResponse(f"/s/{slug}", status_code=303)
    if participant.finished_at is not None:
        return RedirectResponse(f"/s/{slug}/done", status_code=303)
    if study.state != "open":
        return _page(request, "closed.html", 409, study=study)
    return _page(request, "trial.html", study=study, token=participant.token, locks=locks_answers(study),
                 questions=trial_questions(study))


@router.get("/s/{slug}/done", response_class=HTMLResponse, include_in_schema=False)
def page_done(slug: str, request: Request, session: SessionDep) -> Response:
    study = _study(session, slug)
    participant = _cookie_participant(request, session, study)
    if participant is None:
        return RedirectResponse(f"/s/{slug}", status_code=303)
    if participant.finished_at is None:
        return RedirectResponse(f"/s/{slug}/run", status_code=303)
    end = ending(session, study, participant)
    if end == "returned":
        return _page(request, "returned.html", study=study, message=returned_message(study))
    if end == "full":
        return _page(request, "full.html", study=study, ended=True, message=FULL_MESSAGE)
    return _page(request, "done.html", study=study, full_message=FULL_MESSAGE if ended_full(participant) else None)


@router.get("/s/{slug}/full", response_class=HTMLResponse, include_in_schema=False)
def page_full(slug: str, request: Request, session: SessionDep) -> Response:
    study = _study(session, slug)
    return _page(request, "full.html", study=study)
