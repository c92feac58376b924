"""Downsampling keeps extremes, drops to zero and non-finite points; output is valid JSON material."""

from __future__ import annotations

import json

import numpy as np

from ganscope.server.downsample import downsample, select_range, to_json


def series(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(n, dtype=np.int64) * 3, 1.0 + 0.01 * rng.standard_normal(n)


def test_short_series_pass_through() -> None:
    s, v = series(100)
    s2, v2 = downsample(s, v, 2000)
    assert s2 is s and v2 is v


def test_never_exceeds_max_points_and_stays_ordered() -> None:
    for n, m in [(10_001, 2000), (1_000_000, 2000), (12_345, 7), (5000, 4), (999, 3)]:
        s, v = series(n)
        s2, v2 = downsample(s, v, m)
        assert 0 < s2.size <= m
        assert np.all(np.diff(s2) > 0)
        assert s2[0] == s[0] and (m < 4 or s2[-1] == s[-1])


def test_a_one_step_spike_and_a_drop_to_zero_survive() -> None:
    s, v = series(1_000_000)
    v[123_457] = 50.0  # spike
    v[654_321] = 0.0  # collapse to 0 (the ClearML averaging case)
    s2, v2 = downsample(s, v, 2000)
    assert v2.max() == 50.0 and s2[np.argmax(v2)] == s[123_457]
    assert v2.min() == 0.0 and s2[np.argmin(v2)] == s[654_321]
    # and every bucket's extremes: the downsampled envelope equals the true one
    assert v2.max() == v.max() and v2.min() == v.min()


def test_every_non_finite_point_is_kept() -> None:
    s, v = series(100_000)
    bad = [5, 77_777, 77_778, 99_999]
    v[bad[0]] = np.nan
    v[bad[1]] = np.inf
    v[bad[2]] = -np.inf
    v[bad[3]] = np.nan
    s2, v2 = downsample(s, v, 1000)
    kept = set(s2[~np.isfinite(v2)].tolist())
    assert kept == {int(s[i]) for i in bad}


def test_mostly_nan_series_is_still_capped() -> None:
    s, v = series(50_000)
    v[::2] = np.nan  # 25,000 non-finite points cannot all fit in 500
    s2, v2 = downsample(s, v, 500)
    assert s2.size <= 500
    assert np.isnan(v2).any() and np.isfinite(v2).any()
    s3, v3 = downsample(s, np.full(50_000, np.nan), 500)
    assert 0 < s3.size <= 500 and np.isnan(v3).all()


def test_to_json_writes_null_for_non_finite() -> None:
    out = to_json(np.array([1, 2, 3, 4]), np.array([0.5, np.nan, np.inf, -np.inf]))
    assert out == {"steps": [1, 2, 3, 4], "values": [0.5, None, None, None]}
    text = json.dumps(out, allow_nan=False)  # raises if any NaN/Infinity slipped through
    assert "NaN" not in text and "Infinity" not in text


def test_since_step() -> None:
    s, v = series(10)
    s2, v2 = select_range(s, v, since_step=s[6])
    assert s2.tolist() == s[7:].tolist() and v2.tolist() == v[7:].tolist()
    assert select_range(s, v, None)[0] is s
