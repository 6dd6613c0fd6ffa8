"""Held-out scoring: rank each held-out deposit among background cells no model trained on."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gkdcn.compare.fitting import FittedModel
from gkdcn.compare.layout import RunLayout
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.study import Study

HELDOUT_METRICS = ("auc", "area_50", "area_80", "area_100", "capture_top10", "capture_top15")
#: Calibration columns of held-out runs (networks with calibration records only).
CALIBRATION_METRICS = ("area_above_0.5", "area_above_0.9")


def background_cells(
    study: Study, samples: SampleSet, sample: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Valid cells that held-out deposits are ranked against (seeded sample or all).

    A comparison draws them once, with the plan's first seed
    (:attr:`~gkdcn.compare.plan.Plan.background_seed`), for every seed and model: seeds then
    differ only by training randomness, and the seeds' scores of the same cells can be averaged
    into a seed ensemble (:func:`ensemble_shares`). Every cell that is some site's window centre is left out: a training deposit's shifted
    centres would rank high and a training non-deposit's low, because the model was fitted to
    them, not because it generalises. What remains is area no model of the comparison trained on.
    """
    centre = np.zeros(study.valid.shape, dtype=bool)
    centre[samples.rows, samples.cols] = True
    deps = study.sites.deposits()
    centre[deps.rows, deps.cols] = True
    rows, cols = np.nonzero(study.valid & ~centre)
    if sample is not None and len(rows) > sample:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
        rows, cols = rows[pick], cols[pick]
    return rows, cols


def heldout_ranks(
    study: Study,
    samples: SampleSet,
    model: FittedModel,
    split: Split,
    background_sample: int | None,
    seed: int,
) -> list[dict[str, Any]]:
    """Share of background area ranked at or above each held-out deposit (ties count half).

    Only the held-out deposits and the background cells are scored (windows cut exactly as
    for the full map), so a fold costs a few thousand windows instead of a whole map.
    """
    return heldout_scores(study, samples, model, split, background_sample, seed)[0]


def cells_key(rows: np.ndarray, cols: np.ndarray) -> str:
    """A short content hash of a list of cells: equal keys, same cells in the same order."""
    blob = np.stack([np.asarray(rows, np.int64), np.asarray(cols, np.int64)]).tobytes()
    return hashlib.sha256(blob).hexdigest()[:16]


def area_share(probability: float, background: np.ndarray) -> float:
    """Share of ``background`` scored above ``probability`` (ties count half).

    The held-out rank of one deposit, 0 at the top of the map.
    """
    above = np.sum(background > probability) + 0.5 * np.sum(background == probability)
    return float(above / len(background))


def stored_probability(probability: float) -> float:
    """A probability as ``result.json`` stores background scores: 7 significant digits."""
    return float(f"{probability:.7g}")


