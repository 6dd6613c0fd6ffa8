"""The censoring rule (gkdcn.data.censoring), units (gkdcn.data.units), survey levelling
(gkdcn.data.levelling) and identifier columns judged by content, each on a tiny table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gkdcn.data.censoring import censor, censor_grid, is_repeated_digit_code, parse_cells
from gkdcn.data.gridding import identifier_reason
from gkdcn.data.levelling import level, median_spread
from gkdcn.data.units import parse_column


def _censor(items: list[object], **kwargs: object):  # type: ignore[no-untyped-def]
    cells = parse_cells(items)
    assert cells is not None
    return censor(
        cells.values,
        less_than=cells.less_than,
        below_text=cells.below_text,
        greater=cells.greater,
        **kwargs,  # type: ignore[arg-type]
    )


def test_negative_codes_and_less_than_are_half_their_limit() -> None:
    result = _censor([1.0, -0.5, "<0.2", 4.0])
    np.testing.assert_allclose(result.values, [1.0, 0.25, 0.1, 4.0])
    assert result.below.tolist() == [False, True, True, False]
    assert result.counts == {"negative": 1, "less_than": 1}
    assert result.rule_limits["negative"] == (0.5, 0.5)


def test_repeated_large_negative_is_a_no_value_code_not_a_limit() -> None:
    # Without --nodata, -9999 must not become "below detection limit 9999" (4999.5 ppm).
    result = _censor([1.0, -9999.0, -9999.0, 2.0, -6666.0, -0.5])
    assert np.isnan(result.values[[1, 2, 4]]).all()
    assert result.values[5] == 0.25
    assert result.counts["code"] == 3 and set(result.codes) == {-9999.0, -6666.0}
    assert is_repeated_digit_code(-999) and not is_repeated_digit_code(-100)
    assert not is_repeated_digit_code(-99) and not is_repeated_digit_code(-999.5)


def test_zeros_are_censored_at_the_columns_limit() -> None:
    # Exact zeros in Au: below detection, never data that pushes gold into linear space.
    stated = _censor([0.0, 0.0, -0.001, 0.02, 0.5])
    np.testing.assert_allclose(stated.values[:2], [0.0005, 0.0005])
    assert stated.counts["zero"] == 2 and stated.censored == 3
    unstated = _censor([0.0, 0.04, 0.5, 1.0])  # no limit stated: the smallest detected value
    assert unstated.values[0] == pytest.approx(0.02)
    assert (unstated.values > 0).all()


def test_bdl_words_censor_and_do_not_drop_the_column() -> None:
    cells = parse_cells(["1.2", "BDL", "b.d.l.", "n.d.", "nd", "<0.5", "3.4", "lost", "IS"])
    assert cells is not None  # still a numeric column
    assert cells.below_text.sum() == 4 and cells.unknown_text == {"lost": 1}
    assert cells.missing_text == 1  # IS: insufficient sample
    result = censor(cells.values, less_than=cells.less_than, below_text=cells.below_text)
    # The words take the column's stated limit (0.5): half of it.
    np.testing.assert_allclose(result.values[1:5], [0.25] * 4)
    assert np.isnan(result.values[7:]).all()
    assert parse_cells(["granite", "shale", "1.0"]) is None  # a text column stays text
    only_words = _censor(["BDL", "n.d.", None])
    assert only_words.censored == 2 and only_words.detected == 0


def test_detection_limit_column_gives_each_sample_its_limit() -> None:
    values = np.array([0.3, 2.0, -1.0, 0.0, 5.0])
    limits = np.array([0.5, 0.5, 0.2, 0.4, np.nan])
    result = censor(values, limits=limits)
    np.testing.assert_allclose(result.values, [0.25, 2.0, 0.1, 0.2, 5.0])
    assert result.counts["dl_column"] == 1 and result.counts["zero"] == 1


def test_a_limit_above_every_detected_value_is_no_value() -> None:
    # Another laboratory's <100 in a column whose detected values are all below 4.
    result = _censor([1.0, 3.9, -100.0, 2.0, "<0.5"])
    assert np.isnan(result.values[2]) and result.values[4] == 0.25
    assert result.counts["useless"] == 1


def test_policies_nodata_and_keep() -> None:
    dropped = _censor([1.0, -0.5, 0.0, "<0.2"], policy="nodata")
    assert np.isnan(dropped.values[1:]).all() and dropped.censored == 3
    kept = _censor([1.0, -0.5, 0.0, "<0.2"], policy="keep")
    np.testing.assert_allclose(kept.values, [1.0, -0.5, 0.0, 0.1])
    assert kept.censored == 1


def test_greater_than_is_the_upper_limit() -> None:
    result = _censor([1.0, ">10", 3.0])
    np.testing.assert_allclose(result.values, [1.0, 10.0, 3.0])
    assert result.counts["greater"] == 1 and result.censored == 0


def test_grid_negative_cells_are_censored_and_a_repeated_code_is_nodata() -> None:
    rng = np.random.default_rng(0)
    band = rng.lognormal(0, 1, (40, 40))
    band[:5] = -1.0  # a repeated sentinel on 200 cells
    band[10, 3:8] = [-0.2, -0.05, -0.7, 0.0, -0.01]  # smeared by an old interpolation
    result = censor_grid(band)
    assert np.isnan(result.values[:5]).all() and result.codes == (-1.0,)
    smallest = band[band > 0].min()
    np.testing.assert_allclose(result.values[10, 3:8], 0.5 * smallest)
    assert result.counts == {"code": 200, "grid_below": 5}
    given = censor_grid(band, limit=0.01)
    np.testing.assert_allclose(given.values[10, 3:8], 0.005)


@pytest.mark.parametrize(
    ("name", "label", "factor", "element", "oxide"),
    [
        ("Au_ppb", "Au", 1e-3, "Au", False),
        ("Au_ppm", "Au", 1.0, "Au", False),
        ("Cu [ppm]", "Cu", 1.0, "Cu", False),
        ("Fe2O3_pct", "Fe2O3", 1e4, "Fe", True),
        ("CaO (%)", "CaO", 1e4, "Ca", True),
        ("SiO2%", "SiO2", 1e4, "Si", True),
        ("Au_g/t", "Au", 1.0, "Au", False),
        ("Pt_ppt", "Pt", 1e-6, "Pt", False),
        ("LOI_pct", "LOI", 1e4, None, False),
        ("CO2_pct", "CO2", 1e4, None, False),  # carbonate, not a copy of carbon
        ("Au", "Au", None, "Au", False),
        ("WAMEX_A_NO", "WAMEX_A_NO", None, None, False),
    ],
)
def test_units_and_elements_from_column_names(
    name: str, label: str, factor: float | None, element: str | None, oxide: bool
) -> None:
    parsed = parse_column(name)
    assert (parsed.label, parsed.factor, parsed.element, parsed.oxide) == (
        label,
        factor,
        element,
        oxide,
    )


def test_identifier_columns_are_judged_by_content() -> None:
    n = 40
    rng = np.random.default_rng(1)
    assert identifier_reason("REPORT_NO", pd.Series(rng.permutation(n) + 90_000)) is not None
    assert identifier_reason("Survey", pd.Series([101503, 114345] * (n // 2))) is not None
    assert identifier_reason("row", pd.Series(np.arange(n) * 3)) is not None
    assert identifier_reason("objectid_x", pd.Series(rng.random(n))) is not None
    # Element columns are measurements whatever their content; so are real-valued columns.
    assert identifier_reason("Ba_ppm", pd.Series(rng.permutation(n) + 100)) is None
    assert identifier_reason("pH", pd.Series(rng.uniform(4, 9, n))) is None


def test_quantile_levelling_matches_each_survey_to_the_pooled_distribution() -> None:
    rng = np.random.default_rng(2)
    a = rng.lognormal(np.log(7.0), 0.4, 200)
    b = rng.lognormal(np.log(0.44), 0.4, 100)  # another laboratory, 16x lower
    values = np.concatenate([a, b])
    surveys = np.array(["A"] * 200 + ["B"] * 100, dtype=object)
    spread = median_spread(values, surveys)
    assert spread is not None and spread.ratio > 10 and spread.low[0] == "B"
    result = level(values, surveys, "quantile")
    out = result.values
    assert median_spread(out, surveys).ratio < 1.2  # type: ignore[union-attr]
    # Ranks within a survey are kept.
    assert (np.argsort(out[200:]) == np.argsort(b)).all()
    assert sorted(result.levelled) == ["A", "B"]


def test_robust_z_levelling_sets_each_surveys_median_and_mad() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(2.0, 0.3, 150), rng.lognormal(-1.0, 0.9, 150)])
    surveys = np.array(["A"] * 150 + ["B"] * 150, dtype=object)
    out = level(values, surveys, "robust-z").values
    logs = np.log10(out)
    med = [np.median(logs[:150]), np.median(logs[150:])]
    parts = (slice(0, 150), slice(150, 300))
    mad = [np.median(np.abs(logs[s] - m)) for s, m in zip(parts, med, strict=True)]
    assert med[0] == pytest.approx(med[1], abs=1e-9)
    assert mad[0] == pytest.approx(mad[1], rel=1e-6)
    assert (out > 0).all()
    small = level(values[:153], surveys[:153], "robust-z")
    assert small.too_small == ["B"] and small.levelled == ["A"]
    assert level(values, surveys, "none").values.tolist() == values.tolist()
