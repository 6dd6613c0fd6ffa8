"""Selection inside the fold: a held-out fold's networks choose their epochs on inner folds.

In a comparison's held-out folds the networks have no validation set, so without selection they
train the configured epochs. With ``[train] select_epochs`` they choose them on the fold's own
training deposits, never on the fold's held-out ones:

- **inner folds**: the fold's training windows, minus any centred within
  ``split.exclusion_radius`` of the fold's held-out deposits, are cut by deposit groups
  (:func:`gkdcn.data.samples.grouped_deposit_folds`: k-means groups of the deposits, seeded,
  each group held out with the same exclusion radius around it) into ``select_folds`` inner
  folds (fewer when the fold has fewer training deposits; none below 2);
- **the inner metric is the outer protocol's own**: the held-out AUC of each inner fold's
  deposits ranked among background cells (1 - mean share of background scored above a deposit,
  ties half, pooled over the inner folds as :func:`gkdcn.compare.heldout.heldout_metrics`
  pools folds). The background cells (:data:`SELECTION_BACKGROUND`, one seeded draw per fold)
  come from the fold's own background pool (:func:`gkdcn.training.study.study_background`: valid, away
  from every deposit, outside the exclusion radius of the held-out ones, no window centre and
  none of the cells the comparison ranks held-out deposits against); the inner networks never
  draw them as training background;
- **the rule**: the chosen epoch is the earliest evaluated epoch whose pooled inner AUC is
  within ``select_tolerance`` of the best (:func:`gkdcn.training.loop.choose_epoch`).

``"inner"`` trains one network per inner fold for all epochs, scoring every ``select_every``
epochs, then trains the fold's network on all the fold's training windows for the chosen number
of epochs: ``select_folds`` extra trainings per network and fold, each on part of the fold's
data. ``"inner-restore"`` trains only on the first inner fold and keeps that network, restored to
its chosen epoch (stopping ``patience`` epochs after the best): no extra training, but that inner
fold's deposits are withheld from the fold's model. Every draw is seeded by the job's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.progress import Progress

from gkdcn.config import TrainConfig
from gkdcn.data.background import near_mask
from gkdcn.data.samples import SampleSet, Split, grouped_deposit_folds
from gkdcn.data.study import Study
from gkdcn.pretrain import PretrainResult
from gkdcn.training.loop import SELECTION_SCORE, EpochMonitor, TrainResult, choose_epoch
from gkdcn.training.study import study_background, train_study

#: Background cells each fold's inner deposits are ranked among (fewer if the pool is smaller).
SELECTION_BACKGROUND = 2000


@dataclass
class SelectedTraining:
    """A fold's network trained with selection inside the fold, and what chose its epochs."""

    trained: TrainResult
    record: dict[str, Any]  # result.json's "selection"
    n_val: int  # inner validation windows the epochs were chosen on


def ranking_auc(deposit_scores: np.ndarray, background_scores: np.ndarray) -> float:
    """Held-out AUC of deposits ranked among background cells.

    1 - the mean share of the background scored above a deposit, ties counted half (as
    ``compare.heldout`` ranks).
    """
    bg = np.sort(np.asarray(background_scores, dtype=float))
    dep = np.asarray(deposit_scores, dtype=float)
    if bg.size == 0 or dep.size == 0:
        return float("nan")
    above = bg.size - np.searchsorted(bg, dep, side="right")
    ties = np.searchsorted(bg, dep, side="right") - np.searchsorted(bg, dep, side="left")
    return float(1.0 - np.mean((above + 0.5 * ties) / bg.size))


def _outer_deposits(study: Study, split: Split) -> np.ndarray:
    held = np.asarray(split.held_out, dtype=np.int64)
    return held[np.asarray(study.sites.labels)[held] == 1]


def inner_folds(
    study: Study, samples: SampleSet, split: Split, folds: int, seed: int
) -> list[Split]:
    """The inner folds of held-out fold ``split`` (module docstring).

    Sample indices into ``samples``, all drawn from ``split.train``; empty when fewer than 2
    training deposits remain.
    """
    radius = study.config.split.exclusion_radius
    held = _outer_deposits(study, split)
    sites = study.sites
    near = near_mask(study.grid, np.asarray(sites.rows)[held], np.asarray(sites.cols)[held], radius)
    train = np.asarray(split.train, dtype=np.int64)
    if held.size:
        train = train[~near[samples.rows[train], samples.cols[train]]]
    inner = samples.subset(train)
    labels = np.asarray(sites.labels)
    n_dep = int(np.isin(np.flatnonzero(labels == 1), inner.site).sum())
    groups = min(folds, n_dep)
    if groups < 2:
        return []
    out = []
    for k, fold in enumerate(
        grouped_deposit_folds(inner, sites, study.grid, radius, groups=groups, seed=seed)
    ):
        out.append(
            Split(
                name=f"{split.name}-inner-{k + 1}of{groups}",
                train=train[fold.train],
                val=train[fold.val],
                description=f"inner fold of {split.name}: {fold.description}",
                held_out=fold.held_out,
            )
        )
    return out


