"""Generator and discriminator networks, built from a `JobConfig` only.

DCGAN (Radford et al. 2015) for image sets, small MLPs for the 1-D/2-D toy sets.

Layer naming (what per-layer metrics are called: ``grad/g/convT1``, ``update/d/bn2``...):

* DCGAN G, for ``n = log2(image_size) - 1`` layers (16px: 3, 32px: 4, 64px: 5, 128px: 6):
  ``convT1`` (z → 4x4) ... ``convTn`` (→ image, tanh), with ``bn1`` .. ``bn{n-1}`` after the
  hidden ones when batch norm is on. First layer ``convT1``, last ``convTn``.
* DCGAN D, the same ``n``: ``conv1`` (image →, no batch norm on the input layer, as DCGAN)
  ... ``conv{n-1}``, each followed by ``bn{k}`` (k ≥ 2) when batch norm is on, then ``mbd``
  (minibatch discrimination, when on) and the 4x4 → 1 logit layer ``conv{n}``. With
  ``d_downsample="avgpool"`` every ``conv{k}`` (k < n) is a stride-1 3x3 conv followed by
  ``pool{k}`` (AvgPool2d(2)) instead of a stride-2 4x4 conv. Under ``loss="wgan_gp"`` D's
  normalisation layers are layer norm, named ``ln{k}`` (`JobConfig.d_norm`).
* Toy MLPs, ``L = toy_layers``: G ``fc1`` (z →) ... ``fc{L+1}`` (→ data, linear output);
  D ``fc1`` (data →) ... ``fc{L}``, ``mbd``, ``fc{L+1}`` (→ logit). Toy MLPs have no batch
  norm: the mixture literature (Metz et al. 2017, VEEGAN, PacGAN) trains plain MLPs.

G and D have the same number of parameterised conv/linear layers by construction.
Each net exposes ``first_layer``, ``last_layer`` and ``param_layers()`` (layer name →
its parameters, in forward order). D returns ``(logits, features)``: ``features`` is the
penultimate activation (before ``mbd``), the tap feature matching uses.

Spectral normalisation (``spectral_norm`` knob) is PyTorch's parametrization: a layer's
trained tensor moves to ``<layer>.parametrizations.weight.original`` and ``<layer>.weight``
becomes ``original / sigma``. `param_layers()` still names the layer (``conv1``) and lists
that trained tensor under it, so probes measure what the optimizer updates.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ganscope.trainer.config import JobConfig

# Minibatch discrimination size (Salimans et al. 2016 use 100 kernels of 5 dims on bigger nets).
MBD_KERNELS = 16
MBD_KERNEL_DIM = 8


def depth_for(image_size: int) -> int:
    """Conv layers per net: 4x4 → image_size doubles per layer (16px: 3 ... 128px: 6)."""
    n = int(math.log2(image_size)) - 1
    if 2 ** (n + 1) != image_size or n < 3:
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return n


def _act(kind: str, slope: float) -> nn.Module:
    return nn.LeakyReLU(slope, inplace=True) if kind == "leaky_relu" else nn.ReLU(inplace=True)


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016, §3.2: each sample sees how close it is to the rest of its batch.

    M = f·T reshaped to (B, kernels, dim); o_b(x_i) = Σ_{j≠i} exp(-‖M_i,b − M_j,b‖₁). A collapsed
    G yields a batch of near-identical samples, which this makes easy for D to spot.
    """

    def __init__(self, in_features: int, kernels: int = MBD_KERNELS, kernel_dim: int = MBD_KERNEL_DIM) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.weight = nn.Parameter(torch.empty(in_features, kernels * kernel_dim))
        nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(in_features))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = (f @ self.weight).view(-1, self.kernels, self.kernel_dim).transpose(0, 1)   # (kernels, B, dim)
        # cdist keeps memory at kernels·B² instead of the kernels·B²·dim of a broadcast difference.
        l1 = torch.cdist(m.float(), m.float(), p=1.0)                                     # (kernels, B, B)
        return (torch.exp(-l1).sum(dim=2) - 1.0).transpose(0, 1)   # drop the j == i term, exp(0) = 1


