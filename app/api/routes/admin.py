"""Admin and researcher pages under /admin: log in, configure studies, import pair sets, watch, export.

Every page needs a logged-in admin (`CurrentAdmin`) except the login form; every POST carries the
session's CSRF token (checked once for the whole router by `verify_csrf`). Pages a researcher
reads have a JSON twin (`/admin/studies.json`, `.../progress.json`, `.../config.json`,
`.../export.json`). All study writes go through `app.study_config`, which bumps the version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from app.api.deps import SessionDep, SettingsDep
from app.auth import (
    CurrentAdmin,
    authenticate,
    bootstrap_admin,
    csrf_token,
    flash,
    login_session,
    logout_session,
    pop_flashes,
    safe_next,
    verify_csrf,
)
from app.models import AdminUser, Pair, PairSet, Rating, Study, StudyVersion, Trial
from app.progress import study_progress
from app.studies import (
    TRANSITIONS,
    StudyError,
    create_study,
    has_ratings,
    parse_config,
    set_state,
    study_config,
    update_study,
)
from app.templating import templates

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(verify_csrf)])

ACTION_NAMES = {"open": "Open", "closed": "Close", "archived": "Archive"}
# Upper bound on an uploaded pair-set zip once unpacked (guards against zip bombs).
MAX_UNPACKED_BYTES = 4 << 30


async def read_form(request: Request) -> FormData:
    """The submitted form (Starlette caches it, so the CSRF check and the route share one parse)."""
    return await request.form()


FormDep = Annotated[FormData, Depends(read_form)]


def render(request: Request, name: str, admin: AdminUser | None, status_code: int = 200, **ctx: Any) -> Response:
    ctx.update(admin=admin, csrf_token=csrf_token(request), flashes=pop_flashes(request))
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    # Admin pages are never framed (clickjacking on the state and edit buttons).
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def get_study(session: Session, slug: str) -> Study:
    study = session.scalar(select(Study).where(Study.slug == slug))
    if study is None:
        raise HTTPException(status_code=404, detail=f"no study with slug {slug!r}")
    return study


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


# --- login ---------------------------------------------------------------------------------

@router.get("", include_in_schema=False)
def admin_home() -> RedirectResponse:
    return redirect("/admin/studies")


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "admin/login.html", None, next=safe_next(next), username="", error=None)


@router.post("/login")
def login(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    if not getattr(request.app.state, "admin_bootstrapped", False):
        # The settings/env admin (SFGEVAL_ADMIN_USER / SFGEVAL_ADMIN_PASSWORD) exists from the
        # first login attempt on, whatever created the schema.
        bootstrap_admin(session, settings)
        request.app.state.admin_bootstrapped = True
    username = str(form.get("username") or "")
    user = authenticate(session, username, str(form.get("password") or ""))
    next_url = safe_next(str(form.get("next") or ""))
    if user is None:
        return render(
            request, "admin/login.html", None, status_code=401, next=next_url, username=username,
            error="Wrong user name or password.",
        )
    login_session(request, user)
    return redirect(next_url)


@router.post("/logout")
def logout(request: Request) -> Response:
    logout_session(request)
    return redirect("/admin/login")


# --- studies -------------------------------------------------------------------------------

class ExclusionRules(BaseModel):
    """The exclusion-rule fields of the study form (shares in 0..1, times in ms; None = rule off)."""

    model_config = ConfigDict(extra="allow")

    fail_gold: bool = True
    min_response_ms: int | None = Field(None, ge=0)
    max_fast_share: float | None = Field(None, ge=0, le=1)
    straight_lining: bool = True
    min_consistency: float | None = Field(None, ge=0, le=1)
    max_side_bias: float | None = Field(None, ge=0.5, le=1)


def config_error(e: ValidationError, prefix: str) -> str:
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())


def parse_config_text(text: str) -> dict[str, Any]:
    """A config file's text (YAML, or JSON which is YAML) as a dict; StudyError says where it breaks."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StudyError(f"the config is not valid YAML or JSON{where}") from None
    if not isinstance(data, dict):
        raise StudyError("the config must be a mapping of field names to values (title, pair_sets, ...)")
    return data