def heldout_scores(
    study: Study,
    samples: SampleSet,
    model: FittedModel,
    split: Split,
    background_sample: int | None,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Held-out ranks, calibration and background scores of one fold, from one scoring.

    :func:`heldout_ranks`, the fold's calibration (:func:`fold_calibration`) and the background's
    scores, from one scoring of the held-out deposits and the background cells.

    The third item (``result.json``'s ``heldout_background``) holds ``cells`` (a
    :func:`cells_key` of the background cells) and ``probability`` (their scores, rounded to
    float32), so seed ensembles are computed from the finished jobs without retraining.
    """
    held = [s for s in np.asarray(split.held_out, dtype=np.int64) if study.sites.labels[s] == 1]
    bg_rows, bg_cols = background_cells(study, samples, background_sample, seed)
    rows = np.concatenate([study.sites.rows[held], bg_rows])
    cols = np.concatenate([study.sites.cols[held], bg_cols])
    prob = model.score_cells(rows, cols)
    background = prob[len(held) :]
    out = []
    for site, p in zip(held, prob[: len(held)], strict=True):
        out.append(
            {
                "site_id": str(study.sites.ids[site]),
                "probability": float(p),
                "area_share": area_share(p, background),
                "n_background": len(background),
            }
        )
    calibration = fold_calibration(prob[: len(held)], background, int(study.valid.sum()))
    scores = {
        "cells": cells_key(bg_rows, bg_cols),
        # 7 significant digits (float32's precision) rank as well, at half the text of float64.
        "probability": [stored_probability(p) for p in background],
    }
    return out, calibration, scores


#: Probability bins of the held-out reliability table (ten of width 0.1).
CALIBRATION_EDGES = np.linspace(0.0, 1.0, 11)


def fold_calibration(
    deposit_prob: np.ndarray, background_prob: np.ndarray, n_valid: int
) -> dict[str, Any]:
    """What one fold says about calibration.

    The share of background area above p = 0.5 and 0.9, and per probability bin the background
    count, the sum of its probabilities and the number of held-out deposits (pooled over folds by
    :func:`reliability_table`).
    """
    bg = np.asarray(background_prob, dtype=float)
    dep = np.asarray(deposit_prob, dtype=float)
    inner = CALIBRATION_EDGES[1:-1]
    n_bins = len(CALIBRATION_EDGES) - 1
    bg_bin = np.digitize(bg, inner)
    return {
        "area_above_0.5": float(np.mean(bg > 0.5)) if bg.size else 0.0,
        "area_above_0.9": float(np.mean(bg > 0.9)) if bg.size else 0.0,
        "n_background": int(bg.size),
        "n_valid": int(n_valid),
        "background_counts": np.bincount(bg_bin, minlength=n_bins).tolist(),
        "background_sums": np.bincount(bg_bin, weights=bg, minlength=n_bins).tolist(),
        "deposit_counts": np.bincount(np.digitize(dep, inner), minlength=n_bins).tolist(),
    }


def reliability_table(folds: list[dict[str, Any]]) -> pd.DataFrame:
    """Pooled reliability of held-out folds.

    Per probability bin, the share of valid area, the mean predicted probability, the held-out
    deposits that fell in it, and the observed deposit rate per cell (those deposits over the cells
    the bin covers, summed over folds; each fold's background sample stands for its ``n_valid``
    valid cells). Known deposits are only part of what a map looks for, so the observed rate is a
    lower bound on the true one.
    """
    n_bins = len(CALIBRATION_EDGES) - 1
    area, counts, sums, deposits = (np.zeros(n_bins) for _ in range(4))
    cells = np.zeros(n_bins)
    for f in folds:
        c = np.asarray(f["background_counts"], dtype=float)
        share = c / max(f["n_background"], 1)
        area += share
        cells += share * f["n_valid"]
        counts += c
        sums += np.asarray(f["background_sums"], dtype=float)
        deposits += np.asarray(f["deposit_counts"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        rate = np.where(cells > 0, deposits / np.maximum(cells, 1e-12), np.nan)
    return pd.DataFrame(
        {
            "bin_lo": CALIBRATION_EDGES[:-1],
            "bin_hi": CALIBRATION_EDGES[1:],
            "area_share": area / max(len(folds), 1),
            "mean_probability": mean_p,
            "heldout_deposits": deposits.astype(int),
            "observed_deposit_rate": rate,
        }
    )


def heldout_calibration(
    run: RunLayout | Path, protocol: str, model: str, seeds: Iterable[int]
) -> list[dict[str, Any]]:
    """The per-fold calibration records of ``model`` over ``seeds``.

    Folds whose result holds no calibration record are skipped.
    """
    layout = run if isinstance(run, RunLayout) else RunLayout(Path(run))
    out: list[dict[str, Any]] = []
    for seed in seeds:
        for fold_result in layout.fold_results(protocol, model, seed):
            record = json.loads(fold_result.read_text()).get("heldout_calibration")
            if record is not None:
                out.append(record)
    return out


def heldout_metrics(area_shares: np.ndarray) -> dict[str, float]:
    """Metrics of pooled held-out ranks: AUC = 1 - mean share; area needed for 50/80/100 %."""
    shares = np.sort(np.asarray(area_shares, dtype=float))
    n = len(shares)
    # Ranked among background cells, the held-out AUC is also the area under the success-rate
    # curve (deposits captured vs share of area), so one number serves both.
    return {
        "auc": float(1.0 - shares.mean()),
        "area_50": float(shares[int(np.ceil(0.5 * n)) - 1]),
        "area_80": float(shares[int(np.ceil(0.8 * n)) - 1]),
        "area_100": float(shares[-1]),
        "capture_top10": float(np.mean(shares <= 0.10)),
        "capture_top15": float(np.mean(shares <= 0.15)),
    }


def heldout_shares(
    run: RunLayout | Path, protocol: str, model: str, seeds: Iterable[int]
) -> np.ndarray:
    """Area shares of every held-out deposit of ``model`` over ``seeds``, from the fold results."""
    layout = run if isinstance(run, RunLayout) else RunLayout(Path(run))
    shares: list[float] = []
    for seed in seeds:
        for fold_result in layout.fold_results(protocol, model, seed):
            shares += [h["area_share"] for h in json.loads(fold_result.read_text())["heldout"]]
    return np.array(shares)


def ensemble_shares(
    run: RunLayout | Path, protocol: str, model: str, seeds: Iterable[int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Held-out area shares of the seed ensemble of ``model`` and of its single seeds.

    Per held-out deposit (same order): ``(ensemble, single)``, where ``single`` is the seeds' mean
    share.

    The ensemble's score of a cell is the mean of the seeds' probabilities; for each deposit,
    the seeds' models are those of the fold that held it out (the same fold for every seed under
    leave-one-deposit-out; seed-dependent spatial blocks work too, since every fold ranks
    against the same background cells), and the deposit is ranked among the background exactly
    as a single model's (ties count half). None when a fold's result holds no background scores
    or the seeds ranked against different cells.
    """
    layout = run if isinstance(run, RunLayout) else RunLayout(Path(run))
    seeds = list(seeds)
    per_seed: list[dict[str, tuple[float, float, np.ndarray, str]]] = []
    for seed in seeds:
        found: dict[str, tuple[float, float, np.ndarray, str]] = {}
        for fold_result in layout.fold_results(protocol, model, seed):
            record = json.loads(fold_result.read_text())
            background = record.get("heldout_background")
            if background is None:
                return None
            bg = np.asarray(background["probability"], dtype=np.float64)
            for h in record["heldout"]:
                found[h["site_id"]] = (h["probability"], h["area_share"], bg, background["cells"])
        per_seed.append(found)
    if not per_seed or not per_seed[0]:
        return None
    sites = sorted(per_seed[0])
    if any(sorted(found) != sites for found in per_seed):
        return None
    ensemble, single = [], []
    for site in sites:
        entries = [found[site] for found in per_seed]
        if len({e[3] for e in entries}) != 1:
            return None
        # Rounded as the stored background is, so a tie stays a tie.
        p = float(np.mean([stored_probability(e[0]) for e in entries]))
        ensemble.append(area_share(p, np.mean([e[2] for e in entries], axis=0)))
        single.append(float(np.mean([e[1] for e in entries])))
    return np.array(ensemble, dtype=float), np.array(single, dtype=float)
