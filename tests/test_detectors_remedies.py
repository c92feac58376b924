"""Remedies tailored to the run: both nets' rates, never the run's own value, escalation on a relaunch.

Each remedy is computed as the engine computes it when an alert opens (catalog.remedy_for with the
alert's evidence) and applied to the run's config the way the dashboard's "relaunch with this remedy"
applies it; the result must be a valid JobConfig.
"""

from __future__ import annotations

import itertools

import pytest

from ganscope.server.detectors import catalog
from ganscope.server.detectors.remedies import FIELDS
from ganscope.server.detectors.sources import SOURCES
from ganscope.trainer.config import JobConfig

CONFIGS = [{}, {"dataset": "ring8", "lr_d": 2e-3, "lr_g": 1e-5, "d_steps": 3},
           {"init_std": 1.0, "label_smoothing": 0.9, "ngf": 2, "ndf": 64},
           {"dataset": "trimodal1d", "lr_d": 0.05, "lr_g": 0.05, "beta1": 0.9, "g_steps": 5, "toy_hidden": 32,
            "batch_size": 32},
           {"dataset": "shapes", "image_size": 16, "batch_norm": False, "lr_d": 1e-7, "minibatch_disc": True,
            "fm_weight": 1.0}]
EVIDENCE = [{}, {"cause": "frozen"}, {"cause": "chance"}, {"cause": "clamp:loss/d_fake"},
            {"verdict": "regressing", "losses": {"d_ahead": False}}, {"verdict": "stalled", "losses": {"d_ahead": True}},
            {"observed": {"grad/g/fc1": {"min": 0.0, "max": 0.0}}}]



def changes(remedy: dict) -> dict:
    """A remedy's knob changes, without the rung it records (remedy_of, written for jobs)."""
    return {k: v for k, v in remedy["config"].items() if k != "remedy_of"}

def full(cfg: dict) -> dict:
    return JobConfig(**cfg).model_dump(mode="json")


@pytest.mark.parametrize("cfg", CONFIGS)
def test_every_remedy_is_a_valid_diff_that_changes_something_the_run_has_not(cfg):
    base = full(cfg)
    for sig, ev in itertools.product(catalog.IDS, EVIDENCE):
        r = catalog.remedy_for(sig, base, ev)
        JobConfig(**{**base, **r["config"]})  # the relaunch stays valid
        assert set(r["config"]) <= set(FIELDS)
        for k, v in r["config"].items():
            assert base[k] != v, f"{sig} proposes {k}={v!r}, the run's own value"
        assert r["text"] and r["sources"] and all(s in SOURCES.values() for s in r["sources"])
        for ch in r["changes"]:
            assert ch["knob"] in r["config"] and ch["why"] and ch["source"] in SOURCES.values()
            assert f"{ch['knob']} " in r["text"] and "→" in r["text"]


def test_d_overpowering_considers_gs_rate_and_escalates_on_a_relaunch():
    """The issue's ring8 run: lr_d 2e-3, lr_g 1e-5, d_steps 3. The first remedy must raise G's rate too;
    a relaunch that applied it and overpowered again gets a different, further step — never lr_d halved
    again and again."""
    cfg = full({"dataset": "ring8", "lr_d": 2e-3, "lr_g": 1e-5, "d_steps": 3})
    first = catalog.remedy_for("d_overpowering", cfg)
    assert first["level"] == 1
    assert first["config"]["lr_g"] > cfg["lr_g"] and first["config"]["lr_d"] <= first["config"]["lr_g"]
    assert first["config"]["d_steps"] == 1 and first["config"]["label_smoothing"] == 0.9
    relaunched = {**cfg, **first["config"]}
    second = catalog.remedy_for("d_overpowering", relaunched)
    assert second["level"] > 1 and "already in this run's config" in second["text"]
    assert second["config"] != first["config"]
    if "spectral_norm" in FIELDS:
        assert second["config"].get("spectral_norm") == "d"
    else:
        assert "spectral normalisation" in second["text"]  # said in words; the knob comes with the stabilisers
    seen = [first["config"], second["config"]]
    cur = {**relaunched, **second["config"]}
    for _ in range(6):  # the ladder ends; it never cycles back to a change already made
        r = catalog.remedy_for("d_overpowering", cur)
        if not r["config"]:
            assert "already in this run's config" in r["text"]
            break
        assert r["config"] not in seen
        seen.append(r["config"])
        cur = {**cur, **r["config"]}
    else:
        pytest.fail("the remedy ladder did not end")


def test_d_not_learning_never_proposes_the_rate_that_broke_it():
    hot = full({"lr_d": 0.05, "lr_g": 0.05})
    r = catalog.remedy_for("d_not_learning", hot, {"cause": "chance"})
    assert r["config"]["lr_d"] == 2e-4 and r["config"]["lr_g"] == 2e-4
    cold = full({"lr_d": 1e-7})
    r = catalog.remedy_for("d_not_learning", cold, {"cause": "frozen"})
    assert r["config"]["lr_d"] == 2e-4
    fast_g = full({"lr_d": 1e-4, "lr_g": 3e-3})
    r = catalog.remedy_for("d_not_learning", fast_g, {"cause": "chance"})
    assert r["config"]["lr_g"] == 1e-4 and r["config"]["lr_d"] == 2e-4  # G to D's rate, D on the faster scale
    balanced = full({})
    r = catalog.remedy_for("d_not_learning", balanced, {"cause": "chance"})
    assert r["config"]["lr_d"] > balanced["lr_d"]  # two time-scales: D faster than G


