"""Tests for gkdcn.data.transforms: log/CLR transforms, scaling, nodata, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gkdcn.data.transforms import ChannelTransform, cells_in_windows
from gkdcn.errors import GkdcnError


def _lognormal(n: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=1.0, sigma=1.0, size=(n, c)) * rng.uniform(0.5, 50, size=c)


@pytest.mark.parametrize("method", ["none", "log", "clr"])
def test_standard_scaling_gives_zero_mean_unit_std_on_fitted_data(method: str) -> None:
    values = _lognormal(400, 4, seed=1)
    tf = ChannelTransform.fit(values, method, "standard")
    out = tf.apply(values.T)  # channels first
    assert out.dtype == np.float32
    assert out.shape == (4, 400)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-5)


def test_robust_scaling_gives_zero_median_and_normal_iqr() -> None:
    values = _lognormal(501, 3, seed=2)
    tf = ChannelTransform.fit(values, "log", "robust")
    out = tf.apply(values.T).astype(np.float64)
    q25, med, q75 = np.percentile(out, [25, 50, 75], axis=1)
    np.testing.assert_allclose(med, 0.0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1.349, atol=1e-4)


def test_robust_scaling_with_zero_iqr_falls_back_to_std() -> None:
    # Censored channel: most cells at the detection limit, a few real values.
    values = np.full((100, 2), 0.5)
    values[:5, 0] = [3.0, 4.0, 5.0, 6.0, 7.0]
    values[:, 1] = np.arange(100, dtype=float)
    tf = ChannelTransform.fit(values, "none", "robust")
    assert tf.scale[0] == pytest.approx(values[:, 0].std())
    assert np.all(np.isfinite(tf.apply(values.T)))


def test_clr_rows_sum_to_zero_before_scaling() -> None:
    values = _lognormal(200, 5, seed=3)
    tf = ChannelTransform.fit(values, "clr", "none")
    out = tf.apply(values.T).astype(np.float64)
    np.testing.assert_allclose(out.sum(axis=0), 0.0, atol=1e-5)
    # And it is the textbook definition when no shift is needed.
    logs = np.log(values)
    np.testing.assert_allclose(out.T, logs - logs.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        st.tuples(st.integers(2, 12), st.integers(2, 5)),
        elements=st.floats(1e-3, 1e4),
    ),
    factor=st.floats(1.0, 1e2),
)
def test_clr_is_scale_invariant_per_cell(values: np.ndarray, factor: float) -> None:
    # Compositional data: a cell measured in other units (all channels times a factor) has the
    # same centred log-ratio. Factors >= 1 keep values inside the range not clipped at apply.
    tf = ChannelTransform.fit(values, "clr", "none")
    assert np.all(tf.shift == 0)
    a = tf.apply(values.T).astype(np.float64)
    b = tf.apply((values * factor).T).astype(np.float64)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a.sum(axis=0), 0.0, atol=1e-4)


def test_nan_cells_become_zero_in_all_channels_and_do_not_affect_others() -> None:
    rng = np.random.default_rng(4)
    raw = rng.lognormal(size=(3, 6, 7)).astype(np.float32)
    tf = ChannelTransform.fit(raw.reshape(3, -1).T, "clr", "standard")
    clean = tf.apply(raw)
    broken = raw.copy()
    broken[1, 2, 3] = np.nan  # one channel invalid -> the whole cell is invalid
    broken[:, 0, 0] = np.nan
    out = tf.apply(broken)
    assert np.all(np.isfinite(out))
    assert np.all(out[:, 2, 3] == 0)
    assert np.all(out[:, 0, 0] == 0)
    mask = np.ones((6, 7), dtype=bool)
    mask[2, 3] = mask[0, 0] = False
    np.testing.assert_array_equal(out[:, mask], clean[:, mask])


def test_fit_ignores_rows_with_nan_and_rejects_all_nan() -> None:
    values = _lognormal(50, 2, seed=5)
    with_nan = np.vstack([values, [[np.nan, 1e6], [1e6, np.inf]]])
    a = ChannelTransform.fit(values, "log", "standard")
    b = ChannelTransform.fit(with_nan, "log", "standard")
    np.testing.assert_array_equal(a.center, b.center)
    np.testing.assert_array_equal(a.scale, b.scale)
    with pytest.raises(GkdcnError, match="no valid training cells"):
        ChannelTransform.fit(np.full((4, 2), np.nan), "log", "standard")


def test_log_with_zeros_and_negatives_shifts_to_half_smallest_positive() -> None:
    values = np.array(
        [[0.0, 2.0, -1.0], [0.4, 3.0, 0.0], [0.2, 5.0, -3.0], [1.0, 7.0, -2.0]],
    )
    tf = ChannelTransform.fit(values, "log", "none")
    # channel 0: min 0, smallest positive 0.2 -> shift so min becomes 0.1
    # channel 1: all positive -> no shift; channel 2: no positive value -> min becomes 1
    np.testing.assert_allclose(tf.shift, [0.1, 0.0, 4.0])
    out = tf.apply(values.T)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], np.log10(values[:, 0] + 0.1), rtol=1e-6)
    np.testing.assert_allclose(out[2], np.log10(values[:, 2] + 4.0), rtol=1e-6)


def test_values_below_training_range_are_clipped_not_nan() -> None:
    values = np.array([[0.0, 1.0], [0.5, 2.0], [1.0, 4.0]])
    tf = ChannelTransform.fit(values, "log", "standard")
    new = np.array([[-5.0, 1.0], [0.0, -1.0]]).T  # x + shift <= 0 in both channels
    with np.errstate(all="raise"):
        out = tf.apply(new)
    assert np.all(np.isfinite(out))
    # Clipped to the floor (half the smallest training value after the shift): just below range.
    fitted = tf.apply(values.T)
    assert out[0, 0] < fitted[0].min()
    expected = (np.log10(tf.floor[0]) - tf.center[0]) / tf.scale[0]
    assert out[0, 0] == pytest.approx(expected, rel=1e-6)
    assert out[0, 0] > fitted[0].min() - 2.0  # not log10(1e-308)
    # Values just below the training range but above the floor pass unchanged.
    # channel 1: training min 1.0, no shift, floor 0.5; 0.6 is below the range but kept.
    inside = np.array([[0.1], [0.6]])
    got = tf.apply(inside)[1, 0]
    assert got == pytest.approx((np.log10(0.6) - tf.center[1]) / tf.scale[1], rel=1e-6)


def test_constant_channel_gets_unit_scale_and_maps_to_zero() -> None:
    values = np.column_stack([np.full(30, 7.0), np.linspace(1, 10, 30)])
    tf = ChannelTransform.fit(values, "none", "standard")
    assert tf.scale[0] == 1.0
    np.testing.assert_array_equal(tf.apply(values.T)[0], 0.0)


@pytest.mark.parametrize("method", ["none", "log", "clr"])
@pytest.mark.parametrize("scaling", ["none", "standard", "robust"])
def test_round_trip_through_json_is_exact(method: str, scaling: str) -> None:
    values = _lognormal(60, 3, seed=6)
    values[0, 1] = 0.0
    tf = ChannelTransform.fit(values, method, scaling)
    text = json.dumps(tf.to_dict())
    back = ChannelTransform.from_dict(json.loads(text))
    assert (back.method, back.scaling) == (method, scaling)
    for name in ("shift", "center", "scale", "floor"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tf, name))
    np.testing.assert_array_equal(back.apply(values.T), tf.apply(values.T))


def test_from_dict_rejects_bad_input() -> None:
    good = ChannelTransform.fit(_lognormal(10, 2, seed=7), "log", "standard").to_dict()
    with pytest.raises(GkdcnError, match="lacks"):
        ChannelTransform.from_dict({k: v for k, v in good.items() if k != "scale"})
    with pytest.raises(GkdcnError, match="equal length"):
        ChannelTransform.from_dict({**good, "center": [0.0]})
    with pytest.raises(GkdcnError, match="unknown transform method"):
        ChannelTransform.from_dict({**good, "method": "sqrt"})
    with pytest.raises(GkdcnError, match="positive"):
        ChannelTransform.from_dict({**good, "scale": [0.0, 1.0]})


def test_apply_on_windows_with_channel_axis_1_equals_per_window() -> None:
    rng = np.random.default_rng(8)
    raw = rng.lognormal(size=(500, 4))
    tf = ChannelTransform.fit(raw, "clr", "robust")
    windows = rng.lognormal(size=(6, 4, 5, 5))
    windows[2, 1, 0, 0] = np.nan
    out = tf.apply(windows, channel_axis=1)
    assert out.shape == windows.shape
    assert out.flags.c_contiguous
    for n in range(windows.shape[0]):
        np.testing.assert_array_equal(out[n], tf.apply(windows[n]))
    assert np.all(out[2, :, 0, 0] == 0)
    np.testing.assert_array_equal(out, tf.apply(windows, channel_axis=-3))


def test_apply_rejects_wrong_channel_count_and_bad_axis() -> None:
    tf = ChannelTransform.fit(_lognormal(20, 3, seed=9), "log", "standard")
    with pytest.raises(ValueError, match="fitted on 3"):
        tf.apply(np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="out of range"):
        tf.apply(np.ones((3, 4)), channel_axis=5)


def test_fit_rejects_bad_arguments() -> None:
    with pytest.raises(GkdcnError, match="unknown transform method"):
        ChannelTransform.fit(np.ones((3, 2)), "sqrt", "standard")
    with pytest.raises(GkdcnError, match="unknown scaling"):
        ChannelTransform.fit(np.ones((3, 2)), "log", "minmax")
    with pytest.raises(GkdcnError, match="shaped"):
        ChannelTransform.fit(np.ones(5), "log", "standard")
    with pytest.raises(GkdcnError, match="at least 2"):
        ChannelTransform.fit(np.ones((5, 1)), "clr", "standard")


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    window=st.sampled_from([1, 3, 5, 7]),
    centres=st.lists(st.tuples(st.integers(-3, 11), st.integers(-3, 11)), max_size=6),
)
def test_cells_in_windows_matches_slow_reference(
    height: int, width: int, window: int, centres: list[tuple[int, int]]
) -> None:
    rows = np.array([r for r, _ in centres], dtype=np.int64)
    cols = np.array([c for _, c in centres], dtype=np.int64)
    got = cells_in_windows((height, width), rows, cols, window)
    half = window // 2
    expected = {
        r * width + c
        for r0, c0 in centres
        for r in range(r0 - half, r0 + half + 1)
        for c in range(c0 - half, c0 + half + 1)
        if 0 <= r < height and 0 <= c < width
    }
    assert got.dtype == np.int64
    assert got.tolist() == sorted(expected)


def test_cells_in_windows_feeds_fit_on_training_cells_only() -> None:
    raw = np.zeros((2, 10, 10))
    raw[:, :, :5] = 1.0  # left half
    raw[:, :, 5:] = 1000.0  # right half: outside the training windows
    cells = cells_in_windows((10, 10), np.array([4]), np.array([2]), 3)
    tf = ChannelTransform.fit(raw.reshape(2, -1)[:, cells].T, "none", "none")
    assert cells.size == 9
    np.testing.assert_array_equal(raw.reshape(2, -1)[:, cells], 1.0)
    assert tf.n_channels == 2
    with pytest.raises(ValueError, match="odd") as info:
        cells_in_windows((10, 10), np.array([4]), np.array([2]), 4)
    assert not isinstance(info.value, GkdcnError)  # API misuse, not a user error


def _with_weight(values: np.ndarray, at: int, seed: int) -> np.ndarray:
    """``values`` with a fault-weight-like column (in [0, 1], many exact zeros) inserted at ``at``."""
    rng = np.random.default_rng(seed)
    weight = np.clip(rng.uniform(-0.5, 1.0, size=values.shape[0]), 0.0, 1.0)
    return np.insert(values, at, weight, axis=1)


@pytest.mark.parametrize("method", ["log", "clr"])
@pytest.mark.parametrize("scaling", ["standard", "robust"])
@pytest.mark.parametrize("at", [0, 2, 4])
def test_non_compositional_channel_is_only_scaled_and_changes_no_other_channel(
    method: str, scaling: str, at: int
) -> None:
    parts = _lognormal(300, 4, seed=11)
    parts[7, 1] = np.nan  # an invalid cell: dropped from the fit either way
    values = _with_weight(parts, at, seed=12)
    mask = np.ones(5, dtype=bool)
    mask[at] = False
    alone = ChannelTransform.fit(parts, method, scaling)
    mixed = ChannelTransform.fit(values, method, scaling, compositional=mask)
    out_alone, out_mixed = alone.apply(parts.T), mixed.apply(values.T)
    # The element channels are bit for bit those of the study without the extra channel.
    np.testing.assert_array_equal(np.delete(out_mixed, at, axis=0), out_alone)
    assert mixed.shift[at] == 0.0
    # The extra channel is its raw value, scaled (fitted on the valid training cells only).
    w = values[np.isfinite(values).all(axis=1), at]
    if scaling == "standard":
        center, scale = w.mean(), w.std()
    else:
        q25, center, q75 = np.percentile(w, [25, 50, 75])
        scale = (q75 - q25) / 1.349
    expected = np.where(np.isfinite(values).all(axis=1), (values[:, at] - center) / scale, 0.0)
    np.testing.assert_allclose(out_mixed[at], expected, rtol=1e-6, atol=1e-6)


def test_clr_geometric_mean_over_compositional_channels_only() -> None:
    parts = _lognormal(100, 3, seed=13)
    values = _with_weight(parts, 3, seed=14)
    tf = ChannelTransform.fit(values, "clr", "none", compositional=[True, True, True, False])
    out = tf.apply(values.T).astype(np.float64)
    logs = np.log(parts)
    np.testing.assert_allclose(out[:3].T, logs - logs.mean(axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(out[3], values[:, 3], atol=1e-6)  # untouched: no log, no shift
    # Moving the extra channel (e.g. the distance to a fault) does not move any element's value.
    moved = values.copy()
    moved[:, 3] = 1.0 - moved[:, 3]
    np.testing.assert_array_equal(tf.apply(moved.T)[:3], tf.apply(values.T)[:3])


def test_compositional_mask_round_trips_and_old_dicts_mean_all_compositional() -> None:
    values = _with_weight(_lognormal(50, 3, seed=15), 1, seed=16)
    mixed = ChannelTransform.fit(values, "clr", "standard", compositional=[True, False, True, True])
    d = json.loads(json.dumps(mixed.to_dict()))
    assert d["version"] == 2 and d["compositional"] == [True, False, True, True]
    back = ChannelTransform.from_dict(d)
    np.testing.assert_array_equal(back.compositional, mixed.compositional)
    np.testing.assert_array_equal(back.apply(values.T), mixed.apply(values.T))
    # All compositional: written exactly in the old (version 1) format, without the mask.
    plain = ChannelTransform.fit(values, "clr", "standard")
    old = plain.to_dict()
    assert old["version"] == 1 and "compositional" not in old
    assert set(old) == {"version", "method", "scaling", "shift", "center", "scale", "floor"}
    assert ChannelTransform.from_dict(old).all_compositional
    no_version = {k: v for k, v in old.items() if k != "version"}
    assert ChannelTransform.from_dict(no_version).all_compositional


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"compositional": [True, True]}, "4 true/false"),
        ({"compositional": [1, 0, 1, 1]}, "list of true/false"),
        ({"compositional": "yes"}, "list of true/false"),
        ({"compositional": []}, "list of true/false"),
        ({"version": 1, "compositional": [True, False, True, True]}, "version 1"),
        ({"version": 3}, "unknown version"),
    ],
)
def test_from_dict_rejects_bad_masks(change: dict, message: str) -> None:
    values = _with_weight(_lognormal(50, 3, seed=17), 1, seed=18)
    d = ChannelTransform.fit(values, "log", "standard", compositional=[True, False, True, True])
    with pytest.raises(GkdcnError, match=message):
        ChannelTransform.from_dict({**d.to_dict(), **change})


def test_fit_rejects_bad_masks_and_a_clr_of_one_part() -> None:
    values = _with_weight(_lognormal(50, 2, seed=19), 0, seed=20)
    with pytest.raises(GkdcnError, match="at least 2 compositional"):
        ChannelTransform.fit(values, "clr", "standard", compositional=[False, True, False])
    for bad in ([True, False], []):
        with pytest.raises(GkdcnError, match="3 true/false"):
            ChannelTransform.fit(values, "log", "standard", compositional=bad)
    # No compositional channel at all is fine for "log" (everything only scaled) ...
    tf = ChannelTransform.fit(values, "log", "standard", compositional=[False] * 3)
    none = ChannelTransform.fit(values, "none", "standard")
    np.testing.assert_array_equal(tf.apply(values.T), none.apply(values.T))
