"""Below-detection values and no-value codes: one censoring rule for sample columns and grids.

Laboratories report a concentration below the detection limit ``d`` in many ways: a negative
number ``-d``, a text ``<d``, a word (``BDL``, ``b.d.l.``, ``n.d.``, ``nd``), an exact zero, or a
number below the sample's limit in a detection-limit column. They report "no value" (not
analysed, sample lost) with codes too: a declared code (``--nodata``), a float marker
(|value| >= 1e30), or a negative number of repeated digits (``-999``, ``-6666``, ``-9999``) that
no detection limit ever is. :func:`censor` applies the rules, in this order, to one column of a
sample table:

1. ``nodata``: a declared no-value code -> no value;
2. ``sentinel``: |value| >= 1e30 -> no value;
3. ``code``: a negative number whose magnitude is an integer of three or more repeated digits
   (-999, -6666, -9999, ...) -> no value (declare it with ``--nodata`` to say so yourself);
4. below detection, each with its limit ``d``:

   - ``negative``: a negative number ``-d``;
   - ``less_than``: a text ``<d``;
   - ``dl_column``: a positive value below the sample's detection limit in the column's
     detection-limit column (which also gives ``d`` for the entries of the other rules);
   - ``zero``: an exact zero, and ``text``: ``BDL`` / ``b.d.l.`` / ``n.d.`` / ``nd``, at the
     column's own limit: its smallest stated limit (from the rules above), else its smallest
     detected value; a zero is never a measured concentration;

5. ``useless``: a below-detection entry whose limit lies above every detected value of its
   column (another laboratory's much higher limit) -> no value: half of it would exceed every
   measurement and make a false anomaly;
6. substitution (``policy``): ``"half"`` (the default, the usual substitution in exploration
   geochemistry) sets every below-detection entry to ``d / 2``; ``"nodata"`` drops them;
   ``"keep"`` keeps negative numbers and zeros as the numbers they are (for columns that can be
   zero or negative) and still halves texts.

A text ``>d`` (above the upper limit) becomes ``d`` (``greater``). :func:`censor_grid` applies
the same rule to a gridded layer, where a limit per cell is unknown: one repeated negative value
(on at least 10 cells and 0.5 % of them, and most of the negative cells: the raster reader's
rule) or a repeated-digit code is no value, and every other value <= 0 is below detection at
``limit`` (default: the layer's smallest positive value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

CensorPolicy = Literal["half", "nodata", "keep"]
CENSOR_POLICIES: tuple[CensorPolicy, ...] = ("half", "nodata", "keep")

#: Below-detection entries become this fraction of their detection limit (policy "half").
SUBSTITUTE_FRACTION = 0.5
#: Values this large are float no-value markers, never concentrations.
SENTINEL = 1e30
#: Words meaning "below detection" (compared in lower case, without surrounding spaces).
BELOW_TEXT = frozenset(
    {"bdl", "b.d.l.", "b.d.l", "bd", "b.d.", "n.d.", "nd", "n.d", "<dl", "<lod", "<ld", "lld"}
)
#: Words meaning "no value".
MISSING_TEXT = frozenset(
    {"", "na", "n/a", "n.a.", "n.a", "nan", "-", "--", "null", "none", "is", "i.s.", "lnr", "nr"}
)
# A grid's repeated negative value is a no-value code on at least this many cells and share of
# the valid cells (and on most of its negative cells): the raster reader's rule.
_GRID_CODE_CELLS = 10
_GRID_CODE_SHARE = 0.005

#: Each rule's words on screen, in the order they apply.
RULE_TEXT: dict[str, str] = {
    "missing_text": "no-value words (n.a., -, IS, ...) read as no value",
    "unknown_text": "other text in a numeric column read as no value",
    "nodata": "values equal to --nodata read as no value",
    "sentinel": "values with |value| >= 1e30 (float markers) read as no value",
    "code": "negative codes of repeated digits (-999, -6666, -9999, ...) read as no value, "
    "not as detection limits (declare them with --nodata to say so)",
    "negative": "negative numbers -d read as below detection limit d",
    "less_than": "text <d read as below detection limit d",
    "dl_column": "values below the sample's limit in the column's detection-limit column "
    "read as below detection",
    "zero": "exact zeros read as below detection, at the column's detection limit (its "
    "smallest stated limit, else its smallest detected value)",
    "text": "text BDL / b.d.l. / n.d. / nd read as below detection, at the column's detection "
    "limit (its smallest stated limit, else its smallest detected value)",
    "useless": "detection limits above every detected value of their column read as no value "
    "(half the limit would exceed every measurement)",
    "greater": "text >d (above the upper limit) set to d",
    "grid_below": "grid values <= 0 read as below detection, at the layer's detection limit "
    "(given, else its smallest positive value)",
}
#: The rules that make an entry no value (rather than below detection).
NO_VALUE_RULES = ("missing_text", "unknown_text", "nodata", "sentinel", "code", "useless")


def substitution_text(policy: CensorPolicy) -> str:
    """The sentence stating what happens to below-detection values under ``policy``."""
    if policy == "half":
        return (
            "below-detection values set to half their detection limit (d/2, the usual "
            "substitution; --below-detection nodata drops them)"
        )
    if policy == "nodata":
        return "below-detection values dropped (read as no value: --below-detection nodata)"
    return (
        "negative numbers and zeros kept as they are (--below-detection keep); text <d and "
        "BDL set to half the limit"
    )


@dataclass(frozen=True)
class ParsedCells:
    """One column read cell by cell: numbers, and which cells were which kind of text."""

    values: np.ndarray  # float64; the d of "<d" / ">d"; NaN for empty and no-value text
    less_than: np.ndarray  # bool: "<d"
    below_text: np.ndarray  # bool: BDL / n.d. / ...
    greater: np.ndarray  # bool: ">d"
    missing_text: int = 0
    unknown_text: dict[str, int] = field(default_factory=dict)  # other words and their counts


def parse_cells(items: Sequence[object]) -> ParsedCells | None:
    """Read one column's cells (numbers or text); None when it is not a numeric column.

    A column is numeric when at least half of its non-empty cells are numbers or censoring
    codes (``<d``, ``>d``, ``BDL``, ...): a few stray words (``IS``, ``LNR``) become no value
    and are counted, so one word never drops a whole column.
    """
    n = len(items)
    values = np.full(n, np.nan)
    less = np.zeros(n, dtype=bool)
    below = np.zeros(n, dtype=bool)
    greater = np.zeros(n, dtype=bool)
    missing = 0
    unknown: dict[str, int] = {}
    for i, item in enumerate(items):
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, (int, float, np.integer, np.floating)):
            values[i] = float(item)
            continue
        text = str(item).strip()
        low = text.lower()
        if low in MISSING_TEXT:
            missing += bool(text)
            continue
        if low in BELOW_TEXT:
            below[i] = True
            continue
        flag = less if text.startswith("<") else greater if text.startswith(">") else None
        number = text[1:].strip() if flag is not None else text
        try:
            values[i] = float(number.replace(",", "."))
        except ValueError:
            unknown[text] = unknown.get(text, 0) + 1
            continue
        if flag is not None:
            flag[i] = True
    readable = int(np.isfinite(values).sum() + below.sum())
    if readable == 0 or sum(unknown.values()) > readable:
        return None
    return ParsedCells(values, less, below, greater, missing, unknown)


@dataclass
class Censored:
    """One column (or layer) after the censoring rule.

    ``values`` are float64 with NaN for no value and every below-detection entry substituted
    by the policy (NaN when no limit is known: a column of ``BDL`` words only); ``below`` marks
    the below-detection entries; ``counts[rule]`` how many
    entries each rule of :data:`RULE_TEXT` touched; ``limits`` the range of detection limits
    used; ``codes`` the no-value codes found by the ``code`` rule.
    """

    values: np.ndarray
    below: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    limits: tuple[float, float] | None = None
    codes: tuple[float, ...] = ()
    rule_limits: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def detected(self) -> int:
        """Entries with a value that is not below detection."""
        return int((np.isfinite(self.values) & ~self.below).sum())

    @property
    def censored(self) -> int:
        """Entries below detection."""
        return int(self.below.sum())


def is_repeated_digit_code(value: float) -> bool:
    """``-999``, ``-6666``, ``-9999``, ``-99999``, ...: a negative integer of >= 3 equal digits."""
    if not value < 0 or not math.isfinite(value) or value != math.floor(value):
        return False
    digits = str(int(-value))
    return len(digits) >= 3 and len(set(digits)) == 1


def censor(
    raw: np.ndarray,
    *,
    less_than: np.ndarray | None = None,
    below_text: np.ndarray | None = None,
    greater: np.ndarray | None = None,
    limits: np.ndarray | None = None,
    nodata: Sequence[float] = (),
    policy: CensorPolicy = "half",
) -> Censored:
    """Apply the censoring rule of the module docstring to one column of a sample table.

    Parameters
    ----------
    raw
        The column's numbers (float; for ``<d`` / ``>d`` cells the ``d``), NaN = no value.
    less_than, below_text, greater
        Which cells were ``<d``, a below-detection word, ``>d`` (default: none).
    limits
        The sample's detection limit from a detection-limit column (NaN where not stated).
    nodata
        Declared no-value codes.
    policy
        ``"half"``, ``"nodata"`` or ``"keep"`` (module docstring, step 6).
    """
    if policy not in CENSOR_POLICIES:
        raise ValueError(f"policy must be one of {CENSOR_POLICIES}, not {policy!r}")
    v = np.asarray(raw, dtype=float).copy()
    n = v.size
    none = np.zeros(n, dtype=bool)
    less = none if less_than is None else np.asarray(less_than, dtype=bool)
    words = none if below_text is None else np.asarray(below_text, dtype=bool)
    over = none if greater is None else np.asarray(greater, dtype=bool)
    dl = np.full(n, np.nan) if limits is None else np.asarray(limits, dtype=float)
    dl = np.where(dl > 0, dl, np.nan)
    counts: dict[str, int] = {}

    def count(rule: str, mask: np.ndarray) -> None:
        if mask.any():
            counts[rule] = counts.get(rule, 0) + int(mask.sum())

    numbers = ~less & ~words & ~over
    declared = np.zeros(n, dtype=bool)
    for code in nodata:
        declared |= np.isclose(v, code, rtol=1e-7, atol=0) & numbers
    count("nodata", declared)
    v[declared] = np.nan
    with np.errstate(invalid="ignore"):
        big = np.abs(v) >= SENTINEL
    count("sentinel", big)
    v[big] = np.nan
    coded = np.zeros(n, dtype=bool)
    found: list[float] = []
    negative_values = np.unique(v[(v < 0) & numbers])
    for value in negative_values.tolist():
        if is_repeated_digit_code(value):
            coded |= (v == value) & numbers
            found.append(float(value))
    count("code", coded)
    v[coded] = np.nan

    limit = np.full(n, np.nan)
    below = less.copy()
    limit[less] = v[less]
    count("less_than", less)
    negative = (v < 0) & numbers if policy != "keep" else none
    limit[negative] = -v[negative]
    below |= negative
    count("negative", negative)
    under = (v > 0) & numbers & (v < dl)
    below |= under
    count("dl_column", under)
    stated = below & np.isfinite(dl)
    limit[stated] = dl[stated]
    known = limit[below & np.isfinite(limit) & (limit > 0)]
    detected = (v > 0) & ~below & np.isfinite(v)
    default = (
        float(known.min())
        if known.size
        else float(v[detected].min())
        if detected.any()
        else math.nan
    )
    zero = (v == 0) & numbers if policy != "keep" else none
    for rule, mask in (("zero", zero), ("text", words)):
        limit[mask] = np.where(np.isfinite(dl[mask]), dl[mask], default)
        below |= mask
        count(rule, mask)
    if detected.any():
        useless = below & (limit > v[detected].max())
        count("useless", useless)
        below &= ~useless
        v[useless] = np.nan
    rule_limits: dict[str, tuple[float, float]] = {}
    for rule, mask in (("negative", negative), ("less_than", less), ("dl_column", under),
                       ("zero", zero), ("text", words)):  # fmt: skip
        d = limit[mask & below & np.isfinite(limit)]
        if d.size:
            rule_limits[rule] = (float(d.min()), float(d.max()))
    used = limit[below & np.isfinite(limit)]
    if policy == "nodata":
        v[below] = np.nan
    else:
        # "keep" leaves numbers alone (negatives and zeros never entered ``below``).
        v[below] = SUBSTITUTE_FRACTION * limit[below]
    count("greater", over & np.isfinite(v))
    return Censored(
        values=v,
        below=below,
        counts=counts,
        limits=(float(used.min()), float(used.max())) if used.size else None,
        codes=tuple(found),
        rule_limits=rule_limits,
    )


def censor_grid(
    band: np.ndarray, *, limit: float | None = None, policy: CensorPolicy = "half"
) -> Censored:
    """The censoring rule on one gridded layer (any shape, NaN = nodata).

    A grid carries no detection limit per cell, and an interpolated grid smears negative codes
    into a range of small negative values, so: |value| >= 1e30 and one repeated negative value
    (the raster reader's no-value rule, or a repeated-digit code) are no value; every other value
    <= 0 is below detection at ``limit`` (default: the layer's smallest positive value) and
    becomes ``limit / 2`` (policy ``"half"``), NaN (``"nodata"``), or stays (``"keep"``).
    """
    if policy not in CENSOR_POLICIES:
        raise ValueError(f"policy must be one of {CENSOR_POLICIES}, not {policy!r}")
    v = np.asarray(band, dtype=float).copy()
    counts: dict[str, int] = {}
    with np.errstate(invalid="ignore"):
        big = np.abs(v) >= SENTINEL
    if big.any():
        counts["sentinel"] = int(big.sum())
    v[big] = np.nan
    valid = np.isfinite(v)
    negative = valid & (v < 0)
    found: list[float] = []
    if negative.any():
        values, n = np.unique(v[negative], return_counts=True)
        top = int(np.argmax(n))
        repeated = (
            n[top] >= max(_GRID_CODE_CELLS, _GRID_CODE_SHARE * valid.sum())
            and n[top] > 0.5 * negative.sum()
        )
        for value, _ in zip(values.tolist(), n.tolist(), strict=True):
            if is_repeated_digit_code(value) or (repeated and value == values[top]):
                found.append(float(value))
    coded = np.isin(v, found) & valid
    if coded.any():
        counts["code"] = int(coded.sum())
    v[coded] = np.nan
    below = np.isfinite(v) & (v <= 0)
    positive = v[np.isfinite(v) & (v > 0)]
    d = float(limit) if limit is not None else float(positive.min()) if positive.size else math.nan
    if below.any() and policy != "keep":
        counts["grid_below"] = int(below.sum())
        v[below] = math.nan if policy == "nodata" or math.isnan(d) else SUBSTITUTE_FRACTION * d
    else:
        below = np.zeros(v.shape, dtype=bool)
    return Censored(
        values=v,
        below=below,
        counts=counts,
        limits=(d, d) if below.any() and math.isfinite(d) else None,
        codes=tuple(found),
    )
