"""Several networks of one architecture trained at once as one model (one member per seed).

:class:`StackedNet` holds ``S`` :class:`~gkdcn.models.nets.AnomalyNet` members side by side:
member ``s`` owns channel block ``s`` of every layer. Its trunk is built from the same layer
table, :data:`gkdcn.models.nets.TRUNK` (:func:`~gkdcn.models.nets.trunk_modules` with
``members=S``), and run by the same :func:`~gkdcn.models.nets.run_trunk`. Convolutions are grouped (``groups=S``),
batch norm runs over ``S*C`` channels (batch norm is per channel, so this is exactly per-member
batch norm), the deformable layers have ``S`` offset groups and ``S`` weight groups, and each
linear layer of the head is a batched matrix product. The input is the members' batches side by
side along the channel axis, ``(N, S*C, w, w)``, and the output their logits ``(S, N)``. Nothing
mixes members: the gradient of a sum of per-member losses is each member's own gradient.

Dropout draws from the global torch RNG as the solo network's ``nn.Dropout`` does, but from one
RNG state per member (:attr:`StackedNet.dropout_states`), so each member gets exactly the masks
it would get training alone. State dicts use the member's own parameter names
(:func:`stack_states`, :meth:`StackedNet.member_state`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gkdcn.models.nets import AnomalyNet, ModelSpec, build_network, run_trunk, trunk_modules


class GroupedLinear(nn.Module):
    """``S`` linear layers applied to ``(S, N, in)``: ``weight (S, out, in)``, ``bias (S, out)``."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features))

    def forward(self, x: Tensor) -> Tensor:
        """``(S, N, in)`` -> ``(S, N, out)``, each member through its own layer."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedNet(nn.Module):
    """``members`` copies of :class:`AnomalyNet` for ``spec`` as one grouped network."""

    def __init__(self, spec: ModelSpec, members: int) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"a stack needs at least one member, got {members}")
        self.spec = spec
        self.members = members
        # The member's trunk (nets.TRUNK), each layer grouped over the members.
        for name, module in trunk_modules(spec, members).items():
            self.add_module(name, module)
        # The member's head, layer by layer: linear layers become grouped ones, the rest is
        # applied as is (ReLU) or per member (dropout).
        template = AnomalyNet(spec).head
        layers: list[nn.Module] = []
        for layer in template:
            if isinstance(layer, nn.Linear):
                layers.append(GroupedLinear(members, layer.in_features, layer.out_features))
            else:
                layers.append(layer)
        self.head = nn.Sequential(*layers)
        #: One torch RNG state per member for its dropout masks (None: use the global RNG).
        self.dropout_states: list[Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(S, N)`` for the members' windows side by side, ``(N, S*C, w, w)``."""
        x = run_trunk(self, x)
        n = x.shape[0]
        h: Tensor | None = None
        for layer in self.head:
            if isinstance(layer, nn.AdaptiveAvgPool2d):
                x = layer(x)
            elif isinstance(layer, nn.Flatten):
                # Member s's features are its channel block: (N, S*F) -> (S, N, F).
                h = x.reshape(n, self.members, -1).transpose(0, 1)
            elif isinstance(layer, nn.Dropout):
                assert h is not None
                h = self._dropout(h, layer.p)
            else:
                assert h is not None
                h = layer(h)
        assert h is not None
        return h.squeeze(2)

    def _dropout(self, h: Tensor, p: float) -> Tensor:
        if not self.training or p == 0:
            return h
        if self.dropout_states is None:
            return torch.stack([F.dropout(h[s], p, True) for s in range(self.members)])
        out = []
        for s in range(self.members):
            # The same shape and the same RNG state as the member's own nn.Dropout call.
            torch.set_rng_state(self.dropout_states[s])
            out.append(F.dropout(h[s].contiguous(), p, True))
            self.dropout_states[s] = torch.get_rng_state()
        return torch.stack(out)

    def member_state(self, index: int) -> dict[str, Tensor]:
        """Member ``index``'s state dict, as :class:`AnomalyNet` names and shapes it (copies)."""
        if not 0 <= index < self.members:
            raise IndexError(f"member {index} of a stack of {self.members}")
        out = {}
        for name, value in self.state_dict().items():
            if name.endswith("num_batches_tracked"):
                out[name] = value.clone()
            elif name.startswith("head."):
                out[name] = value[index].clone()
            else:
                size = value.shape[0] // self.members
                out[name] = value[index * size : (index + 1) * size].clone()
        return out

    def member(self, index: int) -> AnomalyNet:
        """Member ``index`` as a stand-alone network (its own copy of the weights)."""
        net = build_network(self.spec)
        net.load_state_dict(self.member_state(index))
        return net.to(next(self.parameters()).device)


def stack_states(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The :class:`StackedNet` state dict holding the given :class:`AnomalyNet` states."""
    out = {}
    for name in states[0]:
        values = [state[name] for state in states]
        if name.endswith("num_batches_tracked"):
            out[name] = values[0].clone()
        elif name.startswith("head."):
            out[name] = torch.stack(values)
        else:
            out[name] = torch.cat(values)
    return out


def stack_networks(nets: Sequence[AnomalyNet]) -> StackedNet:
    """One :class:`StackedNet` whose members start as copies of ``nets`` (same spec)."""
    spec = nets[0].spec
    if any(net.spec != spec for net in nets):
        raise ValueError("only networks of one spec can be stacked")
    stacked = StackedNet(spec, len(nets))
    stacked.load_state_dict(stack_states([net.state_dict() for net in nets]))
    device = next(nets[0].parameters()).device
    return stacked.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
