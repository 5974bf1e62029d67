"""The Jinja2 environment for the server-rendered pages (top-level `templates/` folder, or its copy in a wheel)."""

from __future__ import annotations

from fastapi.templating import Jinja2Templates

from app.resources import resource_dir

TEMPLATES_DIR = resource_dir("templates")
STATIC_DIR = resource_dir("static")

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
