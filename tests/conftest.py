"""Shared fixtures: databases (SQLite and PostgreSQL), the app, synthetic pair sets, a live server.

- `db_url` is parametrized over SQLite and PostgreSQL; every test gets a fresh, fully migrated
  database (copied from a template migrated once per session). The PostgreSQL variant needs
  SFGEVAL_TEST_POSTGRES_URL; without it it skips, unless SFGEVAL_REQUIRE_POSTGRES=1 (CI), where it
  fails. `sqlite_url` / `postgres_url` give one backend only.
- `settings`, `app`, `client` (FastAPI TestClient), `session` build on `db_url`. On SQLite every
  transaction holds the database lock (BEGIN IMMEDIATE, see app.store.db): end a `session` read with
  `session.rollback()`/`commit()` before making requests, or the request waits for the lock.
- `make_pair_set(folder, n, ...)` writes a synthetic generator manifest with small PIL images.
- `study_factory(pair_set_ids=None, n_pairs=4, **config)` imports a pair set if needed and creates
  a study (open by default); returns the Study.
- `live_server` runs the app under uvicorn in a thread on a free 127.0.0.1 port; yields the URL.
- `chromium` is a Playwright Chromium browser (/usr/bin/chromium); skips when unavailable, fails
  instead when SFGEVAL_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.store.db import upgrade_database
from app.settings import Settings

PG_ENV = "SFGEVAL_TEST_POSTGRES_URL"


# ---------------------------------------------------------------- databases
def postgres_base_url() -> str:
    """The test server URL, or skip (fail when SFGEVAL_REQUIRE_POSTGRES=1)."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("SFGEVAL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"SFGEVAL_REQUIRE_POSTGRES=1 but {PG_ENV} is not set")
        pytest.skip(f"set {PG_ENV} to run the PostgreSQL variant")
    return url


def _pg_admin(url: str):
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_template():
    base = postgres_base_url()
    name = f"sfgeval_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _pg_admin(base)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade_database(make_url(base).set(database=name).render_as_string(hide_password=False))
    yield base, name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _fresh_sqlite(template: Path, tmp_path: Path) -> str:
    path = tmp_path / f"db-{uuid.uuid4().hex[:8]}.sqlite3"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(_sqlite_template, tmp_path) -> str:
    return _fresh_sqlite(_sqlite_template, tmp_path)


@pytest.fixture
def postgres_url(request):
    base, template = request.getfixturevalue("_postgres_template")
    name = f"sfgeval_t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin(base)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


# ---------------------------------------------------------------- app
@pytest.fixture
def settings(db_url) -> Settings:
    return Settings(
        database_url=db_url,
        secret_key="test-secret-key",
        hold_minutes=30,
        base_url="http://testserver",
        admin_user=None,
        admin_password=None,
        # Tests sign many participants up from one address (the test client's); the per-address
        # limit has its own tests (tests/test_trust.py), which switch it on.
        signup_rate_per_minute=0,
    )


@pytest.fixture
def app(settings):
    from app.main import create_app

    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture
def session(app):
    with app.state.sessionmaker() as s:
        yield s


# ---------------------------------------------------------------- synthetic pair sets
def _png(arr: np.ndarray, path: Path) -> str:
    PILImage.fromarray(arr).save(path, format="PNG")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pair_set(
    folder: Path,
    n: int = 4,
    *,
    size: int = 64,
    seed: int = 0,
    baseline_arm: str = "cfg",
    treatment_arm: str = "sfg",
    strata: tuple[str, ...] = ("low", "middle", "high"),
) -> Path:
    """Write `folder/manifest.jsonl` and 2n opaque PNGs (no torch). Returns `folder`.

    Baseline images are smooth gradients and treatment images noisy, so their natural PNG sizes
    differ a lot: the importer's equal-size blinding has something to hide.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        ramp = np.linspace(0, 255, size, dtype=np.float64)
        smooth = np.stack([*np.meshgrid(ramp, ramp[::-1]), np.full((size, size), 40.0 * (i % 6))], -1)
        noisy = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        files = {}
        for arm, arr in ((baseline_arm, smooth.astype(np.uint8)), (treatment_arm, noisy)):
            name = f"{rng.integers(0, 2**63):016x}{rng.integers(0, 2**63):016x}.png"
            files[arm] = (name, _png(arr, folder / name))
        rec = {
            "schema": "sfgeval.pair/1",
            "pair_key": f"p{i}:{1000 + i}",
            "prompt_id": f"p{i}",
            "prompt": f"a photo of object number {i}",
            "stratum": strata[i % len(strata)] if strata else None,
            "seed": 1000 + i,
            "baseline": {"arm": baseline_arm, "file": files[baseline_arm][0], "sha256": files[baseline_arm][1],
                         "params": {"guidance_scale": 7.5}},
            "treatment": {"arm": treatment_arm, "file": files[treatment_arm][0], "sha256": files[treatment_arm][1],
                          "params": {"guidance_scale": 7.5, "sfg_scale": 10.0}},
            "params": {"steps": 4, "height": size, "width": size},
            "model": {"name_or_path": "synthetic", "fingerprint": "0" * 16},
            "software": {"sfgeval": "test"},
        }
        lines.append(json.dumps(rec))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def make_pair_set():
    """`make_pair_set(folder, n, **kw)`: see `write_pair_set`."""
    return write_pair_set


@pytest.fixture
def study_factory(session, tmp_path):
    """`study_factory(pair_set_ids=None, n_pairs=4, **config) -> Study` (committed, open by default)."""
    from app.studies.importer import import_pair_set
    from app.studies.config import create_study

    counter = iter(range(10_000))

    def factory(pair_set_ids: list[int] | None = None, n_pairs: int = 4, **config):
        if pair_set_ids is None:
            k = next(counter)
            folder = write_pair_set(tmp_path / f"pairs{k}", n_pairs, seed=k)
            pair_set_ids = [import_pair_set(session, folder).id]
        cfg = {"title": "Test study", "pair_sets": pair_set_ids, "state": "open", "gold_rate": 0.0,
               "repeats": 0, "min_response_ms": 0, **config}
        study = create_study(session, cfg)
        session.commit()
        return study

    return factory


# ---------------------------------------------------------------- live server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(app):
    """Serve `app` with uvicorn on 127.0.0.1 in a background thread; yields the base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", server_header=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("live server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


# ---------------------------------------------------------------- browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def chromium():
    """A Playwright Chromium browser; new pages/contexts come from it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed"
    else:
        problem = None if Path(CHROMIUM).exists() else f"{CHROMIUM} not found"
    if problem:
        if os.environ.get("SFGEVAL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SFGEVAL_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# ---------------------------------------------------------------- tiny diffusion model (sampler)
@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A $SFGEVAL_CACHE folder holding the tiny SD model (built once per test session)."""
    from sampler.tiny import ensure_tiny_model

    cache = tmp_path_factory.mktemp("sfgeval-cache")
    ensure_tiny_model(cache / "tiny-sd")
    return cache


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cache):
    """Path of the tiny random-weight SD 1.x model folder (diffusers layout)."""
    return tiny_cache / "tiny-sd"


@pytest.fixture(scope="session")
def tiny_sfg(tiny_model_dir):
    """SFGPipeline over the tiny model, float32 on CPU (shared: tests must leave it as found)."""
    from sampler.pipeline import SFGPipeline

    return SFGPipeline.from_pretrained(tiny_model_dir, device="cpu")
