"""The levers of the ablation (``gkdcn ablation``), as plain data.

Plain data, so the command line can list them without loading the comparison (see
:mod:`gkdcn.compare.ablation`).
"""

from __future__ import annotations

from typing import Any

REFERENCE = "full recipe"
# A variant is an update of the full recipe's [train] table; "knowledge.as_channel" updates the
# [knowledge] table instead (the channel changes the network's input, not its training).
CHANNEL_KEY = "knowledge.as_channel"
VARIANTS: dict[str, dict[str, Any]] = {
    REFERENCE: {},
    "no background": {"background_ratio": 0.0},
    "background as nnPU": {"background_loss": "nnpu"},
    "background as BCE negatives": {"background_loss": "bce"},
    "no knowledge on background": {"gk_background": False, "knowledge_prior": False},
    "no augmentation": {"augment": False},
    "no value noise": {"noise": 0.0},
    "no calibration": {"calibration": "none"},
    # cheaper trainings: a narrower network (a 3x3 layer's work falls with the square of the
    # width) and fewer background windows per step
    "width 32": {"width": 32},
    "background ratio 1": {"background_ratio": 1.0},
    "width 32 and background ratio 1": {"width": 32, "background_ratio": 1.0},
    # fewer epochs (held-out folds have no validation set: without selection inside the fold,
    # every fold trains all of them)
    "20 epochs": {"epochs": 20},
    "12 epochs": {"epochs": 12},
    # the epochs chosen in each held-out fold by inner folds of its training deposits
    # (gkdcn.compare.selection; docs/ablation/early_stopping_prereg.md)
    "epochs chosen inside the fold": {"select_epochs": "inner"},
    "epochs chosen inside the fold (restored)": {"select_epochs": "inner-restore"},
    # the trunk pretrained without labels on every valid cell (gkdcn.pretrain), then fine-tuned
    "pretrained trunk": {"pretrain": "masked-channels"},
    "pretrained trunk and epochs chosen inside the fold": {
        "pretrain": "masked-channels",
        "select_epochs": "inner",
    },
    "no knowledge channel": {CHANNEL_KEY: False},
    "with knowledge channel": {CHANNEL_KEY: True},
    "authors' settings": {"preset": "authors", CHANNEL_KEY: False},
    # every lever of the recipe off, gkdcn's optimiser kept (unlike "authors' settings")
    "recipe off": {
        "background_ratio": 0.0,
        "gk_background": False,
        "knowledge_prior": False,
        "augment": False,
        "noise": 0.0,
        "calibration": "none",
        CHANNEL_KEY: False,
    },
}
DEFAULT_VARIANTS = (
    "no background",
    "background as nnPU",
    "no knowledge on background",
    "no augmentation",
    "no value noise",
    "no knowledge channel",
    "recipe off",
)
