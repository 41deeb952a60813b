"""The package's declared dependencies match what ``src/samrefine`` imports (issue 12: Pillow was
used by core features without being a core dependency, and pycocotools was a core dependency
that nothing imported)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import samrefine
from samrefine.cli._common import EXTRA_OF_MODULE, PACKAGE_OF_MODULE

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

SRC = Path(samrefine.__file__).resolve().parent
PYPROJECT = SRC.parents[1] / "pyproject.toml"
#: Import name -> distribution name, where they differ.
DISTRIBUTION = {
    "PIL": "pillow",
    "skimage": "scikit-image",
    "typing_extensions": "typing-extensions",
}


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the source files importing it."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "samrefine":
                    found.setdefault(top, set()).add(path.relative_to(SRC).as_posix())
    return found


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


@pytest.fixture(scope="module")
def project() -> dict:
    if not PYPROJECT.is_file():
        pytest.skip("not a source checkout (no pyproject.toml)")
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_every_core_dependency_is_imported_and_every_import_is_declared(project):
    core = _names(project["dependencies"])
    extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
    imports = _imports()
    imported = {DISTRIBUTION.get(m, m).lower() for m in imports}
    assert core <= imported, f"core dependencies nothing imports: {sorted(core - imported)}"
    for module, files in imports.items():
        dist = DISTRIBUTION.get(module, module).lower()
        if dist in core:
            continue
        extra = EXTRA_OF_MODULE.get(module)
        assert extra is not None, f"{module} (imported by {sorted(files)}) is not declared"
        assert extra in extras, f"{module}: extra {extra!r} is not in pyproject.toml"
    # the missing-extra hint names a package the extras do install
    for module, extra in EXTRA_OF_MODULE.items():
        assert extra in extras, (module, extra)
    for module, package in PACKAGE_OF_MODULE.items():
        assert package in core or any(package in e for e in extras.values()), module


def test_pillow_is_core_because_build_and_pictures_load_images(project):
    assert "pillow" in _names(project["dependencies"])
    users = _imports()["PIL"]
    assert "library/generate.py" in users  # samrefine build's image loading
