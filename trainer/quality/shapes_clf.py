"""The `shapes` reference classifier: ground truth for what a G trained on `shapes` draws.

The renderer knows every image's attributes (trainer/datasets/shapes.py ATTRIBUTES: background kind, the
dominant shape's kind and colour class), so a small CNN trained on rendered images is an exact-label judge, as
the MNIST classifier is for Stacked-MNIST (Metz et al. 2017; PacGAN, Lin et al. 2018). It gives:

* `recognisable`: the share of G's images it labels with confidence ≥ CONFIDENT on every JUDGED head;
* `modes` of `modes_total`: the judged attribute classes (3 + 6 = 9) that hold at least FAIR_SHARE of their
  expected share among the confidently labelled images — the Stacked-MNIST protocol on our own data;
* its penultimate activations: the offline feature space for KID, FID and precision/recall/coverage.

Training is deterministic (fixed seed, fixed data) and takes CPU seconds; the weights are cached under the
cache folder, keyed by a hash of the renderer's source and the training settings, so a changed renderer trains
a new classifier. It trains on mildly blurred and noisy copies too: G's images are blurrier than the renders.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganscope.trainer.datasets import shapes as shapes_mod

CLF_SIZES = (16, 32)  # runs of 16 px are judged as 16-px renders, larger ones area-averaged to 32 px
TEST_N = 1024
TRAIN_SEED, TEST_SEED = 1_000_001, 2_000_003  # not run seeds' banks: the judge never saw the training data
STEPS, BATCH, LR = 2500, 64, 3e-3
# Max softmax on every judged head for an image to count as recognisable. Measured on held-out renders (32 px):
# at 0.8 the judged heads are 97-99% right on the images they are sure of and 64% of real images pass (the
# ceiling G is judged against; 0.9 would pass 47%).
CONFIDENT = 0.8
FAIR_SHARE = 0.25  # a class counts as produced with ≥ 1/4 of its expected share of the confident images
HEADS = tuple(shapes_mod.ATTRIBUTES.items())
# The heads recognisable and modes judge by. The dominant shape's kind is trained (its features help KID and
# coverage) but not judged: held-out accuracy 55-57% and almost never confident — too unreliable to call G's
# images unrecognisable by, where background (93%) and colour (88%) are.
JUDGED = ("background", "colour")
_VERSION = 1  # bump when the net or the training changes in a way the hash below cannot see


def clf_size(image_size: int) -> int:
    return 16 if image_size <= 16 else 32


def cache_dir() -> Path:
    """$GANSCOPE_CACHE, else $XDG_CACHE_HOME/ganscope, else ~/.cache/ganscope: per user, not per GANSCOPE_HOME,
    so every server home and worker of one user shares one trained classifier."""
    if os.environ.get("GANSCOPE_CACHE"):
        return Path(os.environ["GANSCOPE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ganscope"


class ShapesNet(nn.Module):
    """Three strided conv layers with batch norm on a 32-px input, a 128-unit hidden layer (the features), one
    linear head per attribute. Strided from the first layer and flattened (not pooled) at 4×4: cheap on a CPU,
    and where a shape sits still tells the heads which one dominates."""

    features_dim = 128
    side = 32

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 96, 4, stride=2, padding=1), nn.BatchNorm2d(96), nn.ReLU(),
            nn.Flatten(), nn.Linear(96 * 16, self.features_dim), nn.ReLU(),
        )
        self.heads = nn.ModuleList([nn.Linear(self.features_dim, k) for _, k in HEADS])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.body(x)
        return [h(f) for h in self.heads]


def to_clf(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images in [-1, 1] of any side as the classifier sees them: area-averaged to `size` (as the renderer would
    draw them at that size), then bilinearly to the net's 32 px."""
    x = x.float().clamp(-1, 1)
    if x.shape[-1] > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    if x.shape[-1] != ShapesNet.side:
        x = F.interpolate(x, size=(ShapesNet.side,) * 2, mode="bilinear", align_corners=False)
    return x


