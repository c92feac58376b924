"""Data root confinement: symlinks are resolved and must stay inside the root; readers never see the
worker's absolute paths in a run's error. The trainer's own functions, then a real server and worker."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from ganscope.trainer.config import JobConfig
from ganscope.trainer.data import DatasetError, build_data, public_message, resolve_data_dir
from tests.harness import ServerProc, wait_for


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(path)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "secret"
    _png(outside / "private.png", (255, 0, 0))
    _png(root / "faces" / "a.png", (0, 255, 0))
    (root / "escape").symlink_to(outside, target_is_directory=True)        # a linked folder pointing out
    (root / "faces" / "leak.png").symlink_to(outside / "private.png")      # a linked file pointing out
    (root / "alias").symlink_to(root / "faces", target_is_directory=True)  # a link that stays inside
    return root, outside


def test_symlinks_out_of_the_root_are_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    for rel in ("escape", "escape/", "/escape", "escape/sub"):
        with pytest.raises(DatasetError) as e:
            resolve_data_dir(JobConfig(dataset="folder", data_root=rel), root)
        assert "leaves the dataset root" in str(e.value) and str(root) not in str(e.value), str(e.value)
    # A link that resolves inside the root is just another name for a folder in it.
    assert resolve_data_dir(JobConfig(dataset="folder", data_root="alias"), root) == (root / "faces").resolve()
    # The linked file pointing out of the folder is not read: one image, the green one.
    src = build_data(JobConfig(dataset="folder", data_root="faces", image_size=16), data_root=root)
    assert src.length == 1
    assert all("leak" not in str(p) for p in src.paths)


def test_public_message_hides_host_paths(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    msg = f"cannot decode image {root.resolve()}/faces/x.png: truncated; also {tmp_path}/wdir/run-1/ckpt"
    out = public_message(msg, root, tmp_path / "wdir")
    assert out == "cannot decode image <data root>/faces/x.png: truncated; also <worker dir>/run-1/ckpt"
    assert str(tmp_path) not in out


def test_worker_error_shown_to_readers_has_no_host_path(server: ServerProc, spawn_worker, home: Path,
                                                        layout: tuple[Path, Path]) -> None:
    root, outside = layout
    _png(root / "broken" / "x.png", (0, 0, 0))
    (root / "broken" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    spawn_worker(server.url, args=["--data-root", str(root)])
    with server.client() as c:
        ids = {}
        for name, rel in (("escape", "escape"), ("missing", "nowhere"), ("broken", "broken")):
            r = c.post("/api/jobs", json={"name": name, "dataset": "folder", "data_root": rel, "image_size": 16,
                                          "steps": 5, "max_attempts": 1})
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
    runs = {name: wait_for(lambda i=i: (lambda r: r if r["status"] in ("failed", "succeeded") else None)(
        httpx.get(f"{server.url}/api/runs/{i}").json()), timeout=120, what=f"run {name} to end")
        for name, i in ids.items()}
    for name, run in runs.items():
        assert run["status"] == "failed", (name, run)
        error = run["error"] or ""
        assert error, name
        for secret in (str(root), str(root.resolve()), str(outside), str(home), str(home.parent)):
            assert secret not in error, f"{name}: {error}"
    assert "leaves the dataset root" in runs["escape"]["error"]
    assert "<data root>" in runs["missing"]["error"] and "<data root>" in runs["broken"]["error"]
