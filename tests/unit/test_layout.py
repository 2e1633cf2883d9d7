"""The distribution's shape: one import name, every package listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _package_folders() -> set[str]:
    """Every folder of Python modules under turnout/, the links into the
    top-level folders followed. A folder of modules with no ``__init__.py``
    counts too: it imports from a checkout (a namespace package) but would be
    left out of a built wheel."""
    found = set()
    for module in (REPO / "turnout").glob("**/*.py"):
        rel = module.parent.relative_to(REPO)
        found.add(".".join(rel.parts))
    # glob does not follow the links: walk each mapped folder by hand.
    for name, folder in _pyproject()["tool"]["setuptools"]["package-dir"].items():
        for module in (REPO / folder).glob("**/*.py"):
            rel = module.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    return found


def test_every_package_folder_is_in_the_distribution() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert _package_folders() == listed


def test_the_mapped_folders_are_linked_into_turnout() -> None:
    """mypy and import-linter see the installed shape through these links."""
    for name, folder in _pyproject()["tool"]["setuptools"]["package-dir"].items():
        link = REPO / Path(*name.split("."))
        assert link.is_symlink(), f"{link} should be a link to ../{folder}"
        assert link.resolve() == (REPO / folder).resolve()


def test_only_one_import_name() -> None:
    packages = _pyproject()["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in packages} == {"turnout"}


def test_bench_and_chaos_write_under_turnout_home_unless_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from turnout.benchmarks.chaos.run import out_folder as chaos_out
    from turnout.benchmarks.run import out_folder as bench_out

    monkeypatch.setenv("TURNOUT_HOME", str(tmp_path))
    assert bench_out(None) == tmp_path / "bench"
    assert chaos_out(None) == tmp_path / "chaos"
    assert bench_out("benchmarks/results") == Path("benchmarks/results")
