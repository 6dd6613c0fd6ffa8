"""Self-supervised pretraining of the network trunk on the unlabelled cells of the whole map.

A district has a few dozen deposits but hundreds of thousands of valid cells. The trunk (the
three 3x3 layers and their batch norms, :data:`TRUNK_LAYERS`) can learn the map's multi-element
patterns from all of them without a single label: **masked-channel reconstruction**. Each window
loses a random subset of its channels (set to 0, the training mean after scaling), and a 1x1
decoder on the trunk's feature maps must give back the lost channels' values, averaged over the
2 x 2 cells each feature-map cell covers. Only the masked channels count in the loss, so the trunk
has to learn how elements co-vary in space, not to copy its input.

Nothing here reads a site or a label: :func:`pretrain_study` takes the whole :class:`Study` and
uses only its raw stack, valid mask, config and grid, so one pretrained trunk per district and
seed serves every fold and model of a comparison; each fold then fine-tunes it on its own
deposits. The transform is fitted on every valid cell for the same reason (it too sees no label).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gkdcn.data.samples import Padding, extract_windows
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError
from gkdcn.models import registry
from gkdcn.models.nets import AnomalyNet, ModelSpec, build_network

if TYPE_CHECKING:
    from gkdcn.config import TrainConfig
    from gkdcn.data.study import Study

TRUNK_LAYERS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
"""The layers pretraining learns (everything before the head); the head is trained per fold."""


@dataclass(frozen=True)
class PretrainSettings:
    """How long and on how much the trunk is pretrained.

    ``windows`` centres are drawn afresh each epoch, uniformly over the valid cells; each window
    masks each channel with probability ``mask_fraction`` (at least one channel per window).
    """

    epochs: int = 10
    windows: int = 4096
    batch_size: int = 128
    mask_fraction: float = 0.3
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.windows < 1 or self.batch_size < 1:
            raise GkdcnError("pretraining needs at least one epoch, window and batch")
        if not 0 < self.mask_fraction < 1:
            raise GkdcnError(f"mask_fraction must lie in (0, 1), not {self.mask_fraction}")


@dataclass
class PretrainResult:
    """A pretrained trunk, the transform its inputs had, and its losses.

    ``trunk`` is the state of :data:`TRUNK_LAYERS`; ``losses`` the mean masked-reconstruction
    loss of each epoch.
    """

    trunk: dict[str, torch.Tensor]
    transform: ChannelTransform
    losses: list[float] = field(default_factory=list)


def trunk_state(net: AnomalyNet) -> dict[str, torch.Tensor]:
    """A copy of the trunk's parameters and buffers, keyed as in ``net.state_dict()``."""
    prefixes = tuple(f"{name}." for name in TRUNK_LAYERS)
    return {k: v.detach().clone() for k, v in net.state_dict().items() if k.startswith(prefixes)}


def load_trunk(net: AnomalyNet, trunk: dict[str, torch.Tensor]) -> None:
    """Copy a pretrained trunk into ``net`` (its head is left as it is).

    Refuses a trunk of another architecture (other channels, width or layer kinds) by name.
    """
    own = net.state_dict()
    expected = {k for k in own if k.startswith(tuple(f"{n}." for n in TRUNK_LAYERS))}
    if set(trunk) != expected:
        raise GkdcnError("the pretrained trunk does not fit this network (other layers)")
    for key, value in trunk.items():
        if own[key].shape != value.shape:
            raise GkdcnError(
                f"the pretrained trunk does not fit this network ({key}: "
                f"{tuple(value.shape)} vs {tuple(own[key].shape)})"
            )
    net.load_state_dict({**own, **trunk})