def dump_config(config: dict[str, Any], fmt: str = "yaml") -> str:
    """A config dict as a file `sfgeval study create` reads (YAML block style, or JSON)."""
    import yaml

    if fmt == "json":
        return json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)


def study_rows(session: Session) -> list[dict[str, Any]]:
    counts = dict(
        session.execute(
            select(Trial.study_id, func.count(Rating.id))
            .join(Rating, Rating.trial_id == Trial.id)
            .where(Trial.kind != "practice")
            .group_by(Trial.study_id)
        ).all()
    )
    return [
        {"slug": s.slug, "title": s.title, "state": s.state, "version": s.version, "ratings": int(counts.get(s.id, 0))}
        for s in session.scalars(select(Study).order_by(Study.created_at.desc(), Study.id.desc()))
    ]


@router.get("/studies")
def studies_page(request: Request, admin: CurrentAdmin, session: SessionDep) -> Response:
    return render(request, "admin/studies.html", admin, studies=study_rows(session))


@router.get("/studies.json")
def studies_json(admin: CurrentAdmin, session: SessionDep) -> dict[str, Any]:
    return {"studies": study_rows(session)}


def form_values(config: dict[str, Any]) -> dict[str, Any]:
    """Template values for the study form from a config dict (as exported or as submitted)."""
    rules = config.get("exclusion_rules")
    return {
        **config,
        "selected": {int(i) for i in config.get("pair_sets") or []},
        "exclusion_rules": rules if isinstance(rules, dict) else {},
    }


def blank_form() -> dict[str, Any]:
    config = parse_config({"title": "x", "pair_sets": [1]}).model_dump()
    config.update(title="", pair_sets=[], seed=None)
    return form_values(config)


def _opt(value: Any) -> Any:
    """Blank form field → None ("not set"); anything else goes to validation as is."""
    value = value.strip() if isinstance(value, str) else value
    return None if value in (None, "") else value


def view_fields(form: FormData) -> dict[str, Any]:
    """The "participant's view" fields of the study form (blank: the config default)."""
    fields = {
        "compare_tools": "compare_tools" in form,
        "fast_share_limit": _opt(form.get("fast_share_limit")),
        "returned_message": _opt(form.get("returned_message")),
        "gold_instruction": _opt(form.get("gold_instruction")),
    }
    for name in ("max_upscale", "fast_answers"):
        if _opt(form.get(name)) is not None:
            fields[name] = _opt(form.get(name))
    return fields


