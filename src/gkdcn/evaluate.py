"""Metrics and curves for a prospectivity map scored against deposit cells.

Only *valid* cells take part: a nodata cell is neither area nor a negative. Every deposit cell is a
positive and every other valid cell a negative (the authors' protocol). The seven point metrics are
taken at the threshold that maximises F1; on top of them come the ROC and precision-recall curves,
the success-rate curve (share of deposits captured against share of valid area, cells ranked by
descending probability), the prediction-area (P-A) plot and a stratified bootstrap 95 % confidence
interval on ROC AUC and success-rate AUC. With ~10 deposits a single AUC is noisy; the interval is
what tells two models apart (or not).

Tied probabilities are one step everywhere: a threshold cannot split cells of equal probability, so
the success-rate curve joins tie groups with one straight segment and ``area_for_capture`` charges
the whole group. With that convention ``success_auc = P / (2 N) + (N - P) / N * auc`` exactly
(``P`` deposit cells among ``N`` valid cells), which is how its bootstrap interval is obtained.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_curve,
)
from sklearn.metrics import auc as sk_auc

from gkdcn.errors import GkdcnError
from gkdcn.figures import (
    plot_pr,
    plot_prediction_area,
    plot_roc,
    plot_success_rate,
    save_figure,
)
from gkdcn.io.atomic import atomic_path, check_writable
from gkdcn.io.jsonsafe import json_safe

__all__ = [
    "CAPTURE_LEVELS",
    "Evaluation",
    "PACurve",
    "PAIntersection",
    "PRCurve",
    "ROCCurve",
    "SuccessCurve",
    "evaluate_map",
    "evaluate_scores",
    "plot_pr",
    "plot_prediction_area",
    "plot_roc",
    "plot_success_rate",
    "write_evaluation",
]

#: Shares of deposits for which ``area_for_capture`` reports the share of valid area needed.
CAPTURE_LEVELS: tuple[float, ...] = (0.5, 0.8, 1.0)
CI_LEVEL = 0.95
# Cap on the (bootstrap replicates x categories) block held in memory at once (~16 MB of float64).
_BOOT_BLOCK = 2_000_000


class ROCCurve(NamedTuple):
    """ROC curve as fractions (0..1); unpacks as ``fpr, tpr``."""

    fpr: np.ndarray
    tpr: np.ndarray


class PRCurve(NamedTuple):
    """Precision-recall curve as fractions (0..1); unpacks as ``recall, precision``."""

    recall: np.ndarray
    precision: np.ndarray


class SuccessCurve(NamedTuple):
    """Success-rate curve: cumulative share of valid area against share of deposits captured."""

    area: np.ndarray
    captured: np.ndarray


class PACurve(NamedTuple):
    """Prediction-area data: per threshold, share of deposits and of valid area with prob >= t."""

    threshold: np.ndarray
    prediction_rate: np.ndarray
    area_share: np.ndarray


class PAIntersection(NamedTuple):
    """Where prediction rate = 1 - occupied area (all NaN if the curves do not cross in range)."""

    threshold: float
    prediction_rate: float
    area_share: float


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything measured on one map (or one pooled set of scored cells).

    Shares and rates are fractions in 0..1 (figures show them in %). ``threshold`` is the
    F1-optimal probability: cells with ``prob >= threshold`` are predicted deposits.
    """

    accuracy: float
    auc: float
    kappa: float
    mcc: float
    precision: float
    recall: float
    f1: float
    threshold: float
    n_positive: int
    n_negative: int
    roc: ROCCurve
    roc_thresholds: np.ndarray
    pr: PRCurve
    pr_thresholds: np.ndarray
    pr_auc: float
    success: SuccessCurve
    success_thresholds: np.ndarray
    success_auc: float
    area_for_capture: dict[float, float]
    pa: PACurve
    pa_intersection: PAIntersection
    auc_ci: tuple[float, float]
    success_auc_ci: tuple[float, float]
    n_boot: int
    seed: int
    cell_area: float = 1.0
    # Set by evaluate_map: deposits that could not be scored (on nodata) or shared a cell.
    n_deposits_off_valid: int = 0
    n_deposits_duplicate: int = 0
    boot_auc: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def n_cells(self) -> int:
        """Number of scored (valid) cells."""
        return self.n_positive + self.n_negative

    @property
    def prevalence(self) -> float:
        """Share of scored cells that are deposits: the no-skill precision."""
        return self.n_positive / self.n_cells

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable scalars (NaN becomes ``None``); curves are in :meth:`curve_tables`."""
        metrics = {
            name: json_safe(float(getattr(self, name)))
            for name in ("accuracy", "auc", "kappa", "mcc", "precision", "recall", "f1")
        }
        return {
            **metrics,
            "threshold": json_safe(float(self.threshold)),
            "n_positive": int(self.n_positive),
            "n_negative": int(self.n_negative),
            "pr_auc": json_safe(float(self.pr_auc)),
            "success_auc": json_safe(float(self.success_auc)),
            "auc_ci": [json_safe(float(v)) for v in self.auc_ci],
            "success_auc_ci": [json_safe(float(v)) for v in self.success_auc_ci],
            "ci_level": CI_LEVEL,
            "n_boot": int(self.n_boot),
            "seed": int(self.seed),
            "area_for_capture": {
                str(k): json_safe(float(v)) for k, v in self.area_for_capture.items()
            },
            "pa_intersection": {
                k: json_safe(float(v)) for k, v in self.pa_intersection._asdict().items()
            },
            "cell_area": json_safe(float(self.cell_area)),
            "valid_area": json_safe(float(self.n_cells * self.cell_area)),
            "n_deposits_off_valid": int(self.n_deposits_off_valid),
            "n_deposits_duplicate": int(self.n_deposits_duplicate),
        }

    def curve_tables(self) -> dict[str, pd.DataFrame]:
        """The four curves as tables, keyed by the CSV stem written by :func:`write_evaluation`."""
        # precision_recall_curve has no threshold for its final (recall 0, precision 1) point.
        pr_thr = np.append(self.pr_thresholds, np.nan)
        return {
            "roc": pd.DataFrame(
                {"threshold": self.roc_thresholds, "fpr": self.roc.fpr, "tpr": self.roc.tpr}
            ),
            "pr": pd.DataFrame(
                {"threshold": pr_thr, "recall": self.pr.recall, "precision": self.pr.precision}
            ),
            "success_rate": pd.DataFrame(
                {
                    "threshold": self.success_thresholds,
                    "area_share": self.success.area,
                    "deposit_share": self.success.captured,
                }
            ),
            "prediction_area": pd.DataFrame(self.pa._asdict()),
        }


# --------------------------------------------------------------------------- computation


# Arguments no user input can produce (shapes, dtypes, indices built by gkdcn itself) raise
# ValueError: a programming error, not a user's. Problems of the map or the deposits the user
# gave raise GkdcnError.
def evaluate_map(
    prob: np.ndarray,
    valid: np.ndarray,
    deposit_rows: np.ndarray,
    deposit_cols: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    cell_area: float = 1.0,
    n_pa_thresholds: int = 201,
) -> Evaluation:
    """Evaluate a ``(H, W)`` probability map against deposit cells, on ``valid`` cells only.

    A deposit on a nodata cell cannot be scored and is dropped (counted in
    ``n_deposits_off_valid``); several deposits in one cell make one positive cell (counted in
    ``n_deposits_duplicate``). ``cell_area`` (map units squared) only scales ``valid_area``.
    """
    prob = np.asarray(prob)
    valid = np.asarray(valid)
    if prob.ndim != 2:
        raise ValueError(f"probability map must be 2-D (rows, cols), got shape {prob.shape}")
    if valid.shape != prob.shape:
        raise ValueError(
            f"valid mask shape {valid.shape} does not match probability map shape {prob.shape}"
        )
    if not np.issubdtype(prob.dtype, np.number) or np.iscomplexobj(prob):
        raise ValueError(f"probability map must be real numbers, got dtype {prob.dtype}")
    if not (cell_area > 0 and math.isfinite(cell_area)):
        raise ValueError(f"cell_area must be a positive number, got {cell_area}")
    valid = valid.astype(bool)
    rows, cols = _deposit_cells(deposit_rows, deposit_cols, prob.shape)

    bad = valid & ~np.isfinite(prob)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise GkdcnError(
            f"probability map has {int(bad.sum())} NaN/inf value(s) on valid cells "
            f"(first at row {r}, col {c}); mark them invalid or fix the map"
        )
    on_valid = valid[rows, cols]
    if not on_valid.any():
        raise GkdcnError(f"none of the {rows.size} deposit(s) lies on a valid cell of the map")
    labels = np.zeros(prob.shape, dtype=bool)
    labels[rows[on_valid], cols[on_valid]] = True
    n_unique = int(labels.sum())

    ev = evaluate_scores(
        prob[valid], labels[valid], n_boot=n_boot, seed=seed, n_pa_thresholds=n_pa_thresholds
    )
    return replace(
        ev,
        cell_area=float(cell_area),
        n_deposits_off_valid=int((~on_valid).sum()),
        n_deposits_duplicate=int(on_valid.sum()) - n_unique,
    )


def _deposit_cells(
    deposit_rows: np.ndarray, deposit_cols: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(deposit_rows).ravel()
    cols = np.asarray(deposit_cols).ravel()
    if rows.shape != cols.shape:
        raise ValueError(f"got {rows.size} deposit rows but {cols.size} deposit cols")
    if rows.size == 0:
        raise GkdcnError("no deposits given")
    for name, arr in (("rows", rows), ("cols", cols)):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise ValueError(f"deposit {name} must be finite numbers")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"deposit {name} must be whole cell indices")
    rows = rows.astype(np.int64)
    cols = cols.astype(np.int64)
    outside = (rows < 0) | (rows >= shape[0]) | (cols < 0) | (cols >= shape[1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise GkdcnError(
            f"{int(outside.sum())} deposit(s) lie outside the {shape[0]}x{shape[1]} grid "
            f"(first at row {rows[i]}, col {cols[i]})"
        )
    return rows, cols


def evaluate_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    n_pa_thresholds: int = 201,
) -> Evaluation:
    """Evaluate a flat set of scored cells (``labels`` 1 = deposit) — e.g. pooled hold-out scores.

    ``n_boot`` stratified bootstrap replicates (deposits and background resampled separately,
    with replacement) give the percentile 95 % intervals; ``n_boot=0`` skips them (NaN).
    ``n_pa_thresholds`` sets the resolution of the P-A plot.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1-D, got shapes {scores.shape} and {labels.shape}"
        )
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.issubdtype(scores.dtype, np.number) or np.iscomplexobj(scores):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise GkdcnError(f"{int((~np.isfinite(scores)).sum())} score(s) are NaN or infinite")
    if labels.dtype != bool:
        if not np.issubdtype(labels.dtype, np.number) or not np.all(np.isin(labels, (0, 1))):
            raise ValueError("labels must be 0/1 or boolean")
        labels = labels.astype(bool)
    if n_boot < 0:
        raise GkdcnError(f"n_boot must be >= 0, got {n_boot}")
    if n_pa_thresholds < 2:
        raise GkdcnError(f"n_pa_thresholds must be >= 2, got {n_pa_thresholds}")
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0:
        raise GkdcnError("no deposit cells among the scored cells")
    if n_neg == 0:
        raise GkdcnError("every scored cell is a deposit: there is no background to compare with")
    scores = scores.astype(np.float64)
    y = labels.astype(np.int8)

    # One sort serves everything. sklearn's ranking functions re-sort with a stable (tim)sort,
    # which is linear on already-sorted input, and ignore the order of tied scores; so handing
    # them ascending data saves seconds per call on multi-million-cell maps.
    order = np.argsort(scores)
    asc = scores[order]
    y_asc = y[order]
    fpr, tpr, roc_thr = roc_curve(y_asc, asc)
    auc = float(sk_auc(fpr, tpr))
    precision, recall, pr_thr = precision_recall_curve(y_asc, asc)
    pr_auc = float(-np.sum(np.diff(recall) * precision[:-1]))  # sklearn's average precision
    threshold = _f1_threshold(precision, recall, pr_thr)
    # dict[str, Any]: the metrics fill float fields of Evaluation by name.
    point: dict[str, Any] = dict(_point_metrics(y_asc, asc >= threshold))
    pr_recall, pr_precision, pr_thr_kept = _thin_pr(recall, precision, pr_thr)

    pos_asc = y_asc.astype(bool)
    success, success_thr, capture = _success_curve(asc[::-1], pos_asc[::-1], n_pos)
    success_auc = _trapezoid(success.area, success.captured)
    pos_sorted = asc[pos_asc]
    neg_sorted = asc[~pos_asc]
    pa = _pa_curve(asc, pos_sorted, n_pa_thresholds)

    rng = np.random.default_rng(seed)
    if n_pos < 2 and n_boot > 0:
        # Resampling one deposit only redraws the background: the interval would look tight and
        # mean nothing about how well the map finds deposits.
        warnings.warn(
            "only one deposit: no bootstrap confidence interval (resampling a single deposit "
            "says nothing about the map's uncertainty)",
            UserWarning,
            stacklevel=2,
        )
        n_boot = 0
    boot = _bootstrap_auc(pos_sorted, neg_sorted, n_boot, rng)
    auc_ci = _percentile_ci(boot)
    n = n_pos + n_neg
    # Stratified resampling keeps P and N fixed, so the identity in the module docstring maps each
    # replicate's AUC to its success-rate AUC exactly (and monotonically, so percentiles map too).
    success_ci = tuple(n_pos / (2 * n) + n_neg / n * v for v in auc_ci)

    return Evaluation(
        **point,
        auc=auc,
        threshold=float(threshold),
        n_positive=n_pos,
        n_negative=n_neg,
        roc=ROCCurve(fpr, tpr),
        roc_thresholds=roc_thr,
        pr=PRCurve(pr_recall, pr_precision),
        pr_thresholds=pr_thr_kept,
        pr_auc=pr_auc,
        success=success,
        success_thresholds=success_thr,
        success_auc=success_auc,
        area_for_capture=capture,
        pa=pa,
        pa_intersection=_pa_intersection(pa),
        auc_ci=auc_ci,
        success_auc_ci=(float(success_ci[0]), float(success_ci[1])),
        n_boot=int(n_boot),
        seed=int(seed),
        boot_auc=boot,
    )


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _point_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The six thresholded metrics, via sklearn on the four (truth, prediction) combinations
    weighted by their counts: identical to scoring every cell, without millions of rows."""
    pred = predicted.astype(np.int8)
    counts = np.bincount(2 * y.astype(np.int64) + pred, minlength=4)
    y4 = np.array([0, 0, 1, 1])
    p4 = np.array([0, 1, 0, 1])
    w = counts.astype(np.float64)
    with warnings.catch_warnings():
        # Predicting one class everywhere leaves MCC undefined; sklearn's 0 is the right value.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        point = {
            "accuracy": float(accuracy_score(y4, p4, sample_weight=w)),
            "kappa": float(cohen_kappa_score(y4, p4, sample_weight=w)),
            "mcc": float(matthews_corrcoef(y4, p4, sample_weight=w)),
            "precision": float(precision_score(y4, p4, sample_weight=w, zero_division=0)),
            "recall": float(recall_score(y4, p4, sample_weight=w, zero_division=0)),
            "f1": float(f1_score(y4, p4, sample_weight=w, zero_division=0)),
        }
    return {k: 0.0 if math.isnan(v) else v for k, v in point.items()}


def _f1_threshold(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> float:
    """The threshold of highest F1; among ties the highest threshold (the smallest target area)."""
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    # thresholds ascend, so the last index attaining the maximum is the highest threshold.
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return float(thresholds[best])


def _thin_pr(
    recall: np.ndarray, precision: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep only the ends of each constant-recall run: a map has millions of thresholds, but
    between two recall steps precision merely falls, drawn as a vertical segment either way."""
    n = len(recall)
    keep = np.zeros(n, dtype=bool)
    keep[[0, -1]] = True
    change = recall[1:] != recall[:-1]
    keep[1:] |= change
    keep[:-1] |= change
    thr_full = np.append(thresholds, np.nan)
    return recall[keep], precision[keep], thr_full[keep][:-1]


