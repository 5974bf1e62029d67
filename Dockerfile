# Two images from one file:
#   target "app"       - the web app (no torch): `sfgeval serve`, import, study, export
#   target "generator" - adds the GPU side (torch, diffusers, open_clip): `sfgeval generate`
# Both install the wheel (templates/, static/, migrations/ and the demo pair set are package data).
FROM python:3.11-slim AS wheel
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY app app
COPY sampler sampler
COPY templates templates
COPY static static
COPY migrations migrations
RUN pip wheel --no-deps -w /wheels .

FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=wheel /wheels /wheels
RUN pip install /wheels/sfgeval-*.whl && useradd --create-home --uid 1000 sfgeval
USER sfgeval
WORKDIR /home/sfgeval
EXPOSE 8000
# `serve` runs the migrations first.
CMD ["sfgeval", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]

FROM python:3.11-slim AS generator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=wheel /wheels /wheels
RUN WHEEL=$(ls /wheels/sfgeval-*.whl) && pip install "${WHEEL}[sampler]"
WORKDIR /work
ENTRYPOINT ["sfgeval"]
CMD ["generate", "--help"]