def test_sdk_remedies_are_concrete_for_declared_knobs_and_words_for_the_rest():
    r = catalog.remedy_for("d_overpowering", {"lr_d": 2e-3, "lr_g": 1e-5}, {}, kind="sdk")
    assert r["config"] == {"lr_g": 2e-4, "lr_d": 2e-4}
    assert "In your script" in r["text"] and "label smoothing" in r["text"]
    assert any(a["knob"] == "label_smoothing" for a in r["advice"])
    bare = catalog.remedy_for("mode_collapse", {}, {}, kind="sdk")
    assert bare["config"] == {} and "minibatch discrimination" in bare["text"]


def test_a_declared_remedy_of_resumes_the_ladder():
    cfg = {"lr_d": 2e-4, "lr_g": 2e-4, "remedy_of": {"signature": "oscillation", "level": 1}}
    r = catalog.remedy_for("oscillation", cfg, {}, kind="sdk")
    assert r["level"] >= 2 and "R1" in r["text"]
    fresh = catalog.remedy_for("oscillation", {"lr_d": 2e-4, "lr_g": 2e-4}, {}, kind="sdk")
    assert fresh["level"] == 1 and fresh["config"] == {"lr_d": 1e-4, "lr_g": 1e-4}


def test_quality_stalled_remedy_follows_the_evidence():
    base = full({"dataset": "shapes", "image_size": 16})
    ahead = catalog.remedy_for("quality_stalled", base, {"verdict": "stalled", "losses": {"d_ahead": True}})
    assert "DiffAugment" in ahead["text"] or "diffaugment" in ahead["config"]
    calm = catalog.remedy_for("quality_stalled", full({"dataset": "grid25", "toy_hidden": 32, "batch_size": 32}),
                              {"verdict": "stalled", "losses": {"d_ahead": False}})
    assert calm["config"]["toy_hidden"] > 32 and calm["config"]["batch_size"] == 128
    back = catalog.remedy_for("quality_stalled", base, {"verdict": "regressing", "losses": {}})
    assert "moving average" in back["text"] or "ema_g" in back["config"]


def test_catalog_sources_are_full_references_to_original_works():
    for key, ref in SOURCES.items():
        assert "GAN-NOTES" not in ref and "DESIGN" not in ref and "seed write-up" not in ref
        if key != "measured":
            assert "http" in ref and "(" in ref and ")" in ref, key  # authors (year) title, with a URL
    for s in catalog.catalog():
        text = " ".join([s["meaning"], s["rule"], s["remedy"]["text"], *(t["why"] for t in s["thresholds"])])
        assert "seed write-up" not in text and "GAN-NOTES" not in text


def test_image_collapse_undoes_its_measured_causes_before_adding_d_machinery():
    """shapes_collapse (no batch norm, G at half D's rate): minibatch discrimination and feature matching on
    top made its small D win outright in bench/remedy.py; batch norm and G at D's rate fixed it. Then the
    ladder goes on to the Salimans et al. tricks; a toy collapse starts with them."""
    cfg = full({"dataset": "shapes", "image_size": 16, "batch_norm": False, "g_act": "leaky_relu", "nz": 1,
                "lr_g": 1e-4})
    r = catalog.remedy_for("mode_collapse", cfg)
    assert changes(r) == {"batch_norm": True, "lr_g": cfg["lr_d"]} and r["level"] == 1
    assert "measured" in r["text"] and "lr_g 0.0001 → 0.0002" in r["text"]
    nxt = catalog.remedy_for("mode_collapse", {**cfg, **r["config"]})
    assert nxt["level"] == 2 and nxt["config"]["minibatch_disc"] is True and "batch_norm" not in nxt["config"]
    toy = catalog.remedy_for("mode_collapse", full({"dataset": "bimodal1d", "lr_g": 1e-4}))
    assert toy["level"] == 2 and toy["config"]["minibatch_disc"] is True  # no cause in its config: rung 2
    stuck = full({"dataset": "grid25", "lr_d": 2e-3, "lr_g": 1e-5, "d_steps": 3})  # grid25_g_stuck
    r = catalog.remedy_for("mode_collapse", stuck)
    assert r["level"] == 1 and changes(r) == {"d_steps": 1, "lr_g": 2e-4, "lr_d": 2e-4}


