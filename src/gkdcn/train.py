"""The public names of :mod:`gkdcn.training` (and the training precision) in one module.

Training lives in the package :mod:`gkdcn.training`, one module per job, and the device and
precision in :mod:`gkdcn.runtime`; ``from gkdcn.train import train_study`` and the other names
below keep working for code written against this module. Patch a name where it is looked up
(its own module), not here.
"""

from __future__ import annotations

from gkdcn.runtime import (
    Precision,
    cpu_vendor,
    native_bfloat16,
    resolve_precision,
    training_autocast,
)
from gkdcn.training.augmentation import augment_batch
from gkdcn.training.calibration import CALIBRATION_CELLS
from gkdcn.training.loop import (
    SELECTION_SCORE,
    EpochMonitor,
    TrainResult,
    choose_epoch,
    evaluate_windows,
    fit_network,
)
from gkdcn.training.outputs import (
    TRAINING_FILES,
    training_curve,
    training_paths,
    write_training_outputs,
)
from gkdcn.training.stacked import fit_networks
from gkdcn.training.study import (
    study_background,
    train_and_write,
    train_study,
    train_study_seeds,
)
from gkdcn.training.windows import PreparedWindows, WindowData, prepare_windows

__all__ = [
    "CALIBRATION_CELLS",
    "SELECTION_SCORE",
    "TRAINING_FILES",
    "EpochMonitor",
    "Precision",
    "PreparedWindows",
    "TrainResult",
    "WindowData",
    "augment_batch",
    "choose_epoch",
    "cpu_vendor",
    "evaluate_windows",
    "fit_network",
    "fit_networks",
    "native_bfloat16",
    "prepare_windows",
    "resolve_precision",
    "study_background",
    "train_and_write",
    "train_study",
    "train_study_seeds",
    "training_autocast",
    "training_curve",
    "training_paths",
    "write_training_outputs",
]
