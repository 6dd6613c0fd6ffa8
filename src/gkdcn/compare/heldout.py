"""Held-out scoring: rank each held-out deposit among background cells no model trained on."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gkdcn.compare.fitting import FittedModel
from gkdcn.compare.layout import RunLayout
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.study import Study

HELDOUT_METRICS = ("auc", "area_50", "area_80", "area_100", "capture_top10")


def background_cells(
    study: Study, samples: SampleSet, sample: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Valid cells that held-out deposits are ranked against (seeded sample or all).

    Every cell that is some site's window centre is left out: a training deposit's shifted
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
    held = [s for s in np.asarray(split.held_out, dtype=np.int64) if study.sites.labels[s] == 1]
    bg_rows, bg_cols = background_cells(study, samples, background_sample, seed)
    rows = np.concatenate([study.sites.rows[held], bg_rows])
    cols = np.concatenate([study.sites.cols[held], bg_cols])
    prob = model.score_cells(rows, cols)
    background = prob[len(held) :]
    out = []
    for site, p in zip(held, prob[: len(held)], strict=True):
        share = (np.sum(background > p) + 0.5 * np.sum(background == p)) / len(background)
        out.append(
            {
                "site_id": str(study.sites.ids[site]),
                "probability": float(p),
                "area_share": float(share),
                "n_background": len(background),
            }
        )
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
