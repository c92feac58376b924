"""Ground-truth measures (trainer/quality/): toy/fit, the shapes classifier, KID/FID, precision/recall/coverage,
the Inception extractor from GANSCOPE_INCEPTION_WEIGHTS, and the loop reporting them. Real nets, real renders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ganscope.trainer.config import JobConfig
from ganscope.trainer.datasets.shapes import ATTRIBUTES, render_labelled
from ganscope.trainer.loop import train
from ganscope.trainer.quality import shapes_clf
from ganscope.trainer.quality.features import ENV, QualityError, RandomConvFeatures, build_extractor
from ganscope.trainer.quality.metrics import kid_fid, prc
from ganscope.trainer.quality.toyfit import toy_fit
from ganscope.trainer.sink import MemorySink
from ganscope.trainer.toy import Mixture, mixture_for
from tests.jobs import tiny_image_job

torch.set_num_threads(1)
# The first test to need the shapes classifier trains and caches it (per user): measured 6 minutes on a
# heavily loaded 2-core machine; every later run reads the cache in milliseconds.
pytestmark = pytest.mark.timeout(900)
TOYS = ("ring8", "grid25", "gauss1d", "bimodal1d", "trimodal1d")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- toy/fit ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TOYS)
def test_toy_fit_real_against_real_stays_under_a_tenth(name: str) -> None:
    mix = mixture_for(JobConfig(dataset=name))
    assert mix is not None
    assert toy_fit(mix.sample(2500, gen(1)), mix.sample(2500, gen(2))) < 0.1


@pytest.mark.parametrize("name", TOYS)
def test_toy_fit_reads_a_shift_in_standard_deviations(name: str) -> None:
    mix = mixture_for(JobConfig(dataset=name))
    assert mix is not None
    real = mix.sample(2500, gen(1))
    shifted = mix.sample(2500, gen(2)) + 0.5 * real.std(dim=0)
    assert 0.3 < toy_fit(real, shifted) < 0.7  # half a std off: past the good line, short of the bad one


def test_toy_fit_collapse_onto_one_mode_is_past_the_bad_line() -> None:
    bi = mixture_for(JobConfig(dataset="bimodal1d"))
    tri = mixture_for(JobConfig(dataset="trimodal1d"))
    assert bi is not None and tri is not None
    one_bi = Mixture(bi.centers[1:], bi.sigma).sample(2500, gen(3))
    one_tri = Mixture(tri.centers[2:], tri.sigma).sample(2500, gen(3))
    # bimodal1d's modes sit one std either side of the mean: moving half the mass two stds reads about 1
    assert toy_fit(bi.sample(2500, gen(1)), one_bi) > 0.9
    assert toy_fit(tri.sample(2500, gen(1)), one_tri) > 1.0
    ring = mixture_for(JobConfig(dataset="ring8"))
    assert ring is not None
    assert toy_fit(ring.sample(2500, gen(1)), Mixture(ring.centers[:1], ring.sigma).sample(2500, gen(3))) > 1.0


def test_toy_fit_of_non_finite_samples_is_infinite_and_bad_shapes_are_refused() -> None:
    real = torch.randn(100, 1, generator=gen(0))
    fake = real.clone()
    fake[3] = float("nan")
    assert math.isinf(toy_fit(real, fake))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        toy_fit(torch.randn(10, 3), torch.randn(10, 3))


@pytest.mark.parametrize("name", ["poisson1d", "ring8"])
def test_the_loop_reports_toy_fit_on_every_toy_set(name: str, tmp_path: Path) -> None:
    cfg = JobConfig(dataset=name, steps=4, toy_every=2, batch_size=16, toy_hidden=8, toy_layers=1, device="cpu")
    sink = MemorySink()
    assert train(cfg, sink, tmp_path).status == "succeeded"
    steps, values = sink.series("toy/fit")
    assert steps == [0, 2, 4] and all(v > 0.3 for v in values)  # an untrained G is nowhere near the data


# --- the shapes classifier -------------------------------------------------------------------------------

def test_classifier_training_is_deterministic() -> None:
    a = shapes_clf.train_classifier(steps=8)
    b = shapes_clf.train_classifier(steps=8)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def clf32() -> shapes_clf.ShapesNet:
    """The cached 32-px classifier (trained on first use, then read from the cache folder)."""
    return shapes_clf.load_classifier()


def test_classifier_is_accurate_on_held_out_shapes(clf32: shapes_clf.ShapesNet) -> None:
    acc = shapes_clf.accuracy(clf32, 32)
    assert set(acc) == set(ATTRIBUTES)
    for name, floor in ACCURACY_FLOOR.items():
        assert acc[name] >= floor, acc
    # and robust to the blur G's images have: a 3x3 box blur costs at most a few points
    x, labels = render_labelled(shapes_clf.TEST_SEED, 32, 512)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    with torch.no_grad():
        out = clf32(shapes_clf.to_clf(blurred, 32))
    for (name, _), o in zip(shapes_clf.HEADS, out):
        assert float((o.argmax(1) == labels[name]).float().mean()) >= ACCURACY_FLOOR[name] - 0.1


# Measured on held-out renders: background 0.93, shape 0.57 (not judged: see shapes_clf.JUDGED), colour 0.88.
ACCURACY_FLOOR = {"background": 0.9, "shape": 0.5, "colour": 0.85}


def test_recognisable_and_modes_on_real_noise_and_one_class(clf32: shapes_clf.ShapesNet) -> None:
    x, labels = render_labelled(11, 32, 1024)
    real = shapes_clf.judge(clf32, x[:512])
    assert real["modes"] == real["modes_total"] == 9 and real["recognisable"] > 0.5
    noise = shapes_clf.judge(clf32, torch.rand(256, 3, 32, 32, generator=gen(0)) * 2 - 1)
    assert noise["recognisable"] < 0.1
    grey = shapes_clf.judge(clf32, torch.zeros(256, 3, 32, 32))
    assert grey["modes"] <= 2  # one image repeated: at most one class per judged attribute
    # A G that draws one kind of image only: one background, one shape kind, one colour.
    one = (labels["background"] == 0) & (labels["shape"] == 0) & (labels["colour"] == 2)
    assert int(one.sum()) >= 5
    collapsed = shapes_clf.judge(clf32, x[one].repeat(256 // int(one.sum()) + 1, 1, 1, 1)[:256])
    assert collapsed["modes"] / collapsed["modes_total"] <= 0.5  # the server's bad line for quality/modes


def test_classifier_cache_is_keyed_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(shapes_clf, "STEPS", 4)  # a tiny training: this test is about the file, not accuracy
    shapes_clf._LOADED.clear()
    try:
        net = shapes_clf.load_classifier()
        files = list((tmp_path / "shapes-classifier").glob("*.pt"))
        assert len(files) == 1 and files[0].name == shapes_clf.cache_key() + ".pt"
        shapes_clf._LOADED.clear()
        again = shapes_clf.load_classifier()  # read back, not retrained: same weights
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    finally:
        shapes_clf._LOADED.clear()


# --- KID, FID, precision / recall / coverage ----------------------------------------------------------------

@pytest.fixture(scope="module")
def conv_feats() -> dict[str, torch.Tensor]:
    ext = RandomConvFeatures()
    with torch.no_grad():
        a, _ = render_labelled(21, 32, 256)
        b, _ = render_labelled(22, 32, 256)
        return {"a": ext(a), "b": ext(b), "noise": ext(torch.rand(256, 3, 32, 32, generator=gen(5)) * 2 - 1),
                "copies": ext(a[:4].repeat(64, 1, 1, 1))}


def test_kid_fid_near_zero_real_against_real_and_large_against_noise(conv_feats: dict[str, torch.Tensor]) -> None:
    kid_rr, fid_rr = kid_fid(conv_feats["a"], conv_feats["b"])
    kid_rn, fid_rn = kid_fid(conv_feats["a"], conv_feats["noise"])
    assert abs(kid_rr) < 0.05 * kid_rn and fid_rr < 0.1 * fid_rn
    state = torch.get_rng_state()
    kid_fid(conv_feats["a"], conv_feats["b"])
    assert torch.equal(state, torch.get_rng_state())  # KID's subsets never move the caller's RNG


def test_precision_recall_coverage(conv_feats: dict[str, torch.Tensor]) -> None:
    rr = prc(conv_feats["a"], conv_feats["b"])
    assert rr["coverage"] > 0.8 and rr["precision"] > 0.6 and rr["recall"] > 0.6
    noise = prc(conv_feats["a"], conv_feats["noise"])
    assert noise["precision"] < 0.25 and noise["recall"] < 0.05 and noise["coverage"] < 0.1
    copies = prc(conv_feats["a"], conv_feats["copies"])  # four images over and over: collapsed
    assert copies["coverage"] < 0.25 and copies["recall"] < 0.1


# --- the Inception extractor --------------------------------------------------------------------------------

def test_inception_weights_file_is_loaded_and_a_wrong_one_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import inception_v3

    good = tmp_path / "inception.pt"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), good)
    monkeypatch.setenv(ENV, str(good))
    ext = build_extractor("cifar10", 32)
    assert ext.name == "inception-v3"
    with torch.no_grad():
        assert ext(torch.rand(2, 1, 16, 16) * 2 - 1).shape == (2, 2048)  # grey images are repeated to RGB
    wrong = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    for path, says in ((wrong, "not a torchvision Inception-v3"), (tmp_path / "missing.pt", "is not a file")):
        monkeypatch.setenv(ENV, str(path))
        with pytest.raises(QualityError, match=ENV) as err:
            build_extractor("shapes", 32)
        assert says in str(err.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle")
    monkeypatch.setenv(ENV, str(junk))
    with pytest.raises(QualityError, match="could not be read"):
        train(tiny_image_job(eval_every=2), MemorySink(), tmp_path / "run")  # the job fails before step 1


def test_offline_extractors_without_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert build_extractor("cifar10", 32).name == "random-conv"
    assert build_extractor("mnist", 16)(torch.zeros(3, 1, 16, 16)).shape == (3, 256)


def test_the_loop_reports_quality_every_eval_every_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    sink = MemorySink()
    cfg = tiny_image_job(steps=4, eval_every=2, eval_samples=32, ema_g=0.9)
    assert train(cfg, sink, tmp_path).status == "succeeded"
    for name in ("quality/kid", "quality/fid", "quality/precision", "quality/recall", "quality/coverage",
                 "quality/recognisable", "quality/modes", "quality/modes_total", "perf/eval_s"):
        assert sink.series(name)[0] == [2, 4], name
    assert sink.values("quality/modes_total") == [9.0, 9.0]
    snaps = [s for s in sink.snapshots if s.kind == "quality"]
    assert [s.step for s in snaps] == [2, 4] and snaps[0].payload["extractor"] == "shapes-classifier"
    off = MemorySink()
    train(tiny_image_job(steps=2, eval_every=0), off, tmp_path / "off")
    assert not any(n.startswith("quality/") for n in off.names())


def test_evaluating_never_changes_what_training_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ganscope.trainer.loop import Trainer

    monkeypatch.delenv(ENV, raising=False)
    nets = []
    for every in (0, 2):
        tr = Trainer(tiny_image_job(steps=4, eval_every=every, eval_samples=32), MemorySink(), tmp_path / str(every))
        assert tr.run().status == "succeeded"
        nets.append(tr.state.g.state_dict())
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])  # bit-for-bit, as resume promises


def test_the_package_ships_the_classifier_this_code_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run reads the packaged classifier instead of training for minutes; it is keyed by the code,
    so a change to the renderer or the training makes this fail until `python -m
    ganscope.trainer.quality.shapes_clf` refreshes it."""
    blob = torch.load(shapes_clf.SHIPPED, map_location="cpu", weights_only=True)
    assert blob["key"] == shapes_clf.cache_key(), "refresh trainer/quality/shapes-classifier.pt"
    monkeypatch.setenv("GANSCOPE_CACHE", str(tmp_path))  # an empty cache: a fresh machine
    shapes_clf._LOADED.clear()
    try:
        net = shapes_clf.load_classifier()
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), blob["state_dict"].values()))
        assert not (tmp_path / "shapes-classifier").exists()  # a training would have cached its result
    finally:
        shapes_clf._LOADED.clear()
