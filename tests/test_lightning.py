"""The Lightning callback on a tiny GAN LightningModule (manual optimisation, two optimisers), on CPU, against
the real server: the module has no ganscope code; adding the callback is all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

from ganscope.trainer.lightning import GanscopeCallback  # noqa: E402
from tests.harness import ServerProc, wait_for  # noqa: E402


class TinyGAN(L.LightningModule):
    def __init__(self, lr: float = 1e-3, nz: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(nz, 16), nn.ReLU(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.bce = nn.BCEWithLogitsLoss()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(real.shape[0], self.hparams.nz))
        self.toggle_optimizer(opt_d)
        out_r, out_f = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = self.bce(out_r, torch.ones_like(out_r)) + self.bce(out_f, torch.zeros_like(out_f))
        self.manual_backward(d_loss)
        opt_d.step()
        opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)
        self.toggle_optimizer(opt_g)
        out_g = self.discriminator(fake)
        g_loss = self.bce(out_g, torch.ones_like(out_g))
        self.manual_backward(g_loss)
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss, "D(x)": torch.sigmoid(out_r).mean(),
                       "my_metric": out_g.mean()})

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.generator.parameters(), self.hparams.lr),
                torch.optim.Adam(self.discriminator.parameters(), self.hparams.lr)]


def _fit(callback: object, epochs: int = 2, module: L.LightningModule | None = None) -> L.LightningModule:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(160, 2) + 2), batch_size=16)
    module = module or TinyGAN()
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback], accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    return module


def test_callback_records_the_gan_metrics_with_no_code_in_the_module(server: ServerProc, tmp_path: Path) -> None:
    cb = GanscopeCallback(server.url, name="lightning gan", declared={"loss": "nonsaturating"},
                          spool_dir=tmp_path / "spool", quiet=True)
    _fit(cb)
    run_id = cb.run.id
    c = server.client()
    run = wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] == "succeeded" and r, timeout=30,
                   what="the run to finish")
    assert run["user_config"] == {"lr": 0.001, "nz": 4}  # the module's hparams
    assert run["config"]["total_steps"] == 20 and run["config"]["loss"] == "nonsaturating"  # 10 batches x 2 epochs
    assert run["config"]["layers"] == {"g": ["0", "2"], "d": ["0", "2"]}
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/d,loss/g,pred/real,my_metric,grad/g/0,"
                                                                 "update/d/2,sample/diversity",
                                                       "max_points": 1000}).json()["metrics"]
    assert set(got) == {"loss/d", "loss/g", "pred/real", "my_metric", "grad/g/0", "update/d/2", "sample/diversity"}
    for name, series in got.items():
        assert series["steps"] == list(range(20)), name
        assert all(v is not None and v == v for v in series["values"]), name
    assert all(v > 0 for v in got["grad/g/0"]["values"])


def test_nets_named_otherwise_are_found_from_the_arguments(server: ServerProc, tmp_path: Path) -> None:
    class Renamed(TinyGAN):
        def __init__(self) -> None:
            super().__init__()
            self.gen_net, self.critic = self.generator, self.discriminator
            del self.generator, self.discriminator

        @property
        def generator(self) -> nn.Module:  # training_step still uses these names
            return self.gen_net

        @property
        def discriminator(self) -> nn.Module:
            return self.critic

    with pytest.raises(AttributeError, match="pass generator="):
        _fit(GanscopeCallback(server.url, spool_dir=tmp_path / "a", quiet=True, generator="nope"), epochs=1,
             module=Renamed())
    cb = GanscopeCallback(server.url, spool_dir=tmp_path / "b", quiet=True, generator="gen_net",
                          discriminator="critic")
    _fit(cb, epochs=1, module=Renamed())
    run = server.client().get(f"/api/runs/{cb.run.id}").json()
    assert run["status"] == "succeeded" and {"grad/g/0", "grad/d/0"} <= set(run["metric_names"])


def test_an_exception_in_training_fails_the_run(server: ServerProc, tmp_path: Path) -> None:
    class Broken(TinyGAN):
        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            if batch_idx == 3:
                raise RuntimeError("out of memory (pretend)")
            super().training_step(batch, batch_idx)

    cb = GanscopeCallback(server.url, spool_dir=tmp_path / "spool", quiet=True)
    with pytest.raises(RuntimeError, match="pretend"):
        _fit(cb, module=Broken())
    run = server.client().get(f"/api/runs/{cb.run.id}").json()
    assert run["status"] == "failed" and "out of memory (pretend)" in run["error"]
