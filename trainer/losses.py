"""The GAN objectives and the gradient penalties, on D's raw output (its logit or critic value).

Every function takes float32 scores and returns a 0-dim tensor on their device; nothing here
reads a value back to the host.

* ``nonsaturating``, ``minimax`` (Goodfellow et al. 2014): binary cross-entropy on the logit, with
  the real target softened by one-sided label smoothing. D's loss halves are
  ``BCE(D(x), target)`` and ``BCE(D(G(z)), 0)``; G minimises ``-log σ(D(G(z)))`` or
  ``log(1 - σ(D(G(z))))``.
* ``hinge`` (Lim & Ye 2017; Miyato et al. 2018): D's halves ``mean relu(1 - D(x))`` and
  ``mean relu(1 + D(G(z)))``; G minimises ``-mean D(G(z))``.
* ``wgan_gp`` (Gulrajani et al. 2017): the critic's halves ``-mean D(x)`` and ``mean D(G(z))``,
  plus ``gp_weight`` times `gradient_penalty`; G minimises ``-mean D(G(z))``.

`r1_penalty` (Mescheder et al. 2018) is the squared gradient norm on real data the loop adds
every `r1_every` D updates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ganscope.trainer.config import BCE_LOSSES, JobConfig

Critic = Callable[[torch.Tensor], torch.Tensor]


class Objective:
    """D's two loss halves and G's adversarial loss under one job's `loss` knob."""

    def __init__(self, cfg: JobConfig, batch_size: int, device: torch.device) -> None:
        self.kind = cfg.loss
        self.is_bce = cfg.loss in BCE_LOSSES
        if self.is_bce:
            # Built once: BCE's targets are constant tensors, not worth an allocation per step.
            self.real_target = torch.full((batch_size,), cfg.label_smoothing, device=device)
            self.fake_target = torch.zeros(batch_size, device=device)
            self.ones = torch.ones(batch_size, device=device)

    def step_metrics(self, with_fm: bool) -> list[str]:
        """The per-step metric names under this loss, in the loop's row order."""
        names = ["loss/d", "loss/d_real", "loss/d_fake", "loss/g", "loss/g_adv"] + (["loss/g_fm"] if with_fm else [])
        if self.is_bce:
            names += ["pred/real", "pred/fake", "pred/fake_g"]     # a critic's sigmoid would mean nothing
        names += ["score/real", "score/fake", "score/fake_g"]
        return names + (["loss/gp"] if self.kind == "wgan_gp" else [])

    def d_terms(self, score_real: torch.Tensor, score_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss on real, loss on fake): `loss/d_real` and `loss/d_fake`, summed into D's loss."""
        if self.is_bce:
            return (F.binary_cross_entropy_with_logits(score_real, self.real_target),
                    F.binary_cross_entropy_with_logits(score_fake, self.fake_target))
        if self.kind == "hinge":
            return F.relu(1.0 - score_real).mean(), F.relu(1.0 + score_fake).mean()
        return -score_real.mean(), score_fake.mean()          # wgan_gp: the critic's Wasserstein estimate

    def g_adv(self, score_fake: torch.Tensor) -> torch.Tensor:
        """G's adversarial loss on D's scores of the G step's fake batch."""
        if self.kind == "nonsaturating":
            return F.binary_cross_entropy_with_logits(score_fake, self.ones)            # -log D(G(z))
        if self.kind == "minimax":
            return -F.binary_cross_entropy_with_logits(score_fake, self.fake_target)    # log(1 - D(G(z)))
        return -score_fake.mean()                                                        # hinge and WGAN


def _grad_sq_norms(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖∂ Σ scores / ∂ inputs_i‖², kept in the graph so the penalty trains D."""
    (grad,) = torch.autograd.grad(scores.float().sum(), inputs, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(1)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: mean over random interpolates x̂ of (‖∇_x̂ D(x̂)‖ − 1)² (one-centred).

    One ε ~ U(0, 1) per sample, drawn from `generator` (the run's checkpointed noise stream), so a
    resumed run draws the same interpolates. `critic` maps a batch to one score per sample.
    """
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator, device=real.device, dtype=torch.float32)
    x_hat = torch.lerp(fake.detach().float(), real.detach().float(), eps).to(real.dtype).requires_grad_(True)
    # The epsilon keeps the square root differentiable where a gradient is exactly zero.
    norms = (_grad_sq_norms(critic(x_hat), x_hat) + 1e-12).sqrt()
    return (norms - 1.0).pow(2).mean()


def r1_penalty(scores_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1: E‖∇_x D(x)‖² on the real batch `real` (which must require grad and have produced
    `scores_real`), before the γ/2 weight."""
    return _grad_sq_norms(scores_real, real).mean()
