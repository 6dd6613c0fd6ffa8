"""The one seam between a comparison job and a model kind: fit on a fold, then score cells.

Every job calls :func:`fit_model` and gets a :class:`FittedModel`; the job never asks what kind
it holds. The scores it needs are the same for every kind: the whole map (in-sample protocols)
or chosen cells (held-out deposits and background cells), as probabilities in [0, 1].

Which kinds exist, and what fits each, is the registry's (:mod:`gkdcn.models.registry`):
:func:`fit_model` dispatches on the kind's family. A network is trained by
:func:`gkdcn.training.study.train_study` and wrapped as :class:`FittedNetwork`; a baseline is the
scikit-learn style estimator its entry names (:class:`gkdcn.models.baselines.CellBaseline`),
wrapped as :class:`FittedBaseline`, fitted on the centres of the fold's training windows, with
the transform fitted on those windows' cells, exactly as a network's, and (entries marked
``background``) on background cells drawn from the same pool as the fold's networks' background.
A new kind of either family is then trained on exactly the same folds and seeds and scored
against the same background cells as the four networks, and its rows appear in every table,
statistic and figure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.progress import Progress

from gkdcn.compare.selection import SelectedTraining, fit_selected_network
from gkdcn.config import TrainConfig
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.study import Study
from gkdcn.io.atomic import write_text
from gkdcn.io.jsonsafe import json_safe
from gkdcn.io.rasters import ArraySource
from gkdcn.models import baselines, registry
from gkdcn.models.bundle import ModelBundle
from gkdcn.predict import predict_cells, predict_map
from gkdcn.pretrain import PretrainResult
from gkdcn.training.loop import TrainResult
from gkdcn.training.outputs import write_training_outputs
from gkdcn.training.study import study_background, train_study, train_study_seeds
from gkdcn.training.windows import prepare_windows

BASELINE_FILE = "baseline.json"


class FittedModel(Protocol):
    """A model fitted on one fold, as a comparison job uses it."""

    @property
    def info(self) -> dict[str, Any]:
        """Fit facts recorded in the job's ``result.json`` (e.g. ``best_epoch``)."""
        ...

    def score_map(self) -> np.ndarray:
        """Probability of every cell of the study grid, ``(H, W)`` (invalid cells: anything)."""
        ...

    def score_cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Probability at the given cells, ``(N,)``."""
        ...

    def save(self, folder: Path) -> None:
        """Write what a user may reuse (model file, history, figures) into ``folder``."""
        ...


@dataclass
class FittedNetwork:
    """One of the four networks after :func:`gkdcn.training.study.train_study`."""

    trained: TrainResult
    study: Study
    device: str
    # How the epochs were chosen inside the fold (:mod:`gkdcn.compare.selection`), if they were.
    selected: SelectedTraining | None = None

    @property
    def bundle(self) -> ModelBundle:
        """The trained model file's contents."""
        return self.trained.bundle

    @property
    def info(self) -> dict[str, Any]:
        info = self.bundle.info
        selected = self.selected
        return {
            "best_epoch": self.trained.best_epoch,
            "background_per_epoch": info.get("background_per_epoch", 0),
            **({"calibration": info["calibration"]} if "calibration" in info else {}),
            **({"pretrain": info["pretrain"]} if "pretrain" in info else {}),
            **(
                {"selection": selected.record, "n_val": selected.n_val}
                if selected is not None
                else {}
            ),
        }

    def score_map(self) -> np.ndarray:
        study = self.study
        result = predict_map(
            self.bundle,
            ArraySource(study.raw, study.names, study.grid),
            batch_size=study.config.predict.batch_size,
            block_rows=study.config.predict.block_rows,
            device=self.device,
        )
        return result.mean

    def score_cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        study = self.study
        return predict_cells(
            self.bundle, study.raw, study.names, rows, cols,
            batch_size=study.config.predict.batch_size, device=self.device,
        )  # fmt: skip

    def save(self, folder: Path) -> None:
        write_training_outputs(self.trained, folder, overwrite=True)