def _success_curve(
    desc: np.ndarray, labels_desc: np.ndarray, n_pos: int
) -> tuple[SuccessCurve, np.ndarray, dict[float, float]]:
    """Success-rate curve over tie groups of the descending scores, and area for each capture level.

    ``area_for_capture[q]`` is the valid-area share of ``prob >= t`` for the highest threshold
    ``t`` that captures at least ``q`` of the deposits.
    """
    n = desc.size
    ends = np.append(np.flatnonzero(desc[1:] != desc[:-1]), n - 1)
    cum_pos = np.cumsum(labels_desc, dtype=np.int64)[ends]
    area = np.concatenate(([0.0], (ends + 1) / n))
    captured = np.concatenate(([0.0], cum_pos / n_pos))
    thr = np.concatenate(([np.inf], desc[ends]))

    capture: dict[float, float] = {}
    for q in CAPTURE_LEVELS:
        need = max(1, math.ceil(q * n_pos - 1e-9))
        i = int(np.searchsorted(cum_pos, need, side="left"))
        capture[q] = float((ends[i] + 1) / n)

    # Drop interior points of flat runs (no deposits): the curve is exactly the same.
    m = captured.size
    keep = np.zeros(m, dtype=bool)
    keep[[0, -1]] = True
    change = captured[1:] != captured[:-1]
    keep[1:] |= change
    keep[:-1] |= change
    return SuccessCurve(area[keep], captured[keep]), thr[keep], capture


