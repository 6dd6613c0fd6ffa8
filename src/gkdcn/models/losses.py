"""Training losses: BCE, the knowledge-constrained losses, the background's risk.

Plain BCE, the geological-knowledge (GK) constrained losses, and the risk of unlabelled background
windows (non-negative PU, or down-weighted BCE).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

GKForm = Literal["sigmoid-mse", "weighted-abs"]
BackgroundLoss = Literal["nnpu", "bce", "soft"]


class GKLoss(nn.Module):
    """BCE plus a fault-proximity term; ``knowledge`` is the weight at each window's centre cell.

    ``sigmoid-mse`` (the authors' release): ``BCE(p, y) + lam * MSE(p, sigmoid(a*w + b))`` with
    ``a`` and ``b`` learned, so the network is pulled towards a learned monotone function of the
    fault proximity ``w`` rather than towards ``w`` itself.
    ``weighted-abs`` (the paper's other form): ``mean(BCE(p, y) + lam * w * |p - y|)``: errors
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
        """The loss of a batch: ``logits``, ``target`` and the knowledge weight, each ``(N,)``."""
        prob = torch.sigmoid(logits)
        if self.form == "sigmoid-mse":
            bce = F.binary_cross_entropy_with_logits(logits, target)
            prior = torch.sigmoid(self.a * knowledge + self.b)
            return bce + self.lam * F.mse_loss(prob, prior)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (bce + self.lam * knowledge * (prob - target).abs()).mean()

    @property
    def applies_to_unlabelled(self) -> bool:
        """Whether :meth:`prior_term` means anything: only the sigmoid-mse form needs no label."""
        return self.form == "sigmoid-mse"

    def prior_term(self, logits: torch.Tensor, knowledge: torch.Tensor) -> torch.Tensor:
        """``lam * MSE(p, sigmoid(a*w + b))`` on windows without a label (background).

        It needs no label, so it can reach the background, where the geochemistry alone says
        little: there it pulls the map towards a learned monotone function of the fault
        proximity. ``weighted-abs`` needs a target and contributes nothing here (0).
        """
        if not self.applies_to_unlabelled or logits.numel() == 0:
            return logits.sum() * 0.0
        prior = torch.sigmoid(self.a * knowledge + self.b)
        return self.lam * F.mse_loss(torch.sigmoid(logits), prior)


class BCELoss(nn.Module):
    """Plain binary cross-entropy on logits; ignores the knowledge weight (CNN / DCN)."""

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, knowledge: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Plain BCE of ``logits`` against ``target``; ``knowledge`` is ignored."""
        return F.binary_cross_entropy_with_logits(logits, target)


def unlabelled_risk(
    logits_u: torch.Tensor,
    logits_p: torch.Tensor,
    kind: BackgroundLoss = "nnpu",
    prior: float = 0.05,
) -> torch.Tensor:
    """Risk of unlabelled background windows ``logits_u`` given the batch's positives ``logits_p``.

    ``bce``: every background window is a negative, ``mean BCE(u, 0)``.
    ``soft``: every background window is positive with probability ``prior``,
    ``mean BCE(u, prior)`` (:func:`soft_label_risk`).
    ``nnpu``: the background holds positives at rate ``prior`` (undiscovered deposits), so their
    share of the negative risk is subtracted using the labelled positives, and the result is
    clipped at 0 (the non-negative PU risk of Kiryo et al. 2017,
    ``max(0, E_u[l(u, 0)] - prior * E_p[l(p, 0)])``; the clip stops a flexible network from
    driving the estimate negative by overfitting the few positives). A batch without positives
    falls back to the ``bce`` form for the background.
    """
    if logits_u.numel() == 0:
        return logits_u.sum() * 0.0
    neg_u = F.softplus(logits_u).mean()  # BCE(u, 0) = -log(1 - sigmoid(u)) = softplus(u)
    if kind == "bce":
        return neg_u
    if kind == "soft":
        return soft_label_risk(logits_u, torch.full_like(logits_u, prior))
    if kind != "nnpu":
        raise ValueError(f"unknown background loss {kind!r}")
    if logits_p.numel() == 0:
        return neg_u
    neg_p = F.softplus(logits_p).mean()
    return torch.clamp(neg_u - prior * neg_p, min=0.0)


def soft_label_risk(logits_u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean BCE(u, t)`` with soft targets ``t`` in [0, 1].

    Each background window is a deposit with probability ``t`` (a constant prior, or one that
    follows the knowledge).
    """
    if logits_u.numel() == 0:
        return logits_u.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits_u, target)


def knowledge_prior(knowledge: torch.Tensor, prior: float, mean_weight: float) -> torch.Tensor:
    """Per-window prior ``prior * w / mean(w)`` clipped to [0, 1].

    The background's chance of holding an undiscovered deposit rises with the fault proximity ``w``
    and averages ``prior`` over the background (``mean_weight`` is the mean weight of the background
    pool).
    """
    if mean_weight <= 0:
        return torch.full_like(knowledge, prior)
    return torch.clamp(prior * knowledge / mean_weight, 0.0, 1.0)