class _Reconstructor(nn.Module):
    """The trunk plus a 1x1 decoder from its feature maps back to the input channels."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.net = build_network(spec)
        self.decoder = nn.Conv2d(2 * spec.width, spec.in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.net.features(x))


def _pooled_target(x: torch.Tensor) -> torch.Tensor:
    """Each feature-map cell's 2 x 2 input cells averaged.

    The trunk's max-pool drops the odd last row and column, so the target does too.
    """
    size = 2 * (x.shape[-1] // 2)
    return F.avg_pool2d(x[..., :size, :size], 2)


def pretrain_trunk(
    features: np.ndarray,
    valid: np.ndarray,
    spec: ModelSpec,
    *,
    seed: int,
    padding: Padding = "zero",
    settings: PretrainSettings = PretrainSettings(),
    device: str = "cpu",
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Pretrain a trunk of ``spec`` by masked-channel reconstruction; returns (trunk, losses).

    ``features`` is the transformed stack ``(C, H, W)`` (invalid cells 0), ``valid`` the
    ``(H, W)`` mask of cells windows may be centred on. Seeded: the same inputs and seed give
    the same trunk, bit for bit, on one machine and thread count.
    """
    if features.ndim != 3 or features.shape[0] != spec.in_channels:
        raise GkdcnError(
            f"pretraining needs {spec.in_channels} channels, the stack has {features.shape[0]}"
        )
    rows, cols = np.nonzero(np.asarray(valid, dtype=bool))
    if rows.size == 0:
        raise GkdcnError("pretraining needs valid cells; the mask has none")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = _Reconstructor(spec).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    for _epoch in range(settings.epochs):
        pick = rng.integers(0, rows.size, size=settings.windows)
        windows = extract_windows(features, rows[pick], cols[pick], spec.window, padding)
        total, count = 0.0, 0
        for start in range(0, settings.windows, settings.batch_size):
            x = torch.from_numpy(windows[start : start + settings.batch_size]).to(device)
            n, c = x.shape[:2]
            masked = torch.rand((n, c), generator=generator) < settings.mask_fraction
            none = ~masked.any(dim=1)
            if none.any():  # every window loses at least one channel
                forced = torch.randint(0, c, (int(none.sum()),), generator=generator)
                masked[none.nonzero().squeeze(1), forced] = True
            masked = masked.to(device)
            inputs = x.masked_fill(masked[:, :, None, None], 0.0)
            error = (model(inputs) - _pooled_target(x)) ** 2  # (N, C, p, p)
            weight = masked[:, :, None, None].to(error.dtype).expand_as(error)
            loss = (error * weight).sum() / weight.sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * n
            count += n
        losses.append(total / count)
    return {k: v.cpu() for k, v in trunk_state(model.net).items()}, losses


def fit_unlabelled_transform(study: Study) -> ChannelTransform:
    """The study's transform fitted on every valid cell (no label, no fold)."""
    values = study.raw[:, study.valid].T
    cfg = study.config.transform
    return ChannelTransform.fit(values, cfg.method, cfg.scaling, compositional=study.compositional)


def pretrain_study(
    study: Study,
    spec: ModelSpec,
    *,
    seed: int,
    settings: PretrainSettings = PretrainSettings(),
    device: str = "cpu",
) -> PretrainResult:
    """Pretrain a trunk for ``spec`` on the whole valid area of ``study`` (no site is read)."""
    transform = fit_unlabelled_transform(study)
    features = transform.apply(study.raw)
    trunk, losses = pretrain_trunk(
        features,
        study.valid,
        spec,
        seed=seed,
        padding=study.config.samples.padding,
        settings=settings,
        device=device,
    )
    return PretrainResult(trunk=trunk, transform=transform, losses=losses)


def trunk_key(kind: str, seed: int) -> tuple[int, bool]:
    """Which pretrained trunk a network of ``kind`` trained with ``seed`` starts from.

    Plain and knowledge-guided twins share one architecture (the GK term is a loss), so they
    share a trunk; deformable and plain networks do not.
    """
    return seed, registry.model_kind(kind).deformable


def pretrain_for_training(
    study: Study, kind: str, cfg: TrainConfig, seed: int, *, device: str = "cpu"
) -> PretrainResult:
    """The pretrained trunk a training of ``kind`` under ``cfg`` starts from (made now)."""
    spec = ModelSpec(
        kind=kind,
        in_channels=len(study.names),
        window=study.config.samples.window,
        head=cfg.head,
        dropout=cfg.dropout,
        width=cfg.width,
    )
    settings = PretrainSettings(
        epochs=cfg.pretrain_epochs,
        windows=cfg.pretrain_windows,
        batch_size=max(cfg.batch_size, 64),
        lr=cfg.lr,
    )
    return pretrain_study(study, spec, seed=seed, settings=settings, device=device)