class NamedNet(nn.Module):
    """Shared layer bookkeeping: a layer is a module with parameters of its own."""

    first_layer: str
    last_layer: str

    def param_layers(self) -> "OrderedDict[str, list[nn.Parameter]]":
        out: OrderedDict[str, list[nn.Parameter]] = OrderedDict()
        for path, module in self.named_modules():
            if ".parametrizations." in f".{path}.":
                continue  # a parametrization's own storage: counted with the layer that owns it
            params = list(module.parameters(recurse=False))
            if parametrize.is_parametrized(module):
                # The trained tensors of parametrized weights (spectral norm's `weight.original`), first,
                # as the weight came first before the parametrization moved it.
                params = [plist.original for plist in module.parametrizations.values()] + params
            if not params:
                continue
            name = path.rsplit(".", 1)[-1]
            if name in out:
                raise ValueError(f"duplicate layer name {name!r} in {type(self).__name__}")
            out[name] = params
        return out


class DCGANGenerator(NamedNet):
    def __init__(self, cfg: JobConfig, channels: int) -> None:
        super().__init__()
        n = depth_for(cfg.image_size)
        bn, bias = cfg.batch_norm, not cfg.batch_norm  # BN's shift makes a conv bias redundant
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = cfg.ngf * 2 ** (n - 2)
        layers["convT1"] = nn.ConvTranspose2d(cfg.nz, width, 4, 1, 0, bias=bias)
        for k in range(1, n):
            if bn:
                layers[f"bn{k}"] = nn.BatchNorm2d(width, momentum=cfg.bn_momentum)
            layers[f"act{k}"] = _act(cfg.g_act, cfg.leaky_slope)
            out = channels if k == n - 1 else width // 2
            layers[f"convT{k + 1}"] = nn.ConvTranspose2d(width, out, 4, 2, 1, bias=bias or k == n - 1)
            width = out
        layers["tanh"] = nn.Tanh()
        self.main = nn.Sequential(layers)
        self.first_layer, self.last_layer = "convT1", f"convT{n}"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class DCGANDiscriminator(NamedNet):
    def __init__(self, cfg: JobConfig, channels: int) -> None:
        super().__init__()
        n = depth_for(cfg.image_size)
        norm, bias = cfg.d_norm, not cfg.batch_norm
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin, cout = channels, cfg.ndf
        for k in range(1, n):
            if cfg.d_downsample == "strided":
                layers[f"conv{k}"] = nn.Conv2d(cin, cout, 4, 2, 1, bias=bias or k == 1)
            else:
                layers[f"conv{k}"] = nn.Conv2d(cin, cout, 3, 1, 1, bias=bias or k == 1)
                layers[f"pool{k}"] = nn.AvgPool2d(2)
            if norm == "batch" and k > 1:
                layers[f"bn{k}"] = nn.BatchNorm2d(cout, momentum=cfg.bn_momentum)
            elif norm == "layer" and k > 1:
                # One group: each sample normalised over (C, H, W) alone, with a per-channel affine.
                layers[f"ln{k}"] = nn.GroupNorm(1, cout)
            layers[f"act{k}"] = _act(cfg.d_act, cfg.leaky_slope)
            cin, cout = cout, cout * 2
        self.body = nn.Sequential(layers)
        self.feat_channels = cin
        self.mbd: MinibatchDiscrimination | None = None
        head_in = cin
        if cfg.minibatch_disc:
            self.mbd = MinibatchDiscrimination(cin * 4 * 4)
            head_in += MBD_KERNELS
        self.first_layer, self.last_layer = "conv1", f"conv{n}"
        self.add_module(self.last_layer, nn.Conv2d(head_in, 1, 4, 1, 0, bias=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)                                    # (B, C, 4, 4)
        features = h.flatten(1)
        if self.mbd is not None:
            o = self.mbd(features)                          # (B, kernels): broadcast over the 4x4 map
            h = torch.cat([h, o[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3]).to(h.dtype)], dim=1)
        logits = getattr(self, self.last_layer)(h).flatten()
        return logits, features