def _degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Half the batch blurred (a 3×3 binomial kernel mixed in by a random amount) and noised (σ ≤ 0.1)."""
    n = x.shape[0]
    k = torch.tensor([1.0, 2.0, 1.0])
    k2 = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    w = torch.rand(n, 1, 1, 1, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) < 0.5)
    noise = torch.randn(x.shape, generator=g) * 0.1 * torch.rand(n, 1, 1, 1, generator=g)
    return (x * (1 - w) + blurred * w + noise * (w > 0)).clamp(-1, 1)


def cache_key(steps: int | None = None) -> str:
    steps = STEPS if steps is None else steps
    src = "".join(inspect.getsource(f) for f in (shapes_mod._render_chunk, ShapesNet, _degrade, to_clf, _batch,
                                                 train_classifier))
    blob = f"{src}|{CLF_SIZES}|{TRAIN_SEED}|{steps}|{BATCH}|{LR}|{_VERSION}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _batch(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    labels: dict[str, torch.Tensor] = {}
    img = shapes_mod._render_chunk(n, size, g, labels)
    return to_clf((img * 255).round() / 127.5 - 1, size), labels  # the bank's uint8 rounding, as served


def train_classifier(steps: int | None = None) -> ShapesNet:
    """Train from scratch on freshly rendered batches (the renderer is an endless labelled source, so the net
    never sees an image twice and cannot memorise), half of each at 16 px and half at 32 px, so one classifier
    serves every run size; deterministic on one machine: own seeds and generator, global RNG untouched."""
    steps = STEPS if steps is None else steps
    g = torch.Generator().manual_seed(TRAIN_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAIN_SEED)
        net = ShapesNet()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    net.train()
    for _ in range(steps):
        parts = [_batch(BATCH // 2, size, g) for size in CLF_SIZES]
        xb = _degrade(torch.cat([p[0] for p in parts]), g)
        out = net(xb)
        loss = sum(F.cross_entropy(o, torch.cat([p[1][name] for p in parts])) for (name, _), o in zip(HEADS, out))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


_LOADED: dict[str, ShapesNet] = {}


SHIPPED = Path(__file__).with_name("shapes-classifier.pt")


def shipped_state(key: str) -> dict[str, torch.Tensor] | None:
    """The packaged classifier's weights when they were trained by the code as it is now (same cache key)."""
    try:
        blob = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    return blob["state_dict"] if isinstance(blob, dict) and blob.get("key") == key else None


def write_shipped() -> Path:
    """Train (or read from the cache) the classifier and write the packaged copy, keyed by the code."""
    net = load_classifier()
    torch.save({"key": cache_key(), "state_dict": net.state_dict()}, SHIPPED)
    return SHIPPED


def load_classifier() -> ShapesNet:
    """The cached classifier (one for every run size), trained and cached on first use."""
    key = cache_key()
    if key in _LOADED:
        return _LOADED[key]
    path = cache_dir() / "shapes-classifier" / f"{key}.pt"
    net = ShapesNet()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.eval()
    except (OSError, RuntimeError, EOFError, ValueError):
        shipped = shipped_state(key)
        if shipped is not None:  # the copy the package ships, trained by this very code: no cache written
            net.load_state_dict(shipped)
            net.eval()
            net.requires_grad_(False)
            _LOADED[key] = net
            return net
        net = train_classifier()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(net.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: two workers training at once never read half a file
    net.requires_grad_(False)
    _LOADED[key] = net
    return net


@torch.no_grad()
def judge(net: ShapesNet, images: torch.Tensor, chunk: int = 256) -> dict[str, float]:
    """recognisable, modes, modes_total for a batch of images in [-1, 1] (JUDGED heads only)."""
    size = clf_size(images.shape[-1])
    want = [i for i, (name, _) in enumerate(HEADS) if name in JUDGED]
    probs: list[list[torch.Tensor]] = [[] for _ in want]
    for i in range(0, images.shape[0], chunk):
        out = net(to_clf(images[i:i + chunk].cpu(), size))
        for j, h in enumerate(want):
            probs[j].append(out[h].softmax(dim=1))
    p = [torch.cat(ps) for ps in probs]
    conf = torch.stack([q.max(dim=1).values for q in p], dim=1)
    ok = (conf >= CONFIDENT).all(dim=1)
    n_ok = int(ok.sum())
    modes = 0
    sizes = [HEADS[h][1] for h in want]
    if n_ok:
        for k, q in zip(sizes, p):
            counts = torch.bincount(q[ok].argmax(dim=1), minlength=k).float()
            modes += int((counts >= max(1.0, FAIR_SHARE * n_ok / k)).sum())
    return {"recognisable": n_ok / max(1, images.shape[0]), "modes": float(modes), "modes_total": float(sum(sizes))}


@torch.no_grad()
def accuracy(net: ShapesNet, size: int, n: int = TEST_N) -> dict[str, float]:
    """Per-head accuracy on freshly rendered held-out images (a seed the classifier never trained on)."""
    x, labels = shapes_mod.render_labelled(TEST_SEED, size, n)
    out = net(to_clf(x, size))
    return {name: float((o.argmax(1) == labels[name]).float().mean()) for (name, _), o in zip(HEADS, out)}


if __name__ == "__main__":  # python -m ganscope.trainer.quality.shapes_clf: refresh the packaged copy
    print(write_shipped())
