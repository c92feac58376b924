"""`ganscope import tensorboard LOGDIR` on event files written by torch.utils.tensorboard.SummaryWriter, against the
real server: runs created, tags mapped, the detectors' alerts printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("tensorboard")
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from tests.harness import REPO, ServerProc, base_env  # noqa: E402


def write_logs(logdir: Path) -> None:
    # pytorch/examples' DCGAN names, with D winning from step 60: loss/d near 0, D(x) at 1, D(G(z)) at 0.
    w = SummaryWriter(str(logdir / "dcgan_d_wins"))
    for step in range(300):
        won = step >= 60
        w.add_scalar("Loss_D", 0.002 if won else 1.3 - step * 0.001, step)
        w.add_scalar("Loss_G", 7.0 if won else 0.8, step)
        w.add_scalar("D(x)", 0.999 if won else 0.6, step)
        w.add_scalar("D_G_z1", 0.001 if won else 0.4, step)
        w.add_scalar("my/disc_cost", 0.5, step)
        w.add_scalar("noise/ignored", 1.0, step)
        if step % 100 == 0:
            w.add_image("fake_samples", torch.rand(3, 8, 8), step)
    w.close()
    # add_scalars writes one subfolder per key (Loss_D/, Loss_G/), each with the tag "Loss": one run.
    w = SummaryWriter(str(logdir / "healthy"))
    for step in range(300):
        w.add_scalars("Loss", {"D": 1.38 + 0.02 * ((step % 7) - 3) / 3, "G": 0.7}, step)
    w.close()


def _import(server: ServerProc, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganscope", "import", "tensorboard", *args, "--server", server.url],
                          cwd=REPO, env=base_env(tmp_path), capture_output=True, text=True, timeout=300)


def test_import_maps_tags_and_reports_alerts(server: ServerProc, tmp_path: Path) -> None:
    logdir = tmp_path / "runs"
    write_logs(logdir)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("my/disc_cost: loss/d_real\nnoise/ignored: null\n")
    p = _import(server, tmp_path, str(logdir), "--map", str(mapping), "--declare", "loss_d_reduction=sum")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "d_overpowering (failing)" in out and "no failure signature found" in out, out
    c = server.client()
    runs = {r["name"]: r for r in c.get("/api/runs", params={"kind": "sdk"}).json()["runs"]}
    assert set(runs) == {"runs/dcgan_d_wins", "runs/healthy"}
    for r in runs.values():
        assert f"run {r['id']} {server.url}/runs/{r['id']}" in out and r["status"] == "succeeded"
    wins = c.get(f"/api/runs/{runs['runs/dcgan_d_wins']['id']}").json()
    assert set(wins["metric_names"]) == {"loss/d", "loss/g", "pred/real", "pred/fake", "loss/d_real"}
    assert wins["config"] == {"total_steps": 300, "loss_d_reduction": "sum"}
    assert wins["user_config"]["tags"]["D(x)"] == "pred/real" and "noise/ignored" not in wins["user_config"]["tags"]
    got = c.get(f"/api/runs/{wins['id']}/metrics", params={"names": "loss/d", "max_points": 10_000}).json()
    assert got["metrics"]["loss/d"]["steps"] == list(range(300))
    assert got["metrics"]["loss/d"]["values"][100] == pytest.approx(0.002)
    assert [s["step"] for s in c.get(f"/api/runs/{wins['id']}/samples").json()["samples"]] == [0, 100, 200]
    alerts = c.get(f"/api/runs/{wins['id']}/alerts").json()["alerts"]
    assert [a["signature"] for a in alerts] == ["d_overpowering"] and 55 <= alerts[0]["first_step"] <= 80
    healthy = c.get(f"/api/runs/{runs['runs/healthy']['id']}").json()
    assert set(healthy["metric_names"]) == {"loss/d", "loss/g"}  # Loss_D/ and Loss_G/ folded into one run
    # Importing again adds to the same runs instead of making new ones.
    again = _import(server, tmp_path, str(logdir), "--map", str(mapping))
    assert again.returncode == 0, again.stdout + again.stderr
    assert c.get("/api/runs", params={"kind": "sdk"}).json()["total"] == 2


def test_import_errors_are_named(server: ServerProc, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    p = _import(server, tmp_path, str(empty))
    assert p.returncode == 1 and "no TensorBoard scalars" in p.stderr
    bad_map = tmp_path / "bad.yaml"
    bad_map.write_text("- a list\n")
    p = _import(server, tmp_path, str(empty), "--map", str(bad_map))
    assert p.returncode == 2 and "expected a mapping" in p.stderr
    p = _import(server, tmp_path, str(empty), "--declare", "loss=bce")
    assert p.returncode == 2 and "loss" in p.stderr
