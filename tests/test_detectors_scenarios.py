"""The labelled corpus through the real trainer: each provoked signature is flagged, healthy runs stay quiet.

Every scenario of tests/scenarios.py QUICK trains in-process (tiny nets, CPU, one thread); each
metrics flush goes to the detector engine exactly as ingest would pass it. A provoked signature
must be flagged with its id within MAX_DELAY steps of its onset in the raw metrics; a healthy
run must raise no warning and no failure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganscope.server.detectors.catalog import IDS, thresholds_for
from ganscope.server.detectors.rules import Context, weight_layers
from tests.scenarios import QUICK, Outcome, run

MAX_DELAY = 100  # steps from the symptom's onset to the alert (the target)
# The module's fixture trains every QUICK scenario (about 20 tiny runs, 3–6 minutes on a loaded 2-core
# machine), which the suite's 300 s default would cut short.
pytestmark = pytest.mark.timeout(1200)
LN4 = 2 * math.log(2)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    import torch

    torch.set_num_threads(1)
    return {sc.name: run(sc) for sc in QUICK}


def test_corpus_covers_every_signature_on_toy_sets_and_images():
    provoked = {sig for sc in QUICK for sig in sc.expect}
    assert provoked == set(IDS)
    sets = {sc.config["dataset"] for sc in QUICK}
    assert {"ring8", "grid25", "shapes"} <= sets
    assert any(not sc.expect and sc.config["dataset"] == "shapes" for sc in QUICK)
    assert any(not sc.expect and sc.config["dataset"] in ("ring8", "grid25") for sc in QUICK)
    assert any(not sc.expect and sc.config["dataset"] in ("gauss1d", "trimodal1d") for sc in QUICK)
    collapse_sets = {sc.config["dataset"] for sc in QUICK if "mode_collapse" in sc.expect}
    assert "shapes" in collapse_sets and collapse_sets - {"shapes"}  # collapse on images and on toy sets


@pytest.mark.parametrize("name", [sc.name for sc in QUICK if not sc.expect])
def test_healthy_run_raises_no_alarm(outcomes, name):
    o = outcomes[name]
    assert o.fired == {}, f"{name}: {o.fired}"
    assert np.isfinite(o.metrics["loss/d"][1]).all()


@pytest.mark.parametrize("name", [sc.name for sc in QUICK if sc.expect])
def test_provoked_signature_is_flagged_soon_after_onset(outcomes, name):
    o = outcomes[name]
    for sig in o.scenario.expect:
        assert o.onsets[sig] is not None, f"{name}: the recipe did not provoke {sig}'s symptom"
        assert sig in o.fired, f"{name}: expected {sig}, flagged {o.fired}"
        assert o.delay(sig) <= MAX_DELAY, f"{name}: {sig} flagged at {o.fired[sig]}, onset {o.onsets[sig]}"


def test_mode_collapse_is_flagged_while_the_losses_look_ideal(outcomes):
    o = outcomes["bimodal_collapse_calm_d"]
    at = o.fired["mode_collapse"]
    s, ld = o.metrics["loss/d"]
    around = ld[(s > at - 100) & (s <= at)]
    assert abs(float(np.median(around)) - LN4) < 0.05  # D at equilibrium: the losses alone say "fine"
    ts, modes = o.metrics["toy/modes"]
    assert np.all(modes[(ts > at - 100) & (ts <= at)] <= 1)


def test_equilibrium_at_a_good_fit_is_healthy(outcomes):
    """D at chance — frozen-flat, real and fake scored alike — while G matches the data: no alert."""
    o = outcomes["gauss1d_equilibrium"]
    s, ld = o.metrics["loss/d"]
    late = s > 350
    assert abs(float(np.median(ld[late])) - LN4) < 0.01 and float(np.subtract(*np.percentile(ld[late], [75, 25]))) < 0.002
    gap = np.abs(o.metrics["pred/real"][1] - o.metrics["pred/fake"][1])[late]
    assert float(np.median(gap)) < 0.005
    ts, q = o.metrics["toy/quality"]
    assert float(np.median(q[ts > 350])) > 0.9  # G fits: what tells this equilibrium from a stuck D
    assert o.fired == {}


def test_a_run_that_never_fits_is_flagged_while_its_losses_look_ordinary(outcomes):
    o = outcomes["ring8_no_fit"]
    at = o.fired["quality_stalled"]
    s, ld = o.metrics["loss/d"]
    assert 0.3 < float(np.median(ld[(s > at - 200) & (s <= at)])) < 1.3  # nothing odd in D's loss
    assert o.severities["quality_stalled"] == "failing"  # the fit is bad, not just flat


def test_image_collapse_is_far_below_healthy_images_with_gs_gradient_alive(outcomes):
    o = outcomes["shapes_collapse"]
    at = o.fired["mode_collapse"]
    s, d = o.metrics["sample/diversity"]
    peak = max(float(np.median(d[(s > a) & (s <= a + 25)])) for a in range(100, at, 25))
    line = thresholds_for("mode_collapse", None)["diversity_min"]
    after = d[s > at]
    assert np.median(after) < line and np.median(after) < peak / 4  # fell far below its own peak, and stays
    hs, hd = outcomes["shapes_healthy"].metrics["sample/diversity"]
    assert hd[hs >= 150].min() > 10 * line  # a healthy 16px run stays far above the line
    first = weight_layers(o.metrics, "grad", "g", Context())[0]
    assert (o.metrics[first][1] > 0).all()  # G still learns: its gradient never vanishes
    assert "vanishing_g_grad" not in o.fired and "d_overpowering" not in o.fired


def test_judging_costs_little_next_to_training(outcomes):
    judge = sum(o.judge_s for o in outcomes.values())
    train = sum(o.seconds for o in outcomes.values())
    assert judge < 0.05 * train, f"detectors {judge:.2f}s of {train:.1f}s"
