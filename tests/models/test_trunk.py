"""One layer table for the trunk: AnomalyNet and its stacked twin are both built from it."""

from __future__ import annotations

import pytest
import torch

from gkdcn.models import nets
from gkdcn.models.nets import TRUNK, ModelSpec, TrunkLayer, build_network
from gkdcn.models.stacked import StackedNet, stack_networks


def test_both_networks_have_the_tables_layers() -> None:
    spec = ModelSpec(kind="dcn", in_channels=3, window=7, width=8)
    names = list(dict.fromkeys(layer.name for layer in TRUNK))
    net, stacked = build_network(spec), StackedNet(spec, 2)
    assert [n for n, _ in net.named_children() if n != "head"] == [*names[:2], *names[3:], "relu"]
    assert [n for n, _ in stacked.named_children()] == [n for n, _ in net.named_children()]
    assert list(net.deformable_layers()) == ["conv2", "conv3"]
    assert list(net.conv_layers()) == ["conv1", "conv2", "conv3"]


@pytest.mark.parametrize("kind", ["cnn", "dcn"])
def test_a_backbone_change_reaches_the_stack(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A deeper trunk is one edit of TRUNK: the stacked members still compute the solo
    networks' logits."""
    deeper = (
        *TRUNK,
        TrunkLayer("conv4", "inner", 2, 2),
        TrunkLayer("bn4", "norm", 2, 2),
        TrunkLayer("relu", "relu"),
    )
    monkeypatch.setattr(nets, "TRUNK", deeper)
    spec = ModelSpec(kind=kind, in_channels=3, window=7, width=4)
    torch.manual_seed(0)
    members = [build_network(spec) for _ in range(3)]
    assert "conv4" in dict(members[0].named_children())
    stacked = stack_networks(members)
    assert "conv4" in dict(stacked.named_children())
    x = [torch.randn(5, 3, 7, 7) for _ in members]
    stacked.eval()
    with torch.no_grad():
        out = stacked(torch.cat(x, dim=1))
        expected = torch.stack([net.eval()(xi) for net, xi in zip(members, x, strict=True)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
