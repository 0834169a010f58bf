"""The UI's templates and static files ship in the wheel: runstore.ui is a regular package and
every file under it is matched by a package-data glob of pyproject.toml (nothing at run time
comes from the internet, so a file left out of the wheel is a broken page)."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import runstore.ui

REPO = Path(__file__).resolve().parents[2]


def test_every_ui_file_is_package_data() -> None:
    assert runstore.ui.__file__ is not None  # not a namespace package (find_packages skips those)
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["runstore.ui"]
    root = Path(runstore.ui.__file__).parent
    files = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert {"templates/base.html", "static/app.js",
            "static/vendor/uPlot-1.6.32.iife.min.js"} <= set(files)
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"not in the wheel: {missing}"