def test_d_not_learning_against_a_g_taking_several_steps_resets_g_steps():
    """bimodal_collapse_calm_d: 5 G steps per D step at lr_g 1e-3 — both G's pace knobs come back."""
    cfg = full({"dataset": "bimodal1d", "g_steps": 5, "lr_g": 1e-3})
    r = catalog.remedy_for("d_not_learning", cfg, {"cause": "chance"})
    assert r["config"]["g_steps"] == 1 and r["config"]["lr_g"] == cfg["lr_d"]
    only_steps = catalog.remedy_for("d_not_learning", full({"g_steps": 3}), {"cause": "chance"})
    assert changes(only_steps) == {"g_steps": 1}


def test_ema_decay_fits_the_run_length():
    """An average that starts at G's init: 0.999 over 600 steps sampled from weights half the init (toy/quality
    0 in bench/remedy.py where the last iterate had 0.48). The horizon is a tenth of the run, at most 1,000."""
    short = catalog.remedy_for("quality_stalled", full({"dataset": "gauss1d", "toy_hidden": 64, "steps": 600}),
                               {"verdict": "regressing", "losses": {}})
    assert short["config"]["ema_g"] == round(1 - 1 / 60, 4) and "last ~60 of the run's 600 steps" in short["text"]
    long = catalog.remedy_for("oscillation", full({"steps": 100_000, "lr_d": 1e-4, "lr_g": 1e-4, "r1_gamma": 10.0}))
    assert long["level"] == 3 and long["config"]["ema_g"] == 0.999  # first two rungs in place: the EMA, capped


def test_narrow_toy_mlps_get_width_before_anything_the_trend_suggests():
    """gauss1d_spreading (16 units, regressing): an EMA and halved rates ended at quality 0.09; 64 units fit."""
    cfg = full({"dataset": "gauss1d", "toy_hidden": 16, "batch_size": 32, "steps": 600})
    r = catalog.remedy_for("quality_stalled", cfg, {"verdict": "regressing", "losses": {}})
    assert r["level"] == 1 and changes(r) == {"toy_hidden": 64, "batch_size": 128}
    nxt = catalog.remedy_for("quality_stalled", {**cfg, **r["config"]}, {"verdict": "regressing", "losses": {}})
    assert "ema_g" in nxt["config"] and "toy_hidden" not in nxt["config"]


def test_d_at_chance_against_a_collapsed_g_gets_batch_statistics():
    """bimodal_collapse_calm_d's alert: D at chance, toy/modes bad (one of two modes), toy/quality good —
    each sample looks real; fixing G's pace alone left it on one mode in bench/remedy.py."""
    cfg = full({"dataset": "bimodal1d", "g_steps": 5, "lr_g": 1e-3})
    ev = {"cause": "chance", "fit": {"state": "bad", "readings": {"toy/modes": {"level": 0.5, "state": "bad"},
                                                                 "toy/quality": {"level": 0.67, "state": "good"}}}}
    r = catalog.remedy_for("d_not_learning", cfg, ev)
    assert r["config"]["g_steps"] == 1 and r["config"]["minibatch_disc"] is True and r["config"]["fm_weight"] == 1.0
    spread = {**ev, "fit": {"state": "bad", "readings": {"toy/modes": {"level": 1.0, "state": "good"},
                                                         "toy/quality": {"level": 0.1, "state": "bad"}}}}
    assert "minibatch_disc" not in catalog.remedy_for("d_not_learning", cfg, spread)["config"]


def test_an_alerts_remedy_follows_its_latest_evidence():
    """A real run (bimodal_collapse_calm_d): D at chance opens before the fit measures show G on one mode.
    The alert's remedy is re-tailored as its evidence changes, so what the user reads at the end names the
    collapse (minibatch discrimination), not only G's pace."""
    import tempfile

    from tests.scenarios import QUICK, DetectingSink
    from ganscope.trainer.loop import train

    sc = next(s for s in QUICK if s.name == "bimodal_collapse_calm_d")
    cfg = sc.job(0)
    sink = DetectingSink(config=cfg.model_dump(mode="json"))
    with tempfile.TemporaryDirectory() as wd:
        train(cfg, sink, wd)
    a = next(a for a in sink.det.history if a.signature == "d_not_learning")
    assert a.remedy == catalog.remedy_for("d_not_learning", cfg.model_dump(mode="json"), a.evidence)
    readings = a.evidence["fit"]["readings"]
    assert readings["toy/modes"]["state"] == "bad"
    assert a.remedy["config"]["minibatch_disc"] is True and a.remedy["config"]["g_steps"] == 1


def test_d_overpowering_on_a_run_hot_in_both_nets_cools_g_too():
    """shapes_saturated_tanh (lr 1.0 both, N(0, 10), no batch norm): D's rate alone brought to 2e-4 left G
    at 1.0 and its tanh saturated (bench/remedy.py); both rates and the init come back."""
    cfg = full({"dataset": "shapes", "image_size": 32, "batch_norm": False, "init_std": 10.0, "lr_d": 1.0,
                "lr_g": 1.0})
    r = catalog.remedy_for("d_overpowering", cfg)
    assert r["config"]["lr_g"] == 2e-4 and r["config"]["lr_d"] == 2e-4 and r["config"]["init_std"] == 0.02
    assert "init_std" not in catalog.remedy_for("d_overpowering", full({"lr_d": 2e-3}))["config"]
