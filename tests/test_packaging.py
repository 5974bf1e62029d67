"""A regular (non-editable) install works: the wheel ships templates/, static/, migrations/ and
the demo pair set, and `sfgeval serve` runs from a venv outside the checkout."""

from __future__ import annotations

import os
import shutil
import socket
import site
import subprocess
import sysconfig
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ("app", "sampler", "templates", "static", "migrations", "pyproject.toml", "setup.py", "README.md")


def build_wheel(dest: Path) -> Path:
    """Build the wheel from a copy of the source (so the checkout gets no build/ folder)."""
    src = dest / "src"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_bundled", "*.egg-info")
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = dest.glob("sfgeval-*.whl")
    return wheel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status


@pytest.mark.slow
def test_wheel_installs_and_serves_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path / "wheel")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("app/_bundled/templates/admin/login.html", "app/_bundled/static/admin.css",
                   "app/_bundled/migrations/env.py", "app/_bundled/migrations/versions/0001_initial_schema.py",
                   "app/demo_pairs/manifest.jsonl", "app/demo_set/manifest.jsonl"):
        assert needed in names, needed
    # A fresh venv that sees the running interpreter's dependencies (no download), with the wheel
    # installed. `--system-site-packages` would show the *base* interpreter's packages, which is
    # not where they are when the tests themselves run in a virtual environment: the venv gets a
    # .pth naming this interpreter's site-packages instead (its own site-packages come first).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bindir = venv / "bin"
    venv_site = subprocess.run([str(bindir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(venv_site) / "outer-site.pth").write_text("".join(f"{d}\n" for d in ours if Path(d).is_dir()))
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
    where = subprocess.run([str(bindir / "python"), "-c", "import app; print(app.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    url = f"sqlite:///{work / 'new.sqlite3'}"
    demo = subprocess.run([str(bindir / "sfgeval"), "demo", "--no-serve", "--database-url", url], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert demo.returncode == 0, demo.stderr
    port = free_port()
    server = subprocess.Popen([str(bindir / "sfgeval"), "serve", "--port", str(port), "--database-url", url],
                              cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                assert get(f"{base}/healthz") == 200
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    pytest.fail(f"sfgeval serve did not come up:\n{server.stdout.read()}")
                time.sleep(0.3)
        assert get(f"{base}/admin/login") == 200
        assert get(f"{base}/s/demo") == 200
        assert get(f"{base}/static/admin.css") == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
