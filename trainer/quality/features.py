"""Feature extractors for the image quality metrics: Inception-v3 from the operator's file, or an offline one.

Nothing is ever downloaded. With GANSCOPE_INCEPTION_WEIGHTS naming a torchvision Inception-v3 state dict
(`torchvision.models.inception_v3(weights=...).state_dict()` saved with torch.save), KID and FID use its
2048-d pool features as the literature does (comparable with published figures only for ImageNet weights and
the usual 50k samples; ours are a few hundred). Without it, an offline extractor stands in, and its figures are
labelled with its name (the "quality" snapshot's `extractor`) because they are NOT comparable with published FID:

* `shapes-classifier` on `shapes`: the reference classifier's 64-d penultimate activations (trained on the
  renderer's exact labels, so its feature space separates what differs between shapes images);
* `random-conv` elsewhere: a fixed-seed, untrained conv net, mean and std pooled (256-d). Random conv features
  are a known working embedding for precision/recall/coverage and KID trends (Naeem et al. 2020, §5), need no
  file and are identical on every machine with the same torch; pooled pixel statistics alone (the other
  candidate) cannot see shapes or edges.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ENV = "GANSCOPE_INCEPTION_WEIGHTS"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class QualityError(RuntimeError):
    """The quality evaluation cannot run as configured; the message names the setting and the fix."""


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class Extractor(nn.Module):
    """Images in [-1, 1] (N, C, H, W) -> features (N, D). `name` labels every figure computed with it."""

    name = "extractor"
    num_features = 0  # torchmetrics reads this instead of probing with a dummy image


class InceptionFeatures(Extractor):
    name = "inception-v3"
    num_features = 2048

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        path = Path(path)
        if not path.is_file():
            raise QualityError(f"{ENV}={str(path)!r} is not a file: point it at a torchvision Inception-v3 "
                               f"state dict (torch.save(inception_v3(weights=...).state_dict(), path)) or unset "
                               f"it to use the offline extractor")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same operator error
            raise QualityError(f"{ENV}={str(path)!r} could not be read as a torch state dict: {exc}") from None
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            if not isinstance(state, dict):
                raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise QualityError(f"{ENV}={str(path)!r} is not a torchvision Inception-v3 state dict "
                               f"(aux_logits=True): {first}") from None
        net.fc = nn.Identity()  # the 2048-d average-pool output, as FID/KID use
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (_rgb(x.float()).clamp(-1, 1) + 1) / 2
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)


class ShapesFeatures(Extractor):
    name = "shapes-classifier"

    def __init__(self, image_size: int) -> None:
        super().__init__()
        from ganscope.trainer.quality import shapes_clf

        self.size = shapes_clf.clf_size(image_size)
        self.clf = shapes_clf.load_classifier()
        self.num_features = self.clf.features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ganscope.trainer.quality.shapes_clf import to_clf

        return self.clf.features(to_clf(x, self.size))


class RandomConvFeatures(Extractor):
    name = "random-conv"
    num_features = 256
    SEED = 20200301

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(self.SEED)
        shapes = [(32, 3), (64, 32), (128, 64)]
        self.weights = nn.ParameterList(
            # He-scaled normal weights: activations keep their scale through the ReLUs, whatever the input side
            nn.Parameter(torch.randn(o, i, 4, 4, generator=g) * (2.0 / (i * 16)) ** 0.5, requires_grad=False)
            for o, i in shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _rgb(x.float()).clamp(-1, 1)
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="area" if x.shape[-1] > 32 else "bilinear")
        for w in self.weights:
            x = F.relu(F.conv2d(x, w.to(x.device), stride=2, padding=1))
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def build_extractor(dataset: str, image_size: int) -> Extractor:
    """Inception when GANSCOPE_INCEPTION_WEIGHTS is set (a bad file raises QualityError), else the fallback."""
    path = os.environ.get(ENV, "").strip()
    if path:
        return InceptionFeatures(path)
    if dataset == "shapes":
        return ShapesFeatures(image_size)
    return RandomConvFeatures()
