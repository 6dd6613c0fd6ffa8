"""The paper's four networks: CNN, DCN, GK-CNN and GK-DCN on one backbone.

Only the two inner 3x3 layers differ: plain convolutions in CNN / GK-CNN, modulated deformable
convolutions in DCN / GK-DCN. The "GK" variants differ from their plain twins only in the training
loss (see :mod:`gkdcn.models.losses`), so the same network class serves all four.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

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


class TrunkLayer(NamedTuple):
    """One step of the trunk: ``name`` (the attribute; stable, since explanations and saved
    weights refer to it), ``op``, and the channels it takes and gives in units of the width
    (:data:`INPUT`: the input channels). ``inner`` layers are deformable in DCN / GK-DCN."""

    name: str
    op: Literal["conv", "inner", "norm", "relu", "pool"]
    cin: int = 1
    cout: int = 1


INPUT = 0  # channel units of the input: ModelSpec.in_channels
CONVS = ("conv", "inner")  # the 3x3 convolutions of the trunk
#: The trunk, step by step, for :class:`AnomalyNet` and its stacked twin
#: (:class:`gkdcn.models.stacked.StackedNet`) alike.
TRUNK: tuple[TrunkLayer, ...] = (
    TrunkLayer("conv1", "conv", INPUT, 1),
    TrunkLayer("bn1", "norm", 1, 1),
    TrunkLayer("relu", "relu"),
    TrunkLayer("conv2", "inner", 1, 1),
    TrunkLayer("bn2", "norm", 1, 1),
    TrunkLayer("relu", "relu"),
    TrunkLayer("pool", "pool"),
    TrunkLayer("conv3", "inner", 1, 2),
    TrunkLayer("bn3", "norm", 2, 2),
    TrunkLayer("relu", "relu"),
)


def trunk_channels(spec: ModelSpec) -> int:
    """Channels of the trunk's output (the head's input features before pooling)."""
    last = [layer for layer in TRUNK if layer.op in CONVS][-1]
    return last.cout * spec.width


def trunk_modules(spec: ModelSpec, members: int = 1) -> dict[str, nn.Module]:
    """The trunk's layers of :data:`TRUNK` by name, for one network, or for ``members``
    networks side by side (member ``s`` owns channel block ``s``: grouped convolutions, batch
    norm over every member's channels). Built in table order (the order their weights are drawn
    from the torch RNG), the one ReLU last."""

    def channels(units: int) -> int:
        return members * (spec.in_channels if units == INPUT else units * spec.width)

    def make(layer: TrunkLayer) -> nn.Module:
        cin, cout = channels(layer.cin), channels(layer.cout)
        if layer.op == "inner" and spec.deformable:
            return DeformConv2d(
                cin, cout, kernel_size=3, padding=1, offset_groups=members, groups=members
            )
        if layer.op in CONVS:
            return nn.Conv2d(cin, cout, kernel_size=3, padding=1, groups=members)
        if layer.op == "norm":
            return nn.BatchNorm2d(cout)
        if layer.op == "pool":
            return nn.MaxPool2d(2)
        raise ValueError(f"unknown trunk op {layer.op!r}")

    modules = {layer.name: make(layer) for layer in TRUNK if layer.op != "relu"}
    modules["relu"] = nn.ReLU()
    return modules


def run_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` through the trunk layers of ``net`` (built by :func:`trunk_modules`), in
    :data:`TRUNK` order."""
    # Channels-last (NHWC) memory: oneDNN's convolutions, batch norm and pooling, and the
    # deformable layers' sampling table, are all faster on it. The same values to rounding; a
    # no-op if x already is.
    x = x.contiguous(memory_format=torch.channels_last)
    for layer in TRUNK:
        x = getattr(net, layer.name)(x)
    return x


class AnomalyNet(nn.Module):
    """conv3x3(C->w) BN ReLU | 3x3(w->w) BN ReLU | maxpool 2 | 3x3(w->2w) BN ReLU | head -> logit.

    The trunk is :data:`TRUNK`; layer names are stable (``conv2`` is the first layer that can be
    deformable, ``conv3`` the second) because explanations and saved weights refer to them.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        for name, module in trunk_modules(spec).items():
            self.add_module(name, module)
        features = trunk_channels(spec)
        if spec.head == "gap":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(features, 64),
                nn.ReLU(),
                nn.Dropout(spec.dropout),
                nn.Linear(64, 1),
            )
        else:  # the authors' head: flatten + FC 2048 -> 512 -> 64 -> 1 for 9x9 windows
            pooled = spec.window // 2 ** sum(layer.op == "pool" for layer in TRUNK)
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(features * pooled * pooled, 512),
                nn.ReLU(),
                nn.Dropout(spec.dropout),
                nn.Linear(512, 64),
                nn.ReLU(),
                nn.Linear(64, 1),
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before the head (N, 2w, window//2, window//2)."""
        return run_trunk(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N,) for windows of shape (N, C, window, window)."""
        return self.head(self.features(x)).squeeze(1)

    def deformable_layers(self) -> dict[str, DeformConv2d]:
        """Named deformable layers (empty for CNN / GK-CNN)."""
        return {name: m for name, m in self.named_children() if isinstance(m, DeformConv2d)}

    def conv_layers(self) -> dict[str, nn.Module]:
        """Named 3x3 layers that explanations may target."""
        return {layer.name: getattr(self, layer.name) for layer in TRUNK if layer.op in CONVS}


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
