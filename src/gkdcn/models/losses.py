"""Training losses: plain BCE, and the geological-knowledge (GK) constrained losses."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

GKForm = Literal["sigmoid-mse", "weighted-abs"]


class GKLoss(nn.Module):
    """BCE plus a fault-proximity term; ``knowledge`` is the weight at each window's centre cell.

    ``sigmoid-mse`` (the authors' release): ``BCE(p, y) + lam * MSE(p, sigmoid(a*w + b))`` with
    ``a`` and ``b`` learned, so the network is pulled towards a learned monotone function of the
    fault proximity ``w`` rather than towards ``w`` itself.
    ``weighted-abs`` (the paper's earlier form): ``mean(BCE(p, y) + lam * w * |p - y|)``: errors
    near faults cost more.
    With ``lam = 0`` both reduce to plain BCE.
    """

    def __init__(self, form: GKForm = "sigmoid-mse", lam: float = 0.1) -> None:
        super().__init__()
        self.form = form
        self.lam = float(lam)
        self.a = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, knowledge: torch.Tensor
    ) -> torch.Tensor:
        prob = torch.sigmoid(logits)
        if self.form == "sigmoid-mse":
            bce = F.binary_cross_entropy_with_logits(logits, target)
            prior = torch.sigmoid(self.a * knowledge + self.b)
            return bce + self.lam * F.mse_loss(prob, prior)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (bce + self.lam * knowledge * (prob - target).abs()).mean()


class BCELoss(nn.Module):
    """Plain binary cross-entropy on logits; ignores the knowledge weight (CNN / DCN)."""

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, knowledge: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target)
