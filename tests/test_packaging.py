"""Packaging: the server side never imports torch; the base install does not pull it in."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.harness import REPO

# Imports every module under server/ (not only server.app: a lazily imported module could still pull
# torch in on first request), builds the app, then reports what got imported.
PROBE = r"""
import importlib, pkgutil, sys
import server
names = sorted(m.name for m in pkgutil.walk_packages(server.__path__, "server."))
for name in names:
    importlib.import_module(name)
from server.app import create_app
from server.settings import Settings
create_app(Settings(home=sys.argv[1]))
import ganscope.cli  # `ganscope serve` runs in the torch-free image too
print(len(names))
print("torch" in sys.modules, "torchvision" in sys.modules)
"""


def test_server_modules_do_not_import_torch(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    count, flags = out.stdout.strip().splitlines()[-2:]
    assert int(count) >= 10, f"expected the whole server package to be walked, got {count} modules"
    assert flags == "False False", "importing the server pulled in torch/torchvision"


def test_torch_only_in_the_trainer_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "torch" not in base, "torch in the base dependencies would put it in the server image"
    extras = project["optional-dependencies"]
    assert any(d.startswith("torch") for d in extras["trainer"])
    assert any("psycopg" in d for d in extras["postgres"])
    assert any(d.startswith("pytest") for d in extras["dev"])
    assert project["scripts"]["ganscope"] == "ganscope.cli:main"


def test_server_image_installs_no_trainer_extra() -> None:
    """The Dockerfile's server stage installs the package without the `trainer` extra (hence no torch)."""
    text = (REPO / "Dockerfile").read_text()
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = words[-1] if "AS" in [w.upper() for w in words] else None
            stages[current or ""] = []
        elif current is not None:
            stages[current].append(line)
    assert {"server", "worker"} <= set(stages)

    def installs(stage: str) -> list[str]:
        # The `pip install ...` parts of RUN lines (a RUN may chain a check after `&&`).
        return [part.strip() for ln in stages[stage] for part in ln.split("&&") if "pip install" in part]

    assert installs("server") and not any("trainer" in p or "torch" in p for p in installs("server"))
    assert any("[trainer]" in p for p in installs("worker"))


def test_python_m_ganscope_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "ganscope", "--version"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ganscope ")
