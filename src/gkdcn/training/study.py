"""Training on a loaded study: its samples, split, knowledge, background pool and pretraining."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.progress import Progress

from gkdcn.config import TrainConfig
from gkdcn.data.background import BackgroundPool, background_pool
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError
from gkdcn.models import registry
from gkdcn.models.bundle import ModelBundle, grid_record
from gkdcn.pretrain import PretrainResult, pretrain_for_training
from gkdcn.training.loop import EpochMonitor, TrainResult, fit_network
from gkdcn.training.stacked import fit_networks
from gkdcn.training.windows import PreparedWindows, prepare_windows

if TYPE_CHECKING:  # loading a study needs geopandas and rasterio, which training does not
    from gkdcn.data.study import Study


def train_study(
    study: Study,
    kind: str,
    *,
    samples: SampleSet | None = None,
    split: Split | None = None,
    cfg: TrainConfig | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    exclude_background: np.ndarray | None = None,
    monitor: EpochMonitor | None = None,
    pretrained: PretrainResult | None = None,
) -> TrainResult:
    """Train ``kind`` on a loaded :class:`gkdcn.data.study.Study` (its first split by default).

    ``exclude_background`` is an ``(H, W)`` mask of cells never to draw as background (a
    comparison passes the cells it ranks held-out deposits against). ``monitor`` chooses the
    epoch (:class:`EpochMonitor`; by default the validation BCE does). With ``cfg.pretrain``
    on, the network starts from ``pretrained`` (made here when not given) and its inputs take
    that pretraining's transform.
    """
    from gkdcn.data.study import build_samples

    if samples is None or split is None:
        samples, splits = build_samples(study)
        split = splits[0]
    cfg = cfg or study.config.train
    seed = cfg.seed if seed is None else seed
    if cfg.pretrain == "off":
        pretrained = None
    elif pretrained is None:
        pretrained = pretrain_for_training(study, kind, cfg, seed, device=device)
    data = _study_windows(
        study, kind, samples, split, cfg, exclude_background,
        transform=pretrained.transform if pretrained is not None else None,
    )  # fmt: skip
    result = fit_network(
        kind,
        data,
        cfg,
        seed=seed,
        device=device,
        progress=progress,
        label=label,
        monitor=monitor,
        trunk=pretrained.trunk if pretrained is not None else None,
    )
    result.bundle.info.update({"study": study.config.name, "split": split.name})
    result.bundle.info.update(grid_record(study.grid))
    if pretrained is not None:
        result.bundle.info["pretrain"] = {
            "method": cfg.pretrain,
            "epochs": len(pretrained.losses),
            "loss_first": pretrained.losses[0],
            "loss_last": pretrained.losses[-1],
        }
    return result


def train_study_seeds(
    study: Study,
    kind: str,
    samples: SampleSet,
    splits: Sequence[Split],
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
    exclude_background: Sequence[np.ndarray | None] | None = None,
) -> list[TrainResult]:
    """:func:`train_study` for several seeds at once (:func:`fit_networks`).

    ``splits[i]`` and ``exclude_background[i]`` belong to ``seeds[i]``; the splits must have
    equally many training windows. Each result equals ``train_study`` with that seed up to rounding.
    """
    excludes = list(exclude_background) if exclude_background is not None else [None] * len(seeds)
    if not len(splits) == len(seeds) == len(excludes):
        raise GkdcnError("train_study_seeds needs one split and one exclusion mask per seed")
    data = [
        _study_windows(study, kind, samples, split, cfg, exclude)
        for split, exclude in zip(splits, excludes, strict=True)
    ]
    results = fit_networks(kind, data, cfg, seeds, device=device, progress=progress, label=label)
    for result, split in zip(results, splits, strict=True):
        result.bundle.info.update({"study": study.config.name, "split": split.name})
        result.bundle.info.update(grid_record(study.grid))
    return results


def _study_windows(
    study: Study,
    kind: str,
    samples: SampleSet,
    split: Split,
    cfg: TrainConfig,
    exclude: np.ndarray | None,
    transform: ChannelTransform | None = None,
) -> PreparedWindows:
    """The prepared windows (and background pool) of ``split`` on a study."""
    if registry.model_kind(kind).needs_knowledge and study.knowledge is None:
        raise GkdcnError(
            f"{kind} needs geological knowledge: set [knowledge] faults or weights in the config"
        )
    pool = None
    if cfg.background_ratio > 0:
        pool = study_background(study, samples, split, cfg, exclude=exclude)
    return prepare_windows(
        study.raw,
        study.names,
        study.knowledge,
        samples,
        split,
        study.config.transform,
        study.config.samples.window,
        study.config.samples.padding,
        compositional=study.compositional,
        background=pool,
        transform=transform,
    )


def study_background(
    study: Study,
    samples: SampleSet,
    split: Split,
    cfg: TrainConfig,
    exclude: np.ndarray | None = None,
) -> BackgroundPool:
    """The background pool of ``split`` on a study (:func:`gkdcn.data.background.background_pool`).

    The distance to training deposits defaults to half a window; held-out deposits are kept at
    least ``split.exclusion_radius`` away as well.
    """
    distance = cfg.background_distance
    if distance is None:
        distance = (study.config.samples.window // 2) * max(study.grid.cell_size)
    return background_pool(
        study.valid,
        study.grid,
        study.sites,
        samples,
        split,
        min_distance=distance,
        exclusion_radius=study.config.split.exclusion_radius,
        exclude=exclude,
    )


def train_and_write(
    study: Study,
    kind: str,
    out_dir: str | Path,
    *,
    samples: SampleSet,
    split: Split,
    seed: int,
    seeds: int = 1,
    device: str = "cpu",
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[TrainResult, dict[str, Path]]:
    """Train ``seeds`` networks of ``kind`` (seeds ``seed``, ``seed + 1``, ...) and write them.

    What ``gkdcn train`` does once the study and its samples are ready: with one seed the
    model file holds that network; with several it holds all of them as one seed ensemble
    (members averaged by prediction), and the history and training curve are the first
    member's.

    Parameters
    ----------
    study
        The loaded study, its config as the training should use it.
    kind
        A network kind of the registry (``cnn``, ``dcn``, ``gk-cnn``, ``gk-dcn``).
    out_dir
        Folder for ``model.pt``, ``history.csv`` and ``training_curve.png``
        (:func:`gkdcn.training.outputs.training_paths`).
    samples, split
        The windows and the split every member trains on.
    seed
        The first member's seed.
    seeds
        How many members to train (at least 1).
    device
        A resolved device type (``"cpu"``, ``"cuda"``, ``"mps"``).
    overwrite
        Replace earlier training outputs (:func:`gkdcn.training.outputs.write_training_outputs`).
    progress
        A started progress display: one bar per member.
    log
        Told, before writing, how an ensemble's members went into the one model file.

    Returns
    -------
    tuple of TrainResult and dict
        The training (the ensemble's bundle with the first member's history) and the paths
        written, by :data:`gkdcn.training.outputs.TRAINING_FILES` key.
    """
    from gkdcn.training.outputs import write_training_outputs  # matplotlib: only when writing

    results = [
        train_study(
            study,
            kind,
            samples=samples,
            split=split,
            seed=seed + i,
            device=device,
            progress=progress,
            label=f"{kind} seed {seed + i}" if seeds > 1 else None,
        )
        for i in range(seeds)
    ]
    result = results[0]
    if seeds > 1:
        result = dataclasses.replace(
            result, bundle=ModelBundle.ensemble([r.bundle for r in results])
        )
        if log is not None:
            log(
                f"{seeds} members (seeds {seed}-{seed + seeds - 1}) in one model file; "
                "history and training curve of the first"
            )
    return result, write_training_outputs(result, out_dir, overwrite=overwrite)
