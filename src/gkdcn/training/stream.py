"""One member's batches and losses: data order, background draws, augmentation, loss terms.

Every epoch, ``background_ratio`` unlabelled windows per labelled one are drawn (seeded) from the
prepared windows' background pool; each batch holds labelled and background windows in that
ratio, so batch norm also learns the statistics of the map it will be applied to. The background
risk is non-negative PU or down-weighted BCE (:func:`gkdcn.models.losses.unlabelled_risk`), or
soft labels that follow the knowledge; GK models add the GK prior term on background windows.
"""

from __future__ import annotations

import numpy as np
import torch

from gkdcn.config import TrainConfig
from gkdcn.models.losses import GKLoss, knowledge_prior, soft_label_risk, unlabelled_risk
from gkdcn.training.augmentation import augment_batch
from gkdcn.training.windows import PreparedWindows, background_per_epoch


class Stream:
    """One member's training data and its seeded draws: data order, background, augmentation.

    Solo and stacked training take every batch and every loss from a stream, so a member of a
    stack sees exactly the batches, draws and loss terms it would see training alone.
    """

    def __init__(
        self,
        data: PreparedWindows,
        cfg: TrainConfig,
        criterion: torch.nn.Module,
        shuffler: torch.Generator,
        device: str,
        seed: int,
    ) -> None:
        self.data, self.cfg, self.criterion, self.device = data, cfg, criterion, device
        self.shuffler = shuffler
        self.x_train = torch.from_numpy(data.train.x).to(device)
        self.y_train = torch.from_numpy(data.train.y).to(device)
        self.k_train = torch.from_numpy(data.train.knowledge).to(device)
        self.n = len(self.y_train)
        self.n_bg = background_per_epoch(data, cfg)
        # Separate seeded streams, so switching a lever on does not move the others' draws.
        self.bg_rng = np.random.default_rng([seed, 1])
        self.aug_gen = torch.Generator().manual_seed(seed + 7919)
        is_gk = isinstance(criterion, GKLoss)
        self.gk_on_background = is_gk and cfg.gk_background and criterion.applies_to_unlabelled
        # GK models with soft background labels: the background's prior follows the knowledge.
        self.prior_follows_knowledge = (
            is_gk and cfg.knowledge_prior and cfg.background_loss == "soft"
        )
        self.mean_weight = 0.0
        if self.n_bg and self.prior_follows_knowledge:
            assert data.background is not None and data.weight is not None
            pool = data.background
            self.mean_weight = float(np.nan_to_num(data.weight[pool.rows, pool.cols]).mean())

    def starts(self) -> list[int]:
        """First labelled window of each batch of an epoch."""
        return list(range(0, self.n, self.cfg.batch_size))

    def new_epoch(self) -> None:
        """Draw the epoch's data order and background windows."""
        self.order = torch.randperm(self.n, generator=self.shuffler).to(self.device)
        if self.n_bg:
            data = self.data
            assert data.background is not None
            bg = data.background_windows(*data.background.draw(self.n_bg, self.bg_rng))
            self.x_bg = torch.from_numpy(bg.x).to(self.device)
            self.k_bg = torch.from_numpy(bg.knowledge).to(self.device)
            # The epoch's background, dealt evenly to the labelled batches.
            self.bg_bounds = np.linspace(0, self.n_bg, len(self.starts()) + 1).round().astype(int)

    def batch(self, i: int, start: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Batch ``i``'s windows (labelled first, then background) and their indices.

        None for a lone leftover window (batch norm needs two samples).
        """
        batch = self.order[start : start + self.cfg.batch_size]
        xb = self.x_train[batch]
        m = 0
        if self.n_bg:
            lo, hi = self.bg_bounds[i], self.bg_bounds[i + 1]
            xb = torch.cat([xb, self.x_bg[lo:hi]])
            m = hi - lo
        if len(batch) + m < 2 and self.n >= 2:
            return None
        cfg = self.cfg
        if cfg.augment or cfg.noise > 0:
            if cfg.augment:
                xb = augment_batch(xb, self.aug_gen)
            if cfg.noise > 0:
                noise = torch.randn(xb.shape, generator=self.aug_gen).to(self.device)
                xb = xb + cfg.noise * noise
        return xb, batch

    def loss(
        self, i: int, batch: torch.Tensor, all_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's loss and its labelled windows' logits."""
        cfg, criterion = self.cfg, self.criterion
        logits = all_logits[: len(batch)]
        yb, kb = self.y_train[batch], self.k_train[batch]
        loss = criterion(logits, yb, kb)
        if self.n_bg and self.bg_bounds[i + 1] > self.bg_bounds[i]:
            kb_u = self.k_bg[self.bg_bounds[i] : self.bg_bounds[i + 1]]
            logits_u = all_logits[len(batch) :]
            if self.prior_follows_knowledge:
                target = knowledge_prior(kb_u, cfg.class_prior, self.mean_weight)
                risk = soft_label_risk(logits_u, target)
            else:
                risk = unlabelled_risk(
                    logits_u, logits[yb > 0.5], cfg.background_loss, cfg.class_prior
                )
            loss = loss + cfg.background_weight * risk
            if self.gk_on_background:
                assert isinstance(criterion, GKLoss)
                loss = loss + criterion.prior_term(logits_u, kb_u)
        return loss, logits

    def correct(self, batch: torch.Tensor, logits: torch.Tensor) -> int:
        """How many of the batch's labelled windows ``logits`` classify right."""
        return int(((logits > 0).float() == self.y_train[batch]).sum())
