"""Every Python the package claims is tested, and only a declared package may be missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.conftest import MAY_LACK

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CLASSIFIER = "Programming Language :: Python :: "


def nox_pythons() -> tuple[str, dict[str, tuple[str, ...]]]:
    """``PYTHON`` and ``OTHER_PYTHONS`` of noxfile.py, read without running it."""
    found: dict[str, object] = {}
    for node in ast.parse((ROOT / "noxfile.py").read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("PYTHON", "OTHER_PYTHONS"):
            found[target.id] = ast.literal_eval(node.value)  # type: ignore[union-attr]
    python, others = found["PYTHON"], found["OTHER_PYTHONS"]
    assert isinstance(python, str)
    assert isinstance(others, dict)
    return python, others


def claimed() -> set[str]:
    classifiers = PYPROJECT["project"]["classifiers"]
    return {c.removeprefix(CLASSIFIER) for c in classifiers if c.startswith(f"{CLASSIFIER}3.")}


def test_every_claimed_python_has_a_nox_test_session() -> None:
    python, others = nox_pythons()
    assert {python, *others} == claimed()


def test_requires_python_admits_exactly_the_claimed_minor_versions() -> None:
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    versions = sorted(claimed(), key=lambda v: tuple(map(int, v.split("."))))
    assert all(spec.contains(f"{v}.0") for v in versions)
    major, minor = map(int, versions[0].split("."))
    assert not spec.contains(f"{major}.{minor - 1}.0")  # the oldest claimed is the floor


def test_this_interpreter_is_a_claimed_one() -> None:
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in claimed()


@pytest.mark.parametrize("python", sorted(claimed()))
def test_the_dev_group_leaves_out_exactly_the_packages_a_python_may_lack(python: str) -> None:
    _, others = nox_pythons()
    environment = {"python_version": python, "python_full_version": f"{python}.0"}
    left_out = {
        req.name
        for req in map(Requirement, PYPROJECT["dependency-groups"]["dev"])
        if req.marker is not None and not req.marker.evaluate(environment)
    }
    left_out.discard("tomli")  # in the standard library (tomllib) from 3.11
    assert left_out == set(others.get(python, ()))


MODULE_NEEDS = """
import pytest

pytest.importorskip("no_such_package_for_this_test")


def test_module() -> None:
    pass
"""

MARKED_NEEDS = """
import pytest


@pytest.mark.needs("no_such_package_for_this_test")
def test_marked() -> None:
    pass
"""


def run_pytest(tmp_path: Path, may_lack: str | None) -> subprocess.CompletedProcess[str]:
    """Run two tests that need a missing package, with this suite's conftest as a plugin."""
    (tmp_path / "test_module_needs.py").write_text(MODULE_NEEDS)
    (tmp_path / "test_marked_needs.py").write_text(MARKED_NEEDS)
    env = {k: v for k, v in os.environ.items() if k != MAY_LACK}
    if may_lack is not None:
        env[MAY_LACK] = may_lack
    plugin = ["-p", "tests.conftest", "-p", "no:cacheprovider", "-c", os.devnull]
    options = ["--rootdir", str(tmp_path), "--continue-on-collection-errors", "-q", "-rs"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, *options, "-W", "ignore", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_skip_for_a_missing_package_fails_unless_the_session_may_lack_it(
    tmp_path: Path,
) -> None:
    result = run_pytest(tmp_path, may_lack=None)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 errors" in result.stdout  # the module at collection, the marked test at setup
    assert result.stdout.count(f"may skip it ({MAY_LACK}=no_such_package_for_this_test,") == 2


def test_a_session_that_may_lack_the_package_skips_its_tests(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, may_lack="other,no_such_package_for_this_test")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 skipped" in result.stdout
    assert "could not import 'no_such_package_for_this_test'" in result.stdout