class MLPGenerator(NamedNet):
    def __init__(self, cfg: JobConfig) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width_in = cfg.nz
        for k in range(1, cfg.toy_layers + 1):
            layers[f"fc{k}"] = nn.Linear(width_in, cfg.toy_hidden)
            layers[f"act{k}"] = _act(cfg.g_act, cfg.leaky_slope)
            width_in = cfg.toy_hidden
        last = cfg.toy_layers + 1
        layers[f"fc{last}"] = nn.Linear(width_in, cfg.data_dim)  # linear: toy data is not in [-1, 1]
        self.main = nn.Sequential(layers)
        self.first_layer, self.last_layer = "fc1", f"fc{last}"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class MLPDiscriminator(NamedNet):
    def __init__(self, cfg: JobConfig) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width_in = cfg.data_dim
        for k in range(1, cfg.toy_layers + 1):
            layers[f"fc{k}"] = nn.Linear(width_in, cfg.toy_hidden)
            layers[f"act{k}"] = _act(cfg.d_act, cfg.leaky_slope)
            width_in = cfg.toy_hidden
        self.body = nn.Sequential(layers)
        self.mbd = MinibatchDiscrimination(width_in) if cfg.minibatch_disc else None
        head_in = width_in + (MBD_KERNELS if cfg.minibatch_disc else 0)
        last = cfg.toy_layers + 1
        self.first_layer, self.last_layer = "fc1", f"fc{last}"
        self.add_module(self.last_layer, nn.Linear(head_in, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        h = features if self.mbd is None else torch.cat([features, self.mbd(features).to(features.dtype)], dim=1)
        return getattr(self, self.last_layer)(h).flatten(), features


def init_weights(net: nn.Module, cfg: JobConfig) -> None:
    """DCGAN's N(0, init_std), xavier, or PyTorch's default (then nothing to do).

    init_std scales conv/linear weights; batch norm's scale keeps DCGAN's N(1, 0.02) so the knob
    studies the weights the literature varies (N(0, 0.02) works, N(0, 0.2) and xavier failed).
    """
    if cfg.init == "default":
        return
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if cfg.init == "normal":
                nn.init.normal_(m.weight, 0.0, cfg.init_std)
            else:
                nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, MinibatchDiscrimination):
            if cfg.init == "normal":
                nn.init.normal_(m.weight, 0.0, cfg.init_std)
            else:
                nn.init.xavier_normal_(m.weight)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def apply_spectral_norm(net: nn.Module) -> None:
    """Spectral normalisation on every conv/linear weight (Miyato et al. 2018), after init.

    PyTorch's parametrization: one power iteration per training-mode forward, its vectors kept
    as buffers (so checkpoints carry them). Minibatch discrimination's tensor is not a linear
    layer's weight and stays as it is.
    """
    for m in list(net.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral_norm(m)


def _initialised_generator(cfg: JobConfig) -> NamedNet:
    net = MLPGenerator(cfg) if cfg.is_toy else DCGANGenerator(cfg, cfg.channels)
    init_weights(net, cfg)
    return net


def _initialised_discriminator(cfg: JobConfig) -> NamedNet:
    net = MLPDiscriminator(cfg) if cfg.is_toy else DCGANDiscriminator(cfg, cfg.channels)
    init_weights(net, cfg)
    return net


def build_generator(cfg: JobConfig) -> NamedNet:
    net = _initialised_generator(cfg)
    if cfg.spectral_norm == "both":
        apply_spectral_norm(net)
    return net


def build_discriminator(cfg: JobConfig) -> NamedNet:
    net = _initialised_discriminator(cfg)
    if cfg.spectral_norm != "none":
        apply_spectral_norm(net)
    return net


def build_models(cfg: JobConfig) -> tuple[NamedNet, NamedNet]:
    """G and D, initialised from `cfg.seed` alone (same weights on every device and rerun).

    Both nets are initialised before any spectral norm draws its random vectors, so the raw
    weights are the same whatever `spectral_norm` says.
    """
    from ganscope.trainer.device import seeded

    with seeded(cfg.seed):
        g = _initialised_generator(cfg)
        d = _initialised_discriminator(cfg)
        if cfg.spectral_norm == "both":
            apply_spectral_norm(g)
        if cfg.spectral_norm != "none":
            apply_spectral_norm(d)
    return g, d


def z_shape(cfg: JobConfig, n: int) -> tuple[int, ...]:
    """Latent batch shape: (n, nz, 1, 1) for the conv G, (n, nz) for the MLP."""
    return (n, cfg.nz) if cfg.is_toy else (n, cfg.nz, 1, 1)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
