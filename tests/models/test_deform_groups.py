"""Weight groups in the deformable convolution (``weight`` of shape ``(Cout, Cin/wg, kh, kw)``).

A grouped weight equals the ungrouped op with a block-diagonal weight (zeros between groups),
which the other deform tests check against an independent reference and torchvision; here the
grouped op must match that, in the output and every gradient, on both implementations and the
forward-only path, for weight groups that divide, equal, or cut across the offset groups.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from gkdcn.models.deform import DeformConv2d, deform_conv2d

IMPLS = ("fused", "generic")

# (n, c_in, c_out, h, w, offset groups, weight groups)
GROUP_CASES = [
    (2, 4, 6, 5, 6, 2, 2),  # one weight group per offset group (the stacked networks)
    (1, 6, 6, 5, 5, 3, 1),  # several offset groups in one weight group: ungrouped
    (2, 6, 4, 4, 5, 1, 2),  # weight groups finer than the offset groups
    (1, 6, 6, 5, 4, 2, 3),  # neither divides the other
    (2, 8, 4, 5, 5, 4, 2),  # two offset groups per weight group
]


def _inputs(case: tuple[int, ...], seed: int) -> dict[str, Tensor]:
    n, c_in, c_out, h, w, g, wg = case
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {
        "input": randn(n, c_in, h, w),
        "offset": randn(n, 2 * g * 9, h, w) * 1.5,
        "weight": randn(c_out, c_in // wg, 3, 3),
        "bias": randn(c_out),
        "mask": torch.rand(n, g * 9, h, w, generator=gen, dtype=torch.float64),
    }


def _block_diagonal(weight: Tensor, groups: int) -> Tensor:
    """The ungrouped weight ``(Cout, Cin, kh, kw)`` that a grouped one stands for."""
    c_out, per_in = weight.shape[:2]
    per_out = c_out // groups
    full = weight.new_zeros(c_out, per_in * groups, *weight.shape[2:])
    for j in range(groups):
        rows = slice(j * per_out, (j + 1) * per_out)
        full[rows, j * per_in : (j + 1) * per_in] = weight[rows]
    return full


def _run(tensors: dict[str, Tensor], **kwargs: object) -> Tensor:
    return deform_conv2d(
        tensors["input"],
        tensors["offset"],
        tensors["weight"],
        tensors["bias"],
        padding=1,
        mask=tensors["mask"],
        **kwargs,  # type: ignore[arg-type]
    )


def _grads(tensors: dict[str, Tensor], **kwargs: object) -> list[Tensor]:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    out = _run(leaves, **kwargs)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    return [out.detach(), *torch.autograd.grad(out, list(leaves.values()), upstream)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GROUP_CASES, ids=lambda c: "g{5}-wg{6}".format(*c))
def test_grouped_weight_equals_block_diagonal_weight(case: tuple[int, ...], impl: str) -> None:
    wg = case[6]
    tensors = _inputs(case, seed=1)
    grouped = _grads(tensors, _impl=impl)
    full = dict(tensors, weight=_block_diagonal(tensors["weight"], wg))
    dense = _grads(full, _impl=impl)
    names = ["output", "input", "offset", "weight", "bias", "mask"]
    for name, a, b in zip(names, grouped, dense, strict=True):
        if name == "weight":  # the grouped weight's gradient is the blocks' gradient
            per_out, per_in = a.shape[0] // wg, a.shape[1]
            b = torch.cat(
                [
                    b[j * per_out : (j + 1) * per_out, j * per_in : (j + 1) * per_in]
                    for j in range(wg)
                ]
            )
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    with torch.no_grad():
        fast = _run(tensors)
    torch.testing.assert_close(fast, grouped[0], rtol=1e-10, atol=1e-10)


def test_grouped_weight_matches_torchvision() -> None:
    ops = pytest.importorskip("torchvision.ops")
    tensors = _inputs(GROUP_CASES[0], seed=2)
    ours = _grads(tensors)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    out = ops.deform_conv2d(
        leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"], padding=1,
        mask=leaves["mask"],
    )  # fmt: skip
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    theirs = [out.detach(), *torch.autograd.grad(out, list(leaves.values()), upstream)]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_grouped_layer_is_independent_layers_side_by_side() -> None:
    # A layer with groups=S and S offset groups is S independent layers on S channel blocks.
    torch.manual_seed(3)
    parts = [DeformConv2d(4, 6, offset_groups=1) for _ in range(3)]
    for part in parts:  # non-zero branches, so offsets and masks differ per member
        torch.nn.init.normal_(part.offset_conv.weight, std=0.3)
        torch.nn.init.normal_(part.mask_conv.weight, std=0.3)
    layer = DeformConv2d(12, 18, offset_groups=3, groups=3)
    with torch.no_grad():
        for name, param in layer.named_parameters():
            param.copy_(torch.cat([dict(p.named_parameters())[name] for p in parts]))
    x = torch.randn(5, 12, 7, 7)
    expected = torch.cat([p(x[:, 4 * i : 4 * (i + 1)]) for i, p in enumerate(parts)], dim=1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_bad_weight_groups_raise() -> None:
    x, off = torch.randn(1, 6, 5, 5), torch.zeros(1, 18, 5, 5)
    with pytest.raises(ValueError, match="does not divide"):
        deform_conv2d(x, off, torch.randn(4, 4, 3, 3), padding=1)
    with pytest.raises(ValueError, match="not divisible"):
        deform_conv2d(x, off, torch.randn(5, 3, 3, 3), padding=1)
    with pytest.raises(ValueError, match="groups"):
        DeformConv2d(6, 6, offset_groups=1, groups=2)
