"""Networks built from config: depth follows image size, layer names, feature tap, MLPs for toy sets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganscope.trainer.config import JobConfig
from ganscope.trainer.models import (
    DCGANDiscriminator, MinibatchDiscrimination, build_models, depth_for, parameter_count, z_shape,
)

torch.set_num_threads(1)


def _cfg(**kw) -> JobConfig:
    base = dict(image_size=16, ngf=4, ndf=4, nz=8, device="cpu")
    base.update(kw)
    return JobConfig(**base)


def _convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]


@pytest.mark.parametrize("size,depth", [(16, 3), (32, 4), (64, 5), (128, 6)])
def test_depth_follows_image_size_and_both_nets_have_equal_layer_counts(size: int, depth: int) -> None:
    cfg = _cfg(image_size=size, dataset="mnist")
    g, d = build_models(cfg)
    assert depth_for(size) == depth
    assert len(_convs(g)) == len(_convs(d)) == depth
    z = torch.randn(z_shape(cfg, 3))
    x = g(z)
    assert x.shape == (3, 1, size, size)                 # mnist: one channel
    assert x.abs().max() <= 1.0                          # tanh output, same range as the data
    logits, feats = d(x)
    assert logits.shape == (3,)
    # The feature tap is D's penultimate activation: the widest map at 4x4.
    assert feats.shape == (3, cfg.ndf * 2 ** (depth - 2) * 16)


def test_layer_names_first_and_last_layers() -> None:
    g, d = build_models(_cfg(image_size=32))
    assert list(g.param_layers()) == ["convT1", "bn1", "convT2", "bn2", "convT3", "bn3", "convT4"]
    assert list(d.param_layers()) == ["conv1", "conv2", "bn2", "conv3", "bn3", "conv4"]
    assert (g.first_layer, g.last_layer, d.first_layer, d.last_layer) == ("convT1", "convT4", "conv1", "conv4")
    # The first layer is the one that touches the input: D's conv1 sees the image channels.
    assert d.param_layers()["conv1"][0].shape[1] == 3
    assert g.param_layers()["convT1"][0].shape[0] == 8   # nz


def test_widths_follow_ngf_and_ndf() -> None:
    small_g, small_d = build_models(_cfg(image_size=32, ngf=4, ndf=4))
    wide_g, wide_d = build_models(_cfg(image_size=32, ngf=8, ndf=16))
    assert parameter_count(wide_g) > 2 * parameter_count(small_g)
    assert parameter_count(wide_d) > 8 * parameter_count(small_d)
    assert wide_d.param_layers()["conv1"][0].shape[0] == 16


def test_toy_mlps() -> None:
    cfg = _cfg(dataset="ring8", toy_hidden=12, toy_layers=2, nz=5)
    g, d = build_models(cfg)
    assert list(g.param_layers()) == ["fc1", "fc2", "fc3"]
    assert list(d.param_layers()) == ["fc1", "fc2", "fc3"]
    x = g(torch.randn(z_shape(cfg, 7)))
    assert x.shape == (7, 2)
    logits, feats = d(x)
    assert logits.shape == (7,) and feats.shape == (7, 12)
    one_d = JobConfig(dataset="gauss1d", toy_hidden=12, toy_layers=1, nz=5)
    g1, d1 = build_models(one_d)
    assert g1(torch.randn(4, 5)).shape == (4, 1)
    assert not [m for m in g.modules() if isinstance(m, nn.BatchNorm1d)]


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a, _ = build_models(_cfg(seed=1))
    b, _ = build_models(_cfg(seed=1))
    c, _ = build_models(_cfg(seed=2))
    wa, wb, wc = (n.param_layers()["convT1"][0] for n in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_minibatch_discrimination_matches_its_definition() -> None:
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(10, kernels=4, kernel_dim=3)
    f = torch.randn(5, 10)
    m = (f @ mbd.weight).view(5, 4, 3)
    # Salimans et al. 2016: o_b(x_i) = sum over j != i of exp(-||M_i,b - M_j,b||_1)
    want = torch.stack([sum(torch.exp(-(m[i] - m[j]).abs().sum(1)) for j in range(5) if j != i)
                        for i in range(5)])
    assert torch.allclose(mbd(f), want, atol=1e-6)


def test_minibatch_discrimination_makes_d_see_the_batch() -> None:
    cfg = _cfg(minibatch_disc=True)
    d = DCGANDiscriminator(cfg, 3).eval()
    assert "mbd" in d.param_layers()
    x = torch.randn(6, 3, 16, 16)
    y = x.clone()
    y[1:] = x[0]                          # the others become copies of sample 0: a collapsed batch
    with torch.no_grad():
        assert not torch.allclose(d(x)[0][0], d(y)[0][0])   # sample 0 unchanged, its score changed
        plain = DCGANDiscriminator(_cfg(), 3).eval()
        assert torch.allclose(plain(x)[0][0], plain(y)[0][0])  # without it, D judges samples alone