def _pa_curve(asc: np.ndarray, pos_sorted: np.ndarray, n_thresholds: int) -> PACurve:
    """Prediction rate and occupied area on thresholds spaced both evenly in probability and at
    score quantiles, so that the plot resolves both the tail and the crowded low end of the map."""
    lo, hi = float(asc[0]), float(asc[-1])
    grid = np.linspace(lo, hi, n_thresholds)
    quant = np.quantile(asc, np.linspace(0.0, 1.0, n_thresholds), method="inverted_cdf")
    thr = np.unique(np.concatenate((grid, quant)))
    area = (asc.size - np.searchsorted(asc, thr, side="left")) / asc.size
    rate = (pos_sorted.size - np.searchsorted(pos_sorted, thr, side="left")) / pos_sorted.size
    return PACurve(thr, rate, area)


def _pa_intersection(pa: PACurve) -> PAIntersection:
    """Linear interpolation of the first crossing of prediction rate and 1 - occupied area."""
    d = pa.prediction_rate + pa.area_share - 1.0  # non-increasing in the threshold
    below = np.flatnonzero(d < 0)
    if below.size == 0 or below[0] == 0:
        return PAIntersection(math.nan, math.nan, math.nan)
    j = int(below[0])
    i = j - 1
    frac = d[i] / (d[i] - d[j])

    def lerp(a: np.ndarray) -> float:
        return float(a[i] + frac * (a[j] - a[i]))

    return PAIntersection(lerp(pa.threshold), lerp(pa.prediction_rate), lerp(pa.area_share))


