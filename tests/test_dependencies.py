"""pyproject.toml declares every distribution src/ imports, each with a compatible-release bound
on the version constraints.txt locks: an undeclared import, or a bound drifting from the lock,
fails here."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "keyplane"
# `name[extras]~=version`, as every requirement in pyproject.toml is written.
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)(?:\[[^\]]*\])?(?:~=(?P<version>[^,;\s]+))?$")


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"keyplane"}


def _requirements(group: str | None = None) -> dict[str, str | None]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] if group is None else project["optional-dependencies"][group]
    found: dict[str, str | None] = {}
    for requirement in listed:
        match = REQUIREMENT.match(requirement)
        assert match is not None, f"{requirement!r} is not written as name[extras]~=version"
        found[_normalised(match["name"])] = match["version"]
    return found


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if version:
            pins[_normalised(name)] = version
    return pins


def test_every_distribution_src_imports_is_declared_in_pyproject() -> None:
    # given
    owners = packages_distributions()
    declared = set(_requirements())

    # when
    imported = {
        name: {_normalised(owner) for owner in owners.get(name, [name])}
        for name in _imported_top_level_names()
    }

    # then
    undeclared = {name: sorted(dists) for name, dists in imported.items() if not dists & declared}
    assert undeclared == {}


def test_every_requirement_is_bounded_on_the_version_constraints_txt_locks() -> None:
    locked = _locked()
    for group in (None, "test", "ci"):
        requirements = _requirements(group)
        assert requirements == {name: locked.get(name) for name in requirements}, group
