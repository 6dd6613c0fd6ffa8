"""The paper's four networks: CNN, DCN, GK-CNN and GK-DCN on one backbone.

Only the two inner 3x3 layers differ: plain convolutions in CNN / GK-CNN, modulated deformable
convolutions in DCN / GK-DCN. The "GK" variants differ from their plain twins only in the training
loss (see :mod:`gkdcn.models.losses`), so the same network class serves all four.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from gkdcn.errors import GkdcnError
from gkdcn.models import registry
from gkdcn.models.deform import DeformConv2d

Head = Literal["gap", "flatten"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network's architecture."""

    kind: str
    in_channels: int
    window: int
    head: Head = "gap"
    dropout: float = 0.5
    width: int = 64

    def __post_init__(self) -> None:
        if not registry.is_network(self.kind):
            networks = registry.names("network")
            raise GkdcnError(
                f"unknown model kind {self.kind!r} (choose from {', '.join(networks)})"
            )
        if self.window < 3 or self.window % 2 == 0:
            raise GkdcnError(f"window must be an odd size >= 3, got {self.window}")

    @property
    def deformable(self) -> bool:
        """Whether the inner 3x3 layers are deformable (the registry's ``deformable``)."""
        return registry.model_kind(self.kind).deformable

    @property
    def knowledge_guided(self) -> bool:
        """Whether it trains with the knowledge loss term (the registry's ``knowledge_guided``)."""
        return registry.model_kind(self.kind).knowledge_guided

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**data)


class AnomalyNet(nn.Module):
    """conv3x3(C->w) BN ReLU | 3x3(w->w) BN ReLU | maxpool 2 | 3x3(w->2w) BN ReLU | head -> logit.

    Layer names are stable (``conv2`` is the first layer that can be deformable, ``conv3`` the
    second) because explanations and saved weights refer to them.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        w = spec.width

        def inner(cin: int, cout: int) -> nn.Module:
            if spec.deformable:
                return DeformConv2d(cin, cout, kernel_size=3, padding=1)
            return nn.Conv2d(cin, cout, kernel_size=3, padding=1)

        self.conv1 = nn.Conv2d(spec.in_channels, w, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = inner(w, w)
        self.bn2 = nn.BatchNorm2d(w)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = inner(w, 2 * w)
        self.bn3 = nn.BatchNorm2d(2 * w)
        self.relu = nn.ReLU()
        if spec.head == "gap":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(2 * w, 64),
                nn.ReLU(),
                nn.Dropout(spec.dropout),
                nn.Linear(64, 1),
            )
        else:  # the authors' head: flatten + FC 2048 -> 512 -> 64 -> 1 for 9x9 windows
            pooled = spec.window // 2
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(2 * w * pooled * pooled, 512),
                nn.ReLU(),
                nn.Dropout(spec.dropout),
                nn.Linear(512, 64),
                nn.ReLU(),
                nn.Linear(64, 1),
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before the head (N, 2w, window//2, window//2)."""
        # Channels-last (NHWC) memory: oneDNN's convolutions, batch norm and pooling, and the
        # deformable layers' sampling table, are all faster on it (a training step 1.15-1.3x
        # on a CPU; README, Benchmarks). The same values to rounding; a no-op if x already is.
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.pool(x)
        return self.relu(self.bn3(self.conv3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N,) for windows of shape (N, C, window, window)."""
        return self.head(self.features(x)).squeeze(1)

    def deformable_layers(self) -> dict[str, DeformConv2d]:
        """Named deformable layers (empty for CNN / GK-CNN)."""
        return {name: m for name, m in self.named_children() if isinstance(m, DeformConv2d)}

    def conv_layers(self) -> dict[str, nn.Module]:
        """Named 3x3 layers that explanations may target."""
        return {"conv1": self.conv1, "conv2": self.conv2, "conv3": self.conv3}


def build_network(spec: ModelSpec) -> AnomalyNet:
    """Build a freshly initialised network for ``spec``, its 4-D weights channels-last (the
    memory format its layers compute in; :meth:`AnomalyNet.features`).

    The class is the one the kind's registry entry names (``fits``), an :class:`AnomalyNet`.
    """
    network_class = registry.load_class(registry.model_kind(spec.kind))
    if not issubclass(network_class, AnomalyNet):
        raise TypeError(f"model {spec.kind!r}: {network_class.__name__} is not an AnomalyNet")
    net = network_class(spec)
    return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