def _bootstrap_auc(
    pos_sorted: np.ndarray, neg_sorted: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """ROC AUC of ``n_boot`` stratified bootstrap replicates, without touching every cell.

    AUC = mean over deposits of (#background below + 0.5 #background tied). Each deposit's count
    depends only on how many resampled background cells fall in fixed index ranges of the sorted
    background; resampling N cells uniformly puts multinomial(N, width / N) counts in those
    ranges. So one replicate costs O(deposits), not O(cells), and is exactly the same in law as
    resampling the cells themselves.
    """
    if n_boot == 0:
        return np.empty(0)
    n_pos, n_neg = pos_sorted.size, neg_sorted.size
    lo = np.searchsorted(neg_sorted, pos_sorted, side="left")
    hi = np.searchsorted(neg_sorted, pos_sorted, side="right")
    edges = np.unique(np.concatenate(([0, n_neg], lo, hi)))
    pvals = np.diff(edges) / n_neg
    i_lo = np.searchsorted(edges, lo)
    i_hi = np.searchsorted(edges, hi)
    p_pos = np.full(n_pos, 1.0 / n_pos)

    out = np.empty(n_boot)
    block = max(1, _BOOT_BLOCK // max(n_pos, pvals.size))
    for start in range(0, n_boot, block):
        m = min(block, n_boot - start)
        counts = rng.multinomial(n_neg, pvals, size=m)
        below = np.zeros((m, edges.size), dtype=np.int64)
        np.cumsum(counts, axis=1, out=below[:, 1:])
        less = below[:, i_lo]
        tied = below[:, i_hi] - less
        weights = rng.multinomial(n_pos, p_pos, size=m)
        out[start : start + m] = (weights * (less + 0.5 * tied)).sum(axis=1) / (n_pos * n_neg)
    return out


def _percentile_ci(boot: np.ndarray) -> tuple[float, float]:
    if boot.size == 0:
        return (math.nan, math.nan)
    tail = 100 * (1 - CI_LEVEL) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return (float(lo), float(hi))


# --------------------------------------------------------------------------- figures


# --------------------------------------------------------------------------- output

_CSV_STEMS = ("roc", "pr", "success_rate", "prediction_area")
_PNG_STEMS = ("roc", "pr", "success_rate", "prediction_area")


def _evaluation_paths(out_dir: Path) -> tuple[Path, list[Path], list[Path]]:
    json_path = out_dir / "metrics.json"
    csv_paths = [out_dir / f"{s}.csv" for s in _CSV_STEMS]
    png_paths = [out_dir / f"{s}.png" for s in _PNG_STEMS]
    return json_path, csv_paths, png_paths


def check_evaluation_outputs(
    out_dir: str | Path, overwrite: bool = False, *, inputs: Sequence[str | Path] = ()
) -> None:
    """Check every file :func:`write_evaluation` writes, before any work (see ``check_writable``)."""
    json_path, csv_paths, png_paths = _evaluation_paths(Path(out_dir))
    for target in [json_path, *csv_paths, *png_paths]:
        check_writable(target, overwrite, inputs=inputs)


def write_evaluation(
    ev: Evaluation,
    out_dir: Path,
    overwrite: bool = False,
    title: str = "",
    *,
    inputs: Sequence[str | Path] = (),
) -> list[Path]:
    """Write ``metrics.json``, the four curve CSVs and four PNG figures into ``out_dir``.

    Every target is checked before anything is written (never one of ``inputs``), and each file
    is written atomically. ``title`` names the map in figure titles. Returns the written paths.
    """
    out_dir = Path(out_dir)
    json_path, csv_paths, png_paths = _evaluation_paths(out_dir)
    targets = [json_path, *csv_paths, *png_paths]
    check_evaluation_outputs(out_dir, overwrite, inputs=inputs)

    with atomic_path(json_path, overwrite) as tmp:
        tmp.write_text(json.dumps(ev.to_dict(), indent=2, allow_nan=False) + "\n", "utf-8")
    tables = ev.curve_tables()
    for stem, path in zip(_CSV_STEMS, csv_paths, strict=True):
        with atomic_path(path, overwrite) as tmp:
            tables[stem].to_csv(tmp, index=False)

    name = title or "map"
    figures = {
        "roc": plot_roc({name: ev}),
        "pr": plot_pr({name: ev}),
        "success_rate": plot_success_rate({name: ev}),
        "prediction_area": plot_prediction_area(ev, title),
    }
    if title:
        for stem in ("roc", "pr", "success_rate"):
            ax = figures[stem].axes[0]
            ax.set_title(f"{ax.get_title()}: {title}")
    for stem, path in zip(_PNG_STEMS, png_paths, strict=True):
        save_figure(figures[stem], path, overwrite)
    return targets
