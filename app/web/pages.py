"""What every admin page shares: rendering with the admin chrome, redirects, the parsed form,
the study from the URL, and `twin`: one data function served as an HTML page and as JSON.

`twin(router, "/studies/{slug}/progress", "admin/progress.html", Progress)` applied to a data
function (a FastAPI dependency: it may take the path parameters, the session, the admin) adds
two routes, `GET .../progress` (the template gets the model's fields) and
`GET .../progress.json` (the model itself, `response_model` declared), so a page and its twin
cannot drift apart (datasette's "one data function, two renderings"). A page that is not an
admin-chrome template (the statistics report, rendered once and cached) passes a function in
place of the template name, and data whose JSON text is already made (cached) comes as a
`Serialised`, sent as it is.
"""

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.web.auth import CurrentAdmin, csrf_token, pop_flashes, verify_csrf
from app.store.models import AdminUser, Study
from app.analysis.participant_review import lr_text
from app.studies.form import rule_fields
from app.templating import templates

templates.env.globals["rule_fields"] = rule_fields
templates.env.globals["lr_text"] = lr_text

F = TypeVar("F", bound=Callable[..., Any])


def admin_router() -> APIRouter:
    """A router for pages under /admin: every POST must carry the session's CSRF token."""
    return APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(verify_csrf)])


async def read_form(request: Request) -> FormData:
    """The submitted form (Starlette caches it, so the CSRF check and the route share one parse)."""
    return await request.form()


FormDep = Annotated[FormData, Depends(read_form)]


def render(request: Request, name: str, admin: AdminUser | None, status_code: int = 200, **ctx: Any) -> Response:
    ctx.update(admin=admin, csrf_token=csrf_token(request), flashes=pop_flashes(request))
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    # Admin pages are never framed (clickjacking on the state and edit buttons).
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def get_study(session: Session, slug: str) -> Study:
    """The study named in the URL, or 404."""
    study = session.scalar(select(Study).where(Study.slug == slug))
    if study is None:
        raise HTTPException(status_code=404, detail=f"no study with slug {slug!r}")
    return study


class Serialised:
    """Data whose JSON text is already made (e.g. cached): the `.json` twin sends `json_text` as
    it is instead of serialising the data again."""

    json_text: str


PageRenderer = Callable[[Request, AdminUser, Any], Response]


def twin(
    router: APIRouter, path: str, template: str | PageRenderer, model: type[BaseModel],
) -> Callable[[F], F]:
    """Serve the decorated data function at `path` (HTML via `template`) and `path.json` (JSON).

    The data function returns an instance of `model` (or a dict that validates as one, or a
    `Serialised`); the template receives each field of the model by name, plus `data` (the whole
    model). `template` may instead be a function `(request, admin, data) -> Response` that renders
    the page itself. Errors are the data function's (HTTPException), the same for both renderings.
    """

    def decorate(data_fn: F) -> F:
        # Annotations evaluated here (no `from __future__ import annotations` in this module),
        # so FastAPI sees the dependency on this very data function.
        Data = Annotated[Any, Depends(data_fn)]

        def as_json(response: Response, data: Data) -> Any:
            if isinstance(data, Serialised):
                return Response(data.json_text, media_type="application/json", headers={"Cache-Control": "no-store"})
            response.headers["Cache-Control"] = "no-store"
            return data

        def as_html(request: Request, admin: CurrentAdmin, data: Data) -> Response:
            if callable(template):
                return template(request, admin, data)
            obj = data if isinstance(data, BaseModel) else model.model_validate(data)
            fields = {name: getattr(obj, name) for name in type(obj).model_fields}
            return render(request, template, admin, data=obj, **fields)

        as_json.__name__ = f"{data_fn.__name__}_json"
        as_html.__name__ = f"{data_fn.__name__}_page"
        router.add_api_route(f"{path}.json", as_json, methods=["GET"], response_model=model)
        router.add_api_route(path, as_html, methods=["GET"], response_class=Response)
        return data_fn

    return decorate