def form_to_config(form: FormData, study: Study | None, locked: bool = False) -> dict[str, Any]:
    """The submitted study form as a config dict for `app.studies` (which validates it).

    `locked`: the study has ratings, so its exclusion rules stay as they were set before data
    came in (the form shows them disabled; disabled inputs are not submitted) and the seed stays.
    Raises StudyError for a malformed exclusion rule.
    """
    pair_sets = []
    for raw in form.getlist("pair_set"):
        try:
            pair_sets.append(int(raw))
        except (TypeError, ValueError):
            continue
    if study is not None:
        # Keep the study's own order of comparisons, so re-saving the form is not a change.
        order = {c.pair_set_id: i for i, c in enumerate(study.comparisons)}
        pair_sets.sort(key=lambda i: (order.get(i, len(order)), i))
    if study is not None and locked:
        exclusion = dict(study.exclusion_rules or {})
    else:
        try:
            exclusion = ExclusionRules.model_validate(
                {
                    **(study.exclusion_rules if study is not None else {}),
                    "fail_gold": "ex_fail_gold" in form,
                    "straight_lining": "ex_straight_lining" in form,
                    "min_response_ms": _opt(form.get("ex_min_response_ms")),
                    "max_fast_share": _opt(form.get("ex_max_fast_share")),
                    "min_consistency": _opt(form.get("ex_min_consistency")),
                    "max_side_bias": _opt(form.get("ex_max_side_bias")),
                }
            ).model_dump()
        except ValidationError as e:
            raise StudyError(config_error(e, "exclusion_rules.")) from None
    config: dict[str, Any] = {
        "title": str(form.get("title") or "").strip(),
        "instructions": str(form.get("instructions") or "").strip(),
        "question": str(form.get("question") or "").strip(),
        "scale_labels": [str(form.get(f"scale_label_{i}") or "").strip() for i in range(1, 6)],
        "pair_sets": pair_sets,
        "pairs_per_participant": _opt(form.get("pairs_per_participant")),
        "ratings_per_pair": _opt(form.get("ratings_per_pair")),
        "practice_trials": _opt(form.get("practice_trials")) or 0,
        "gold_rate": _opt(form.get("gold_rate")) or 0,
        "repeats": _opt(form.get("repeats")) or 0,
        "min_response_ms": _opt(form.get("min_response_ms")) or 0,
        "hold_minutes": _opt(form.get("hold_minutes")),
        "completion_code": _opt(form.get("completion_code")),
        "redirect_url": _opt(form.get("redirect_url")),
        "exclusion_rules": exclusion,
        **view_fields(form),
    }
    if study is None:
        config["slug"] = _opt(form.get("slug"))
        config["seed"] = _opt(form.get("seed"))
    elif not locked and _opt(form.get("seed")) is not None:
        config["seed"] = _opt(form.get("seed"))
    if not config["pair_sets"]:
        raise StudyError("choose at least one pair set (comparison)")
    return config


def _render_form(
    request: Request, admin: AdminUser, session: Session, study: Study | None, form: dict[str, Any],
    error: str | None = None, locked: bool = False,
) -> Response:
    return render(
        request, "admin/study_form.html", admin, status_code=422 if error else 200, study=study,
        form=form, locked=locked, error=error, pair_sets=pair_set_rows(session),
        action=f"/admin/studies/{study.slug}/edit" if study else "/admin/new-study",
    )


@router.get("/new-study")
def new_study_page(request: Request, admin: CurrentAdmin, session: SessionDep) -> Response:
    return _render_form(request, admin, session, None, blank_form())


