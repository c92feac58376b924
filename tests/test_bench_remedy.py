"""bench/remedy.py on a tiny subset: the table and its last line, and a fixable run judged fixed.

Real runs: the trainer in-process, the detector engine on every flush, the remedy the alert proposes
applied to the config, the relaunch judged on its raw series (bench/remedy_judge.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.remedy import solve
from bench.remedy_judge import problems
from tests.scenarios import QUICK, run

ROOT = Path(__file__).resolve().parent.parent
BY_NAME = {sc.name: sc for sc in QUICK}


def test_the_issue_d_wins_run_is_fixed_by_its_remedy():
    """ring8_d_wins (lr_d 2e-3, lr_g 1e-5, 3 D steps): D wins in the raw series; its alert's remedy,
    applied to the config, gives a run that ends healthy with no failing alert."""
    c = solve(BY_NAME["ring8_d_wins"], 0, escalate=False)
    assert c.provoked and c.signature == "d_overpowering"
    assert c.original is not None and "D wins (loss/d < 0.05, D(G(z)) < 0.02)" in c.original.problems
    assert c.remedy is not None and c.remedy["config"]["lr_g"] > 1e-5
    assert c.first is not None and c.first.config["lr_g"] == c.remedy["config"]["lr_g"]
    assert c.first.fixed, c.first.why()


def test_the_judge_reads_raw_series_not_alerts():
    """A run with exploding gradients is unhealthy by its raw series; a healthy one is not."""
    bad = run(BY_NAME["ring8_exploding"], 0)
    cfg = BY_NAME["ring8_exploding"].job(0).model_dump(mode="json")
    assert any("gradient norm > 100" in p or "non-finite" in p for p in problems(bad.metrics, cfg))
    assert any("std" in p for p in problems(bad.metrics, cfg))  # N(0, 3) weights, measured on the nets built


def test_bench_prints_the_table_and_the_efficacy_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "bench.remedy", "--only", "ring8_d_wins", "--seeds", "0",
                          "--no-escalate"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"remedy_efficacy (0|1)\.\d{3}", lines[-1]), lines[-1]
    assert lines[-1] == "remedy_efficacy 1.000"
    header = next(i for i, ln in enumerate(lines) if ln.startswith("signature"))
    assert lines[header].split()[:4] == ["signature", "runs", "fixed", "+esc"]
    assert re.match(r"d_overpowering\s+1\s+1\s+1\s+-$", lines[header + 1]), lines[header + 1]
