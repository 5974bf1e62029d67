"""Build hook: put the top-level templates/, static/ and migrations/ folders into the wheel.

They stay at the top of the repository (where they are edited); `build_py` copies them into
`app/_bundled/` of the build, where `app.resources.resource_dir` finds them once installed.
Editable installs use the repository's folders directly and get no copies.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("templates", "static", "migrations")  # the same list as app.resources.BUNDLED


class BuildPyWithResources(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in BUNDLED:
            target = Path(self.build_lib) / "app" / "_bundled" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithResources})