@dataclass
class FittedBaseline:
    """A baseline fitted on one fold, with the fold's per-cell features it scores from."""

    model: baselines.FittedBaseline
    features: baselines.CellFeatures
    valid: np.ndarray  # (H, W) bool

    @property
    def info(self) -> dict[str, Any]:
        return {
            "baseline": self.model.description,
            "n_fit_windows": len(self.model.trained_on),
            "n_fit_background": len(self.model.background_rows),
            **self.model.info,
        }

    def score_map(self) -> np.ndarray:
        return self.model.score_map(self.features, self.valid)

    def score_cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.model.score(self.features, rows, cols)

    def save(self, folder: Path) -> None:
        # No model file: what was fitted, in words and numbers (the random forest's trees are
        # not written; refitting with the run's seed gives the same forest).
        record: dict[str, Any] = {
            "kind": self.model.kind,
            "description": self.model.description,
            "features": self.features.names,
            **self.model.info,
            **self.model.estimator.fitted_record(self.features.names),
        }
        write_text(folder / BASELINE_FILE, json.dumps(json_safe(record), indent=2), overwrite=True)


def fit_model(
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
) -> FittedModel:
    """Fit model ``kind`` on ``split``'s training windows (the one dispatch on model kind).

    ``pretrained``: the trunk a network starts from when ``cfg.pretrain`` is on (made by the
    training when not given); baselines ignore it.

    ``exclude_background`` (``(H, W)`` bool) marks cells no model may draw as unlabelled
    background: the cells the held-out deposits are ranked against. With the recipe's
    background on, the fitted baselines draw theirs once per fold from the same pool as the
    fold's networks (:func:`gkdcn.training.study.study_background`, same exclusions), seeded by ``seed``.

    The kind's family (:mod:`gkdcn.models.registry`) says how: a network is trained by
    :func:`gkdcn.training.study.train_study`, a baseline is the estimator its entry names, fitted by
    :func:`gkdcn.models.baselines.fit_fold_baseline`. Networks on a fold that holds sites out
    choose their epochs inside the fold when ``cfg.select_epochs`` says so
    (:func:`gkdcn.compare.selection.fit_selected_network`).
    """
    entry = registry.find(kind)
    if entry is None:
        raise ValueError(f"no fitting rule for model kind {kind!r} (not in gkdcn.models.registry)")
    if entry.family == "network" and cfg.select_epochs != "off" and len(split.held_out):
        selected = fit_selected_network(
            kind, study, samples, split, cfg, seed, device=device, progress=progress,
            label=label, exclude_background=exclude_background, pretrained=pretrained,
        )  # fmt: skip
        return FittedNetwork(selected.trained, study, device, selected)
    if entry.family == "network":
        trained = train_study(
            study,
            kind,
            samples=samples,
            split=split,
            cfg=cfg,
            seed=seed,
            device=device,
            progress=progress,
            label=label,
            exclude_background=exclude_background,
            pretrained=pretrained,
        )
        return FittedNetwork(trained, study, device)
    if entry.family == "baseline":
        window, padding = study.config.samples.window, study.config.samples.padding
        # The very transform a network of this fold is trained with (fitted on the fold's
        # training windows only), so baselines and networks see the same stack (a pretrained
        # network's transform is fitted on every valid cell instead).
        transform = prepare_windows(
            study.raw, study.names, study.knowledge, samples, split,
            study.config.transform, window, padding, compositional=study.compositional,
        ).transform  # fmt: skip
        features = baselines.fold_features(
            study.raw, study.names, study.knowledge, transform, window, padding
        )
        background = None
        if cfg.background_ratio > 0 and entry.background:
            pool = study_background(study, samples, split, cfg, exclude=exclude_background)
            background = baselines.draw_background(
                pool, len(split.train), cfg.background_ratio, seed,
                loss=cfg.background_loss, prior=cfg.class_prior, weight=cfg.background_weight,
            )  # fmt: skip
        model = baselines.fit_fold_baseline(
            kind, features, samples, split, seed=seed,
            has_knowledge=study.knowledge is not None, background=background,
        )  # fmt: skip
        return FittedBaseline(model, features, study.valid)
    raise ValueError(f"no fitting rule for model kind {kind!r}")


def fit_network_seeds(
    kind: str,
    study: Study,
    samples: SampleSet,
    splits: Sequence[Split],
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    exclude_background: Sequence[np.ndarray | None] | None = None,
) -> list[FittedModel]:
    """:func:`fit_model` of network ``kind`` for several seeds at once, trained as one stacked
    model (:func:`gkdcn.training.stacked.fit_networks`); ``splits``, ``exclude_background`` per seed.
    Each fitted model equals ``fit_model`` with its seed up to floating-point rounding."""
    if not registry.is_network(kind):
        raise ValueError(f"only networks train stacked, not {kind!r}")
    trained = train_study_seeds(
        study,
        kind,
        samples,
        splits,
        cfg,
        seeds,
        device=device,
        progress=progress,
        label=label,
        exclude_background=exclude_background,
    )
    return [FittedNetwork(result, study, device) for result in trained]
