"""Admin and researcher pages under /admin, one module per resource.

- `auth`: log in and out.
- `studies`: the studies list, the study form, state changes, config files, progress, export.
- `pair_sets`: pair sets and their import (server folder or zip upload).
- `figures`: a figure of chosen pairs (PNG, PDF) and the report bundle as a zip.
- `participants`: one row per participant, approve/reject decisions, completion codes.
- `pairs`: the pair explorer (a study's pairs with images by arm, token maps and answers).

Every page needs a logged-in admin (`CurrentAdmin`) except the login form; every POST carries the
session's CSRF token (checked by `verify_csrf` on every router `admin_router()` makes). Shared page
helpers (rendering, the JSON twin of a page) live in `app.web.pages`; form <-> config conversion
in `app.studies.form`; config files in `app.studies.config_files`; zip uploads in `app.studies.uploads`.
"""

from fastapi.responses import RedirectResponse

from app.web.pages import admin_router, redirect
from app.web.routes.admin import auth, figures, pair_sets, pairs, participants, studies

router = admin_router()
# One flat router (not nested ones), so every route keeps its full /admin path for the app.
for _module in (auth, studies, pair_sets, pairs, participants, figures):
    router.routes.extend(_module.router.routes)


@router.get("")
def admin_home() -> RedirectResponse:
    return redirect("/admin/studies")
