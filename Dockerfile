# Two images from one file:
#   target "app"       - the web app (no torch): `sfgeval serve`, import, study, export
#   target "generator" - adds the GPU side (torch, diffusers, open_clip): `sfgeval generate`
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/sfgeval
# Dependencies first (cached layer), then the source; installed editable so that the top-level
# templates/, static/ and migrations/ folders are found next to the packages.
COPY pyproject.toml README.md ./
COPY app/__init__.py app/__init__.py
COPY sampler/__init__.py sampler/__init__.py

FROM base AS app
RUN pip install -e . && useradd --create-home --uid 1000 sfgeval
COPY app app
COPY sampler sampler
COPY templates templates
COPY static static
COPY migrations migrations
COPY alembic.ini ./
USER sfgeval
EXPOSE 8000
# `serve` runs the migrations first.
CMD ["sfgeval", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]

FROM base AS generator
RUN pip install -e ".[sampler]"
COPY app app
COPY sampler sampler
COPY templates templates
COPY static static
COPY migrations migrations
COPY alembic.ini ./
ENTRYPOINT ["sfgeval"]
CMD ["generate", "--help"]