@router.post("/new-study")
def create_study_from_form(request: Request, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    raw: dict[str, Any] = {}
    try:
        raw = form_to_config(form, None)
        study = create_study(session, raw)
        session.commit()
    except StudyError as e:
        session.rollback()
        shown = {**blank_form(), **{k: v for k, v in raw.items() if v is not None}, "title": form.get("title") or ""}
        return _render_form(request, admin, session, None, form_values(shown), str(e))
    flash(request, f"Study {study.slug!r} created (version 1, {study.state}).", "success")
    return redirect(f"/admin/studies/{study.slug}")


@router.get("/new-study/from-config")
def import_config_page(request: Request, admin: CurrentAdmin) -> Response:
    return render(request, "admin/config_import.html", admin, error=None, config_text="")


@router.post("/new-study/from-config")
def import_config(request: Request, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    upload = form.get("config_file")
    text = str(form.get("config_text") or "")
    study = None
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            try:
                text = upload.file.read().decode("utf-8")
            except UnicodeDecodeError:
                raise StudyError(f"{upload.filename}: not a UTF-8 text file") from None
        if not text.strip():
            raise StudyError("choose a config file or paste its text")
        study = create_study(session, parse_config_text(text))
        session.commit()
    except StudyError as e:
        session.rollback()
        return render(request, "admin/config_import.html", admin, status_code=422, error=str(e), config_text=text)
    flash(request, f"Study {study.slug!r} created from the config file.", "success")
    return redirect(f"/admin/studies/{study.slug}")


@router.get("/studies/{slug}")
def study_page(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    counts = dict(session.execute(select(Pair.pair_set_id, func.count(Pair.id)).group_by(Pair.pair_set_id)).all())
    comparisons = [
        {"pair_set_id": c.pair_set_id, "label": c.label, "n_pairs": int(counts.get(c.pair_set_id, 0))}
        for c in study.comparisons
    ]
    versions = [
        {"version": v.version, "created_at": v.created_at, "config_yaml": dump_config(v.config)}
        for v in session.scalars(
            select(StudyVersion).where(StudyVersion.study_id == study.id).order_by(StudyVersion.version.desc())
        )
    ]
    return render(
        request, "admin/study.html", admin, study=study, comparisons=comparisons, versions=versions,
        transitions=TRANSITIONS.get(study.state, ()), action_names=ACTION_NAMES,
        participant_link=str(request.base_url).rstrip("/") + f"/s/{study.slug}",
    )


@router.get("/studies/{slug}/edit")
def edit_study_page(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    if study.state == "archived":
        flash(request, "This study is archived and can no longer be edited.", "error")
        return redirect(f"/admin/studies/{slug}")
    return _render_form(
        request, admin, session, study, form_values(study_config(study)), locked=has_ratings(session, study)
    )


@router.post("/studies/{slug}/edit")
def edit_study(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    study = get_study(session, slug)
    locked = has_ratings(session, study)
    current = study_config(study)
    raw: dict[str, Any] = {}
    try:
        raw = form_to_config(form, study, locked)
        before = study.version
        update_study(session, study, raw)
        session.commit()
        changed = study.version != before
    except StudyError as e:
        session.rollback()
        return _render_form(request, admin, session, study, form_values({**current, **raw}), str(e), locked)
    if changed:
        flash(request, f"Saved as version {study.version}.", "success")
    else:
        flash(request, "Nothing changed; the version stays the same.", "info")
    return redirect(f"/admin/studies/{study.slug}")


@router.post("/studies/{slug}/state")
def change_state(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    study = get_study(session, slug)
    target = str(form.get("state") or "")
    try:
        set_state(session, study, target)
        session.commit()
    except StudyError as e:
        session.rollback()
        flash(request, str(e)[:1].upper() + str(e)[1:], "error")
        return redirect(f"/admin/studies/{slug}")
    flash(request, f"The study is now {study.state} (version {study.version}).", "success")
    return redirect(f"/admin/studies/{slug}")


@router.get("/studies/{slug}/config.{fmt}")
def study_config_file(slug: str, fmt: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    if fmt not in ("yaml", "json"):
        raise HTTPException(status_code=404, detail="config formats: .yaml or .json")
    study = get_study(session, slug)
    media = "application/json" if fmt == "json" else "application/yaml"
    return Response(
        dump_config(study_config(study), fmt), media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{slug}.{fmt}"'},
    )


# --- progress and export -------------------------------------------------------------------

@router.get("/studies/{slug}/progress")
def progress_page(request: Request, slug: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    study = get_study(session, slug)
    return render(request, "admin/progress.html", admin, study=study, p=study_progress(session, study))


@router.get("/studies/{slug}/progress.json")
def progress_json(slug: str, admin: CurrentAdmin, session: SessionDep) -> JSONResponse:
    study = get_study(session, slug)
    return JSONResponse(study_progress(session, study), headers={"Cache-Control": "no-store"})


@router.get("/studies/{slug}/export.{fmt}")
def export_ratings(slug: str, fmt: str, admin: CurrentAdmin, session: SessionDep) -> Response:
    from app import export

    if fmt not in ("csv", "json"):
        raise HTTPException(status_code=404, detail="export formats: .csv or .json")
    study = get_study(session, slug)
    rows = export.rating_rows(session, study)
    if fmt == "csv":
        body, media = export.rows_to_csv(rows), "text/csv; charset=utf-8"
    else:
        body, media = export.rows_to_json(rows), "application/json"
    return Response(
        body, media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{slug}-ratings.{fmt}"', "Cache-Control": "no-store"},
    )


# --- pair sets -----------------------------------------------------------------------------

@router.get("/pair-sets")
def pair_sets_page(request: Request, admin: CurrentAdmin, session: SessionDep) -> Response:
    return render(request, "admin/pair_sets.html", admin, pair_sets=pair_set_rows(session), error=None)


@router.get("/pair-sets.json")
def pair_sets_json(admin: CurrentAdmin, session: SessionDep) -> dict[str, Any]:
    rows = pair_set_rows(session)
    for r in rows:
        r["imported_at"] = r["imported_at"].isoformat() if r["imported_at"] else None
    return {"pair_sets": rows}


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack a pair-set zip safely and return the folder holding manifest.jsonl.

    Rejects members outside `dest` (absolute paths, '..'), links, and archives that unpack to
    more than MAX_UNPACKED_BYTES. The manifest may sit at the top or in one folder.
    """
    from sampler.manifest import MANIFEST_NAME

    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ValueError("the upload is not a zip file") from None
    with zf:
        total = 0
        root = dest.resolve()
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(root) or info.filename.startswith(("/", "\\")):
                raise ValueError(f"zip member {info.filename!r} points outside the archive")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ValueError(f"zip member {info.filename!r} is a symbolic link")
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise ValueError("the zip unpacks to more than 4 GiB")
        zf.extractall(dest)
    manifests = [p for p in dest.rglob(MANIFEST_NAME) if "__MACOSX" not in p.parts]
    if len(manifests) != 1 or len(manifests[0].relative_to(dest).parts) > 2:
        raise ValueError(f"the zip must hold exactly one {MANIFEST_NAME}, at the top or in one folder")
    return manifests[0].parent


@router.post("/pair-sets/import")
def import_pair_set_page(request: Request, admin: CurrentAdmin, session: SessionDep, form: FormDep) -> Response:
    from app.importer import import_pair_set
    from sampler.manifest import ManifestError

    folder_text = str(form.get("folder") or "").strip()
    upload = form.get("archive")
    has_upload = isinstance(upload, UploadFile) and bool(upload.filename)
    error = None
    pair_set = None
    if bool(folder_text) == has_upload:
        error = "Give either a folder on the server or a zip file (one of the two)."
    elif folder_text:
        folder = Path(folder_text).expanduser()
        if not folder.is_dir():
            error = f"{folder}: no such folder on the server"
        else:
            try:
                pair_set = import_pair_set(session, folder)
                session.commit()
            except (ManifestError, ValueError) as e:
                session.rollback()
                error = str(e)
    else:
        assert isinstance(upload, UploadFile)
        with tempfile.TemporaryDirectory(prefix="sfgeval-upload-") as tmp:
            archive = Path(tmp) / "upload.zip"
            with open(archive, "wb") as f:
                shutil.copyfileobj(upload.file, f)
            try:
                folder = unpack_zip(archive, Path(tmp) / "pairs")
                name = Path(upload.filename or "upload.zip").stem
                pair_set = import_pair_set(session, folder, name=name)
                pair_set.source = f"upload:{upload.filename}"
                session.commit()
            except (ManifestError, ValueError) as e:
                session.rollback()
                # Messages name files inside the temporary folder: show them relative to the zip.
                error = f"{upload.filename}: {e}".replace(str(Path(tmp).resolve() / "pairs") + "/", "").replace(
                    str(Path(tmp) / "pairs") + "/", "")
    if error is not None:
        return render(
            request, "admin/pair_sets.html", admin, status_code=422, pair_sets=pair_set_rows(session), error=error
        )
    assert pair_set is not None
    n = session.scalar(select(func.count(Pair.id)).where(Pair.pair_set_id == pair_set.id))
    flash(request, f"Pair set #{pair_set.id} {pair_set.name!r}: {n} pairs "
                   f"({pair_set.treatment_arm} vs {pair_set.baseline_arm}).", "success")
    return redirect("/admin/pair-sets")