def selection_background(
    study: Study,
    samples: SampleSet,
    split: Split,
    cfg: TrainConfig,
    seed: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The background cells of ``split``'s inner ranking.

    A seeded draw of up to :data:`SELECTION_BACKGROUND` cells from the fold's background pool
    (module docstring).

    Where ``exclude`` (the cells the comparison ranks held-out deposits against) leaves the
    pool empty, as when the comparison ranks against every cell it can, the draw is from the
    pool without it: cells that no model trains on either.
    """
    pool = study_background(study, samples, split, cfg, exclude=exclude)
    if len(pool) == 0 and exclude is not None:
        # The comparison ranks against every such cell: rank among those (no model trains on
        # them either).
        pool = study_background(study, samples, split, cfg)
    rng = np.random.default_rng([seed, 31])
    rows, cols = pool.draw(min(SELECTION_BACKGROUND, len(pool)), rng)
    order = np.lexsort((cols, rows))
    return rows[order], cols[order]


def _monitor(
    study: Study, fold: Split, bg: tuple[np.ndarray, np.ndarray], cfg: TrainConfig, patience: bool
) -> EpochMonitor:
    deposits = _outer_deposits(study, fold)
    n = len(deposits)
    rows = np.concatenate([np.asarray(study.sites.rows)[deposits], bg[0]])
    cols = np.concatenate([np.asarray(study.sites.cols)[deposits], bg[1]])

    def metric(logits: np.ndarray) -> float:
        return ranking_auc(logits[:n], logits[n:])

    return EpochMonitor(
        rows=rows,
        cols=cols,
        metric=metric,
        period=cfg.select_every,
        tolerance=cfg.select_tolerance,
        patience=cfg.patience if patience else None,
    )


def fit_selected_network(
    kind: str,
    study: Study,
    samples: SampleSet,
    split: Split,
    cfg: TrainConfig,
    seed: int,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    exclude_background: np.ndarray | None = None,
    pretrained: PretrainResult | None = None,
) -> SelectedTraining:
    """Train network ``kind`` on held-out fold ``split``, its epochs chosen inside the fold.

    ``cfg.select_epochs`` is "inner" or "inner-restore" (module docstring). Every training
    starts from ``pretrained`` when given (one trunk for the inner folds and the fold).

    Returns the fold's training, the ``selection`` record of ``result.json`` (method, inner
    folds and their deposits, the evaluated epochs and pooled inner AUC per epoch, the chosen
    epoch, extra trainings) and the number of inner validation windows. A fold with fewer than
    2 training deposits trains all epochs, and its record says why.
    """
    method = cfg.select_epochs
    if method == "off":
        raise ValueError("fit_selected_network needs select_epochs 'inner' or 'inner-restore'")
    name = label or kind
    folds = inner_folds(study, samples, split, cfg.select_folds, seed)
    if not folds:
        trained = train_study(
            study, kind, samples=samples, split=split, cfg=cfg, seed=seed, device=device,
            progress=progress, label=name, exclude_background=exclude_background,
            pretrained=pretrained,
        )  # fmt: skip
        why = {"method": "off", "reason": "fewer than 2 training deposits in the fold"}
        return SelectedTraining(trained, dict(why), 0)
    bg = selection_background(study, samples, split, cfg, seed, exclude_background)
    inner_exclude = np.zeros(study.valid.shape, dtype=bool)
    if exclude_background is not None:
        inner_exclude |= np.asarray(exclude_background, dtype=bool)
    inner_exclude[bg] = True
    used = folds[:1] if method == "inner-restore" else folds
    curves: list[dict[int, float]] = []
    results: list[TrainResult] = []
    for k, fold in enumerate(used):
        monitor = _monitor(study, fold, bg, cfg, patience=method == "inner-restore")
        result = train_study(
            study, kind, samples=samples, split=fold, cfg=cfg, seed=seed, device=device,
            progress=progress, label=f"{name} inner {k + 1}/{len(used)}",
            exclude_background=inner_exclude, monitor=monitor, pretrained=pretrained,
        )  # fmt: skip
        results.append(result)
        scored = result.history[[monitor.evaluates(e, cfg.epochs) for e in result.history.epoch]]
        curves.append(
            {int(e): float(v) for e, v in zip(scored.epoch, scored[SELECTION_SCORE], strict=True)}
        )
    n_deposits = [len(_outer_deposits(study, fold)) for fold in used]
    epochs = sorted(set.intersection(*(set(c) for c in curves)))
    # Pooled over inner folds as held-out folds are pooled: weighted by their deposits.
    pooled = [
        float(sum(n * c[e] for n, c in zip(n_deposits, curves, strict=True)) / sum(n_deposits))
        for e in epochs
    ]
    record: dict[str, Any] = {
        "method": method,
        "metric": "held-out AUC of the inner folds' deposits among background cells",
        "inner_folds": len(used),
        "inner_deposits": n_deposits,
        "background_cells": len(bg[0]),
        "every": cfg.select_every,
        "tolerance": cfg.select_tolerance,
        "epochs": epochs,
        "inner_auc": [round(v, 4) for v in pooled],
    }
    if method == "inner-restore":
        trained = results[0]
        record |= {"chosen_epoch": trained.best_epoch, "extra_trainings": 0}
        return SelectedTraining(trained, record, len(used[0].val))
    chosen = choose_epoch(epochs, pooled, cfg.select_tolerance)
    trained = train_study(
        study, kind, samples=samples, split=split,
        cfg=cfg.model_copy(update={"epochs": chosen}), seed=seed, device=device,
        progress=progress, label=name, exclude_background=exclude_background,
        pretrained=pretrained,
    )  # fmt: skip
    record |= {"chosen_epoch": chosen, "extra_trainings": len(used)}
    return SelectedTraining(trained, record, int(sum(len(f.val) for f in used)))
