"""The Jinja2 environment for the server-rendered pages (top-level `templates/` folder)."""

from __future__ import annotations

from fastapi.templating import Jinja2Templates

from app.db import ROOT

TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
