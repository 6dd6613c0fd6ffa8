"""Survey levelling: make the values of one element comparable across the surveys of a table.

A table compiled from several surveys (laboratories, methods, years) holds, in one column,
values whose levels differ by survey for reasons that are not geology. :func:`level` brings each
survey of one column onto the distribution of all samples pooled (the reference), by one of:

- ``"none"``: values unchanged;
- ``"quantile"``: quantile matching. Within survey ``s`` (``n_s`` samples with a value), a value
  of average rank ``r`` (ties share their mean rank) has the plotting position
  ``p = (r - 0.5) / n_s``; it becomes the pooled sample quantile at ``p`` (numpy's linear
  interpolation between order statistics). Every survey then has the pooled distribution;
  ranks within a survey are kept;
- ``"robust-z"``: a robust z-score, put back on the pooled scale. In ``log10`` (linear when the
  column holds values <= 0), ``z = (v - median_s) / (1.4826 MAD_s)``, then
  ``v' = median_all + 1.4826 MAD_all z``, back-transformed: every survey gets the pooled median
  and median absolute deviation, values stay concentrations. A survey whose MAD is 0 (more
  than half its values equal, e.g. at the detection limit) is only shifted to the pooled median.

Surveys with fewer than :data:`MIN_SURVEY_SAMPLES` values keep their values (too few to estimate
a distribution). :func:`median_spread` finds the columns whose survey medians differ by more
than a factor (10 by default), the warning a user gets whether or not levelling is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.stats import rankdata

LevelMethod = Literal["none", "quantile", "robust-z"]
LEVEL_METHODS: tuple[LevelMethod, ...] = ("none", "quantile", "robust-z")
#: A survey needs this many values of a column to be levelled.
MIN_SURVEY_SAMPLES = 5
#: Survey medians of one column further apart than this factor are warned about.
MEDIAN_SPREAD = 10.0
# MAD x 1.4826 estimates the standard deviation of a normal distribution.
_MAD_TO_STD = 1.4826


@dataclass
class Levelled:
    """One column after :func:`level`: the values, and which surveys were levelled or kept."""

    values: np.ndarray
    levelled: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    shift_only: list[str] = field(default_factory=list)


def _groups(surveys: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for code in dict.fromkeys(surveys[ok].tolist()):
        out[str(code)] = np.flatnonzero(ok & (surveys == code))
    return out


def level(values: np.ndarray, surveys: np.ndarray, method: LevelMethod) -> Levelled:
    """Level one column (float, NaN = no value) by survey code (one per sample); see above."""
    if method not in LEVEL_METHODS:
        raise ValueError(f"method must be one of {LEVEL_METHODS}, not {method!r}")
    v = np.asarray(values, dtype=float).copy()
    ok = np.isfinite(v)
    result = Levelled(values=v)
    groups = _groups(np.asarray(surveys, dtype=object), ok)
    if method == "none" or len(groups) < 2:
        return result
    pooled = v[ok]
    log = bool((pooled > 0).all())
    space = np.log10(pooled) if log else pooled
    ref_median = float(np.median(space))
    ref_mad = float(np.median(np.abs(space - ref_median)))
    for code, index in groups.items():
        if index.size < MIN_SURVEY_SAMPLES:
            result.too_small.append(code)
            continue
        own = v[index]
        if method == "quantile":
            p = (rankdata(own) - 0.5) / own.size
            v[index] = np.quantile(pooled, p)
        else:
            s = np.log10(own) if log else own
            median = float(np.median(s))
            mad = float(np.median(np.abs(s - median)))
            if mad > 0:
                z = (s - median) / (_MAD_TO_STD * mad)
                moved = ref_median + _MAD_TO_STD * ref_mad * z
            else:
                moved = s - median + ref_median
                result.shift_only.append(code)
            v[index] = 10.0**moved if log else moved
        result.levelled.append(code)
    return result


@dataclass(frozen=True)
class Spread:
    """The lowest and highest survey median of one column and their ratio."""

    ratio: float
    low: tuple[str, float]
    high: tuple[str, float]


def median_spread(values: np.ndarray, surveys: np.ndarray, min_samples: int = 3) -> Spread | None:
    """Survey medians of the positive values of one column: the lowest and highest.

    Over surveys with at least ``min_samples`` such values; None when fewer than two surveys
    qualify.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    medians = {
        code: float(np.median(v[index]))
        for code, index in _groups(np.asarray(surveys, dtype=object), ok).items()
        if index.size >= min_samples
    }
    if len(medians) < 2:
        return None
    low = min(medians.items(), key=lambda item: item[1])
    high = max(medians.items(), key=lambda item: item[1])
    ratio = high[1] / low[1] if low[1] > 0 else math.inf
    return Spread(ratio=ratio, low=low, high=high)
