"""A plain PyTorch GAN loop, instrumented with at most five lines of the SDK, gets the built-in trainer's diagnosis.

The loop below is what a researcher writes (no ganscope class besides the SDK): small MLPs on toy data, two
Adam optimizers, BCE losses. It runs as its own process against the real server. Each failure is provoked
with the recipe that provokes it on the built-in trainer (tests/scenarios.py), and the signatures the server
finds on the SDK run must be the ones the detectors find on a built-in job of the same recipe.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import base_env, wait_for
from tests.scenarios import D_WINS, TOY, Scenario, run as run_builtin

USER_LOOP = textwrap.dedent('''
    import math, sys, torch
    from torch import nn
    import ganscope  # +ganscope

    server, recipe, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opt = {"d_wins": dict(data="ring8", lr_d=2e-3, lr_g=1e-5, d_steps=3, loss="nonsaturating"),
           "minimax_d_wins": dict(data="ring8", lr_d=2e-3, lr_g=2e-4, d_steps=3, loss="minimax"),
           "collapse": dict(data="bimodal1d", lr_d=1e-3, lr_g=1e-3, d_steps=1, loss="nonsaturating")}[recipe]
    torch.manual_seed(0)
    if opt["data"] == "ring8":
        angles = torch.arange(8) * 2 * math.pi / 8
        centers, sigma = torch.stack([2 * torch.cos(angles), 2 * torch.sin(angles)], 1), 0.02
    else:
        centers, sigma = torch.tensor([[-2.0], [2.0]]), 0.5
    dim = centers.shape[1]

    def sample_real(n):
        return centers[torch.randint(0, len(centers), (n,))] + sigma * torch.randn(n, dim)

    def mlp(n_in, n_out, act):
        return nn.Sequential(nn.Linear(n_in, 64), act(), nn.Linear(64, 64), act(), nn.Linear(64, 64), act(),
                             nn.Linear(64, n_out))

    G, D = mlp(100, dim, nn.ReLU), mlp(dim, 1, lambda: nn.LeakyReLU(0.2))
    for m in [*G.modules(), *D.modules()]:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    opt_g = torch.optim.Adam(G.parameters(), lr=opt["lr_g"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=opt["lr_d"], betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    run = ganscope.init(server, name=recipe, config=opt, declared={"loss": opt["loss"], "dataset": opt["data"]})  # +ganscope
    run.watch(G, D)  # +ganscope

    for step in range(steps):
        for _ in range(opt["d_steps"]):
            real = sample_real(64)
            fake = G(torch.randn(64, 100))
            out_real, out_fake = D(real), D(fake.detach())
            loss_d = bce(out_real, torch.ones_like(out_real)) + bce(out_fake, torch.zeros_like(out_fake))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        out_g = D(fake)
        if opt["loss"] == "minimax":
            loss_g = -bce(out_g, torch.zeros_like(out_g))  # log(1 - D(G(z)))
        else:
            loss_g = bce(out_g, torch.ones_like(out_g))  # -log D(G(z))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step % 20 == 0: run.log_modes(fake)  # +ganscope
        run.log_gan(step, loss_d=loss_d, loss_g=loss_g, d_real=out_real, d_fake=out_fake, d_fake_g=out_g, fake=fake, real=real)  # +ganscope
    print("RUN", run.id, flush=True)
''')

# The same recipes on the built-in trainer (tests/scenarios.py's toy settings).
BUILTIN = {
    "d_wins": Scenario("ring8_d_wins", {**TOY, "dataset": "ring8", **D_WINS, "steps": 150}),
    "minimax_d_wins": Scenario("ring8_minimax_d_wins",
                               {**TOY, "dataset": "ring8", **D_WINS, "lr_g": 2e-4, "loss": "minimax", "steps": 150}),
    "collapse": Scenario("bimodal_collapse", {**TOY, "dataset": "bimodal1d", "toy_hidden": 64, "batch_size": 64,
                                              "lr_d": 1e-3, "lr_g": 1e-3, "steps": 350}),
}
EXPECT = {"d_wins": {"d_overpowering"}, "minimax_d_wins": {"d_overpowering", "vanishing_g_grad"},
          "collapse": {"mode_collapse"}}


def test_the_loop_adds_at_most_five_lines() -> None:
    added = [line for line in USER_LOOP.splitlines() if "# +ganscope" in line]
    assert len(added) <= 5, added
    # Every SDK call is on a marked line: nothing else in the loop knows ganscope.
    unmarked = [line for line in USER_LOOP.splitlines() if ("run." in line or "ganscope" in line)
                and "# +ganscope" not in line and not line.strip().startswith("print")]
    assert unmarked == []


@pytest.mark.parametrize("recipe,steps", [("d_wins", 150), ("minimax_d_wins", 150), ("collapse", 350)])
def test_plain_loop_gets_the_builtin_signature(server, tmp_path: Path, recipe: str, steps: int) -> None:
    script = tmp_path / "user_gan.py"
    script.write_text(USER_LOOP)
    p = subprocess.run([sys.executable, str(script), server.url, recipe, str(steps)], cwd=tmp_path,
                       env=base_env(tmp_path, GANSCOPE_SPOOL=str(tmp_path / "spool")), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    run_id = int(next(line.split()[1] for line in p.stdout.splitlines() if line.startswith("RUN ")))
    c = server.client()
    run = wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] == "succeeded" and r, timeout=30,
                   what="the run to finish")
    # The declared part is all the detectors got: nothing filled from the built-in trainer's defaults.
    assert run["config"]["loss"] == BUILTIN[recipe].config.get("loss", "nonsaturating")
    assert "ngf" not in run["config"] and "steps" not in run["config"] and run["total_steps"] is None
    assert run["config"]["layers"] == {"g": ["0", "2", "4", "6"], "d": ["0", "2", "4", "6"]}
    names = set(run["metric_names"])
    assert {"grad/g/0", "grad/d/6", "weight/g/0", "update/d/0", "pred/real", "score/fake_g",
            "sample/diversity", "model/params_g", "params/d/0"} <= names

    # Detectors judge the last batches within a sweep (0.5 s) of their arrival.
    def fired() -> set[str]:
        return {a["signature"] for a in c.get(f"/api/runs/{run_id}/alerts").json()["alerts"]}
    wait_for(lambda: EXPECT[recipe] <= fired(), timeout=15, what=f"{EXPECT[recipe]} on the SDK run")

    builtin = run_builtin(BUILTIN[recipe], seed=0)
    assert set(builtin.fired) == EXPECT[recipe], builtin.fired
    assert fired() == set(builtin.fired)
