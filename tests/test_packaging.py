"""Packaging: the server side never imports torch; the base install does not pull it in."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.harness import REPO

# Imports every module under server/ (not only ganscope.server.app: a lazily imported module could still pull
# torch in on first request), builds the app, then reports what got imported.
PROBE = r"""
import importlib, pkgutil, sys
import ganscope.server as server
names = sorted(m.name for m in pkgutil.walk_packages(server.__path__, "ganscope.server."))
for name in names:
    importlib.import_module(name)
from ganscope.server.app import create_app
from ganscope.server.settings import Settings
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


def _top_level_imports(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_code_imports_the_product_by_its_one_name() -> None:
    """`server` and `trainer` are folders of the checkout, never import names: a research repo's own
    trainer.py would shadow them. Everything imports `ganscope.server...` / `ganscope.trainer...`."""
    offenders = []
    for folder in ("server", "trainer", "ganscope", "tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            bad = _top_level_imports(path) & {"server", "trainer"}
            if bad:
                offenders.append(f"{path.relative_to(REPO)} imports {', '.join(sorted(bad))}")
    assert not offenders, offenders


def test_wheel_installs_one_top_level_name_and_runs_from_it(tmp_path: Path) -> None:
    """The built wheel holds `ganscope` alone, with server/, trainer/, templates/, static/ inside it, and its
    app serves pages from its own copy (no checkout on the path)."""
    import zipfile

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("ganscope-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    assert {n.split("/")[0] for n in names} == {"ganscope", wheel.name.split("-py")[0] + ".dist-info"}
    for want in ("ganscope/server/app.py", "ganscope/trainer/sdk.py", "ganscope/templates/run.html",
                 "ganscope/static/js/run.js", "ganscope/server/migrations/versions/0001_initial.py",
                 "ganscope/trainer/quality/shapes-classifier.pt"):
        assert want in names, want
    # Every module of the checkout's packages is in the wheel (a subpackage missing from pyproject's list
    # would install a product that fails on import).
    for folder, prefix in (("server", "ganscope/server/"), ("trainer", "ganscope/trainer/"), ("ganscope", "ganscope/")):
        for py in sorted((REPO / folder).rglob("*.py")):
            rel = prefix + py.relative_to(REPO / folder).as_posix()
            if "__pycache__" not in rel:
                assert rel in names, f"{rel} is not in the wheel: add its package to pyproject.toml"
    probe = ("import sys, ganscope, ganscope.server.app as a\n"
             "from fastapi.testclient import TestClient\n"
             "from ganscope.server.settings import Settings\n"
             "assert a.__file__.startswith(sys.argv[1]), a.__file__\n"
             "with TestClient(a.create_app(Settings(home=sys.argv[2])), base_url='http://127.0.0.1') as c:\n"
             "    r = c.get('/'); assert r.status_code == 200 and 'ganscope' in r.text, r.status_code\n"
             "    assert c.get('/static/js/run.js').status_code == 200\n"
             "print('ok', callable(ganscope.init))\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("GANSCOPE_")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "site"), str(tmp_path / "home")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok True"
