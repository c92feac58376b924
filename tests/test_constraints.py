"""constraints.txt (reproducible installs, issue 14): the install paths use it and it fits pyproject."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.harness import REPO


def _pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and "+" not in version and "@" not in line, f"not an index pin: {line}"
            out[canonicalize_name(name)] = version
    return out


def test_constraints_pin_the_toolchain_within_pyproject() -> None:
    pins = _pins()
    for tool in ("pytest", "schemathesis", "hypothesis", "pytest-timeout", "playwright", "fastapi", "uvicorn"):
        assert tool in pins, f"{tool} is not pinned"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + [r for reqs in project["optional-dependencies"].values() for r in reqs]
    for raw in direct:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {raw!r}"


def test_every_install_path_uses_the_constraints() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert makefile.count("$(PIP) install $(CONSTRAINTS)") >= 2 and "CONSTRAINTS := -c constraints.txt" in makefile
    assert "-c constraints.txt" in (REPO / ".ci" / "run").read_text()


def test_generator_reproduces_the_file_for_this_environment() -> None:
    # The committed file is what the generator writes for an environment holding those very versions.
    out = subprocess.run([sys.executable, str(REPO / ".ci" / "constraints.py")], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    generated = {canonicalize_name(line.split("==")[0]): line.split("==")[1]
                 for line in out.splitlines() if line and not line.startswith("#")}
    pins = _pins()
    same = {n for n in pins if generated.get(n) == pins[n]}
    assert len(same) >= 0.9 * len(pins), f"the environment drifted from constraints.txt: {set(pins) - same}"


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI builds a new virtualenv; a developer's may hold more")
def test_ci_runs_in_a_virtualenv_built_from_nothing_but_the_pins() -> None:
    # .ci/run makes build/ci-venv afresh and installs '.[dev]' into it from the index with the constraints:
    # whatever the index has released since, the suite runs on exactly the pinned toolchain, and every
    # package the install pulled in is pinned (an unpinned one would be free to change next month).
    assert sys.prefix != sys.base_prefix, "the suite is not running in a virtualenv"
    assert Path(sys.prefix).resolve() == (REPO / "build" / "ci-venv").resolve(), sys.prefix
    import fastapi
    import torch

    for module in (torch, fastapi, pytest):
        assert Path(module.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), module.__file__
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version).public for d in metadata.distributions()}
    pins = _pins()
    wrong = {n: (pins[n], v) for n, v in installed.items() if n in pins and v != pins[n]}
    unpinned = set(installed) - set(pins) - {"ganscope", "pip", "setuptools", "wheel"}
    assert not wrong, f"installed versions differ from constraints.txt (pin, installed): {wrong}"
    assert not unpinned, f"installed but not pinned in constraints.txt: {sorted(unpinned)}"
