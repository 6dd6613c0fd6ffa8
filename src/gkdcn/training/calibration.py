"""Prior-shift calibration of a trained network (``[train] calibration = "prior-shift"``).

A constant added to the output logit (the last layer's bias) so the mean probability over
background cells is ``class_prior``; it is recorded in ``bundle.info["calibration"]`` and, being
part of the weights, applied wherever the model is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gkdcn.config import TrainConfig
from gkdcn.errors import GkdcnError
from gkdcn.training.windows import PreparedWindows, background_per_epoch

CALIBRATION_CELLS = 4096  # background cells the prior shift is fitted on (seeded draw)


@torch.no_grad()
def calibrate(
    net: torch.nn.Module, data: PreparedWindows, cfg: TrainConfig, seed: int, device: str
) -> dict[str, Any] | None:
    """Prior-shift calibration: a logit offset so the mean background probability is the prior.

    Background windows were sampled far more often than their share of any batch says, and the
    labelled windows are half deposits, so the raw output overstates the base rate. The offset
    is found by bisection on up to ``CALIBRATION_CELLS`` pool cells and added to the last layer's
    bias, so every consumer of the model file (predict, explain) applies it; ranks do not move.
    """
    if cfg.calibration != "prior-shift" or background_per_epoch(data, cfg) == 0:
        return None
    assert data.background is not None
    rng = np.random.default_rng([seed, 2])
    rows, cols = data.background.draw(min(CALIBRATION_CELLS, len(data.background)), rng)
    bg = data.background_windows(rows, cols)
    net.eval()
    x = torch.from_numpy(bg.x).to(device)
    logits = torch.cat([net(x[i : i + 1024]) for i in range(0, len(x), 1024)]).double()
    lo, hi = -60.0, 60.0
    for _ in range(80):  # mean sigmoid(z + b) is increasing in b
        mid = 0.5 * (lo + hi)
        if float(torch.sigmoid(logits + mid).mean()) < cfg.class_prior:
            lo = mid
        else:
            hi = mid
    offset = 0.5 * (lo + hi)
    last = net.head[-1]  # type: ignore[index]
    if not isinstance(last, torch.nn.Linear) or last.bias is None:
        raise GkdcnError("calibration needs the network to end in a linear layer with a bias")
    last.bias.add_(offset)
    return {
        "method": "prior-shift",
        "logit_offset": offset,
        "target_mean_probability": cfg.class_prior,
        "cells": len(rows),
    }
