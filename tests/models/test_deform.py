"""The deformable convolution: an independent slow reference, torchvision parity, the layer."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gkdcn.models import deform
from gkdcn.models.deform import DeformConv2d, deform_conv2d
from gkdcn.models.sampling_kernel import scatter_and_corner_dots

IMPLS = ("fused", "generic")


class Case(NamedTuple):
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    k: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    def out_size(self) -> tuple[int, int]:
        oh = self.h + 2 * self.padding[0] - self.dilation[0] * (self.k[0] - 1) - 1
        ow = self.w + 2 * self.padding[1] - self.dilation[1] * (self.k[1] - 1) - 1
        return oh // self.stride[0] + 1, ow // self.stride[1] + 1


def case_id(case: Case) -> str:
    return (
        f"n{case.n}c{case.c_in}-{case.c_out}_{case.h}x{case.w}_k{case.k[0]}{case.k[1]}"
        f"_s{case.stride[0]}{case.stride[1]}_p{case.padding[0]}{case.padding[1]}"
        f"_d{case.dilation[0]}{case.dilation[1]}_g{case.groups}"
    )


CASES = [
    Case(2, 3, 4, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    Case(1, 4, 3, 7, 7, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    Case(1, 2, 2, 6, 5, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    Case(2, 4, 2, 5, 4, (2, 3), (1, 2), (0, 1), (1, 1), 2),
]


def make_inputs(
    case: Case, offset_scale: float, seed: int, dtype: torch.dtype = torch.float64
) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    oh, ow = case.out_size()
    taps = case.k[0] * case.k[1]

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    return {
        "input": randn(case.n, case.c_in, case.h, case.w),
        "offset": randn(case.n, 2 * case.groups * taps, oh, ow) * offset_scale,
        "weight": randn(case.c_out, case.c_in, *case.k),
        "bias": randn(case.c_out),
        "mask": torch.rand(case.n, case.groups * taps, oh, ow, generator=gen, dtype=dtype),
    }


def run_op(op: object, case: Case, tensors: dict[str, Tensor], **kwargs: object) -> Tensor:
    assert callable(op)
    return op(
        tensors["input"],
        tensors["offset"],
        tensors["weight"],
        tensors["bias"],
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        mask=tensors["mask"],
        **kwargs,
    )


def grads(op: object, case: Case, tensors: dict[str, Tensor], **kwargs: object) -> list[Tensor]:
    """Output followed by its gradients w.r.t. every tensor, for a fixed random upstream grad."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    out = run_op(op, case, leaves, **kwargs)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(99), dtype=out.dtype)
    return [out.detach(), *torch.autograd.grad(out, list(leaves.values()), upstream)]


def reference_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
) -> Tensor:
    """Slow, obviously-correct DCNv2: explicit loops over pixels and taps, scalar bilinear."""
    n, c_in, height, width = input.shape
    c_out, _, kh, kw = weight.shape
    oh, ow = offset.shape[2:]
    groups = offset.shape[1] // (2 * kh * kw)
    per_group = c_in // groups

    def bilinear(img: Tensor, y: Tensor, x: Tensor) -> Tensor:
        # img (c, H, W); y, x 0-d tensors. Corners outside the image read 0. torchvision also
        # returns 0 when y <= -1, y >= H, x <= -1 or x >= W, which the corner rule already
        # implies; its offset gradient is taken from the corners alone (so at exactly y = -1 it
        # sees row 0), which autograd through this function reproduces.
        y0, x0 = math.floor(float(y.detach())), math.floor(float(x.detach()))
        ly, lx = y - y0, x - x0
        total = img.new_zeros(img.shape[0])
        for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
            for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
                if 0 <= yy < height and 0 <= xx < width:
                    total = total + wy * wx * img[:, yy, xx]
        return total

    rows = []
    for b in range(n):
        out_b = []
        for i_out in range(oh):
            out_row = []
            for j_out in range(ow):
                acc = bias.clone() if bias is not None else input.new_zeros(c_out)
                for g in range(groups):
                    chans = slice(g * per_group, (g + 1) * per_group)
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            dy = offset[b, 2 * (g * kh * kw + k), i_out, j_out]
                            dx = offset[b, 2 * (g * kh * kw + k) + 1, i_out, j_out]
                            y = i_out * stride[0] - padding[0] + i * dilation[0] + dy
                            x = j_out * stride[1] - padding[1] + j * dilation[1] + dx
                            val = bilinear(input[b, chans], y, x)
                            if mask is not None:
                                val = val * mask[b, g * kh * kw + k, i_out, j_out]
                            acc = acc + weight[:, chans, i, j] @ val
                out_row.append(acc)
            out_b.append(torch.stack(out_row, dim=-1))
        rows.append(torch.stack(out_b, dim=-2))
    return torch.stack(rows)


# --- against the slow reference (always runs) ---------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference_forward_and_gradients(case: Case, impl: str) -> None:
    # Offsets of scale 1.5 push many samples past the border, some entirely outside.
    tensors = make_inputs(case, offset_scale=1.5, seed=1)
    ours = grads(deform_conv2d, case, tensors, _impl=impl)
    ref = grads(reference_deform_conv2d, case, tensors)
    names = ["output", "input", "offset", "weight", "bias", "mask"]
    for name, a, b in zip(names, ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_offsets_match_reference_including_offset_gradient(impl: str) -> None:
    # Integer sampling positions: the offset gradient uses the sample's cell and the next one.
    case = CASES[0]
    tensors = make_inputs(case, offset_scale=0.0, seed=2)
    ours = grads(deform_conv2d, case, tensors, _impl=impl)
    ref = grads(reference_deform_conv2d, case, tensors)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert ours[2].abs().sum() > 0  # the offset gradient at init is not zero


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl: str) -> None:
    case = Case(1, 2, 2, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2)
    tensors = make_inputs(case, offset_scale=0.0, seed=3)
    gen = torch.Generator().manual_seed(4)
    # Integer part in [-2, 2] (some samples leave the image) plus a fraction kept away from
    # integers, where bilinear sampling has a kink and finite differences are meaningless.
    shape = tensors["offset"].shape
    whole = torch.randint(-2, 3, shape, generator=gen).double()
    tensors["offset"] = whole + 0.1 + 0.8 * torch.rand(shape, generator=gen, dtype=torch.float64)
    leaves = tuple(t.requires_grad_() for t in tensors.values())

    def fn(x: Tensor, off: Tensor, w: Tensor, b: Tensor, m: Tensor) -> Tensor:
        return deform_conv2d(x, off, w, b, padding=1, mask=m, _impl=impl)

    # fast_mode checks random projections of the Jacobian: as able to fail, far fewer calls.
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, fast_mode=True)


def test_optional_bias_and_mask() -> None:
    case = CASES[1]
    tensors = make_inputs(case, offset_scale=1.0, seed=5)
    tensors_no = dict(tensors, bias=None, mask=None)
    ours = run_op(deform_conv2d, case, tensors_no)  # type: ignore[arg-type]
    ref = run_op(reference_deform_conv2d, case, tensors_no)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_fused_and_generic_agree_in_float32() -> None:
    case = Case(4, 16, 8, 9, 9, (3, 3), (1, 1), (1, 1), (1, 1), 2)
    tensors = make_inputs(case, offset_scale=2.0, seed=6, dtype=torch.float32)
    fused = grads(deform_conv2d, case, tensors, _impl="fused")
    generic = grads(deform_conv2d, case, tensors, _impl="generic")
    for a, b in zip(fused, generic, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch(impl: str) -> None:
    case = Case(0, 3, 4, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    out, grad_x, grad_off, grad_w, grad_b, grad_m = grads(
        deform_conv2d, case, make_inputs(case, 1.0, seed=18), _impl=impl
    )
    assert out.shape == (0, 4, 5, 6)
    assert grad_x.shape == (0, 3, 5, 6) and grad_off.shape == (0, 18, 5, 6)
    assert grad_m.shape == (0, 9, 5, 6)
    assert grad_w.abs().max() == 0 and grad_b.abs().max() == 0


def test_samples_far_outside_give_bias_and_no_offset_gradient() -> None:
    case = CASES[0]
    tensors = make_inputs(case, offset_scale=0.0, seed=7)
    tensors["offset"] = tensors["offset"] + 50.0
    out, grad_x, grad_off, *_ = grads(deform_conv2d, case, tensors)
    torch.testing.assert_close(out, tensors["bias"].view(1, -1, 1, 1).expand_as(out))
    assert grad_x.abs().max() == 0
    assert grad_off.abs().max() == 0


def test_blocked_cpu_path_matches_single_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # On CPU the batch is processed a few images at a time; force one image per block.
    case = Case(3, 4, 3, 6, 5, (3, 3), (2, 1), (1, 1), (1, 1), 2)
    tensors = make_inputs(case, offset_scale=1.5, seed=15)
    whole = grads(deform_conv2d, case, tensors)
    monkeypatch.setattr(deform, "_BLOCK_BYTES", 1)
    blocked = grads(deform_conv2d, case, tensors)
    ref = grads(reference_deform_conv2d, case, tensors)
    for a, b, c in zip(blocked, whole, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(run_op(deform_conv2d, case, tensors), whole[0])


# --- the forward-only path (no autograd: prediction) -------------------------------------------

BORDER_CHOICES = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, -0.5, 0.5, -1.25, 1e-7)


@pytest.mark.parametrize("offsets", ["fractional", "borders", "far"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_no_grad_forward_matches_reference_and_autograd_path(case: Case, offsets: str) -> None:
    # Without autograd the op samples the unpadded input with clamped rows and zeroed weights;
    # exact border positions, samples partly and wholly outside must all give the same output.
    tensors = make_inputs(case, offset_scale=1.5, seed=30)
    if offsets == "borders":
        gen = torch.Generator().manual_seed(31)
        choices = torch.tensor(BORDER_CHOICES, dtype=torch.float64)
        tensors["offset"] = choices[
            torch.randint(0, len(choices), tensors["offset"].shape, generator=gen)
        ]
    elif offsets == "far":
        tensors["offset"] = tensors["offset"] * 40.0
    with torch.no_grad():
        fast = run_op(deform_conv2d, case, tensors)
    autograd_out = grads(deform_conv2d, case, tensors)[0]
    ref = run_op(reference_deform_conv2d, case, tensors)
    torch.testing.assert_close(fast, autograd_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


def test_no_grad_forward_blocks_groups_layouts_and_optional_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = Case(5, 4, 3, 6, 5, (3, 3), (2, 1), (1, 1), (1, 1), 2)
    tensors = make_inputs(case, offset_scale=1.5, seed=32)
    with torch.no_grad():
        whole = run_op(deform_conv2d, case, tensors)
        monkeypatch.setattr(deform, "_NO_GRAD_BLOCK_BYTES", 1)  # one image per block
        blocked = run_op(deform_conv2d, case, tensors)
        cl = dict(tensors, input=tensors["input"].to(memory_format=torch.channels_last))
        blocked_cl = run_op(deform_conv2d, case, cl)
        bare = run_op(deform_conv2d, case, dict(tensors, bias=None, mask=None))  # type: ignore[arg-type]
        empty = run_op(
            deform_conv2d,
            case,
            {k: v[:0] if v.dim() == 4 and k != "weight" else v for k, v in tensors.items()},
        )
    ref = run_op(reference_deform_conv2d, case, tensors)
    ref_bare = run_op(reference_deform_conv2d, case, dict(tensors, bias=None, mask=None))  # type: ignore[arg-type]
    torch.testing.assert_close(whole, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-12)
    assert blocked_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(blocked_cl, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bare, ref_bare, rtol=1e-10, atol=1e-10)
    assert empty.shape == (0, 3, *case.out_size())


def test_module_forward_without_autograd_equals_with() -> None:
    # Without autograd the layer runs its offset and mask branches as one convolution.
    torch.manual_seed(33)
    layer = DeformConv2d(16, 24, kernel_size=3, padding=1, offset_groups=2)
    with torch.no_grad():
        for branch in (layer.offset_conv, layer.mask_conv):
            branch.weight.normal_(0.0, 0.3)
            assert branch.bias is not None
            branch.bias.normal_(0.0, 0.3)
    x = torch.randn(6, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    with_grad = layer(x)
    assert with_grad.requires_grad
    with torch.inference_mode():
        fast = layer(x)
    assert not fast.requires_grad
    torch.testing.assert_close(fast, with_grad.detach(), rtol=1e-5, atol=1e-5)
    _, offset, _ = layer.forward_with_sampling(x)
    assert offset.abs().max() > 0.5  # the offsets really move the samples


def test_portable_corner_dots_match_fused_kernel() -> None:
    # The fallback used where the private embedding_bag kernel is missing.
    gen = torch.Generator().manual_seed(16)
    table = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    indices = torch.randint(0, 50, (5000, 4), generator=gen)
    grad = torch.randn(5000, 6, generator=gen, dtype=torch.float64)
    expected = (table[indices] * grad.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(deform._corner_dots(grad, table, indices), expected)
    torch.testing.assert_close(
        deform._corner_dots_gather(grad, table, indices.reshape(-1)), expected
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("scatter", "want_dots"), [(True, True), (True, False), (False, True)])
def test_compiled_sampling_backward_matches_pytorch_kernels(
    dtype: torch.dtype, scatter: bool, want_dots: bool
) -> None:
    # The CPU backward's compiled pass against the PyTorch kernels the other devices use, with
    # many samples sharing table rows (the scatter must add, not overwrite).
    gen = torch.Generator().manual_seed(21)
    rows, channels, samples = 300, 7, 4000
    delta = (0, 1, 20, 21)
    idx00 = torch.randint(0, rows - 21, (samples,), generator=gen)
    weights = torch.rand(samples, 4, generator=gen, dtype=dtype)
    grad = torch.randn(samples, channels, generator=gen, dtype=dtype)
    table = torch.randn(rows, channels, generator=gen, dtype=dtype)
    grad_table = torch.full((rows, channels), 0.5, dtype=dtype) if scatter else None
    dots = scatter_and_corner_dots(grad, weights, idx00, delta, table, grad_table, want_dots)

    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {}
    if scatter:
        expected_table = torch.full((rows, channels), 0.5, dtype=dtype)
        deform._scatter_corners(grad, weights, idx00, delta, expected_table)
        assert grad_table is not None
        torch.testing.assert_close(grad_table, expected_table, **tol)
    if want_dots:
        indices = deform._corner_indices(idx00, delta)
        assert dots is not None and dots.dtype == dtype
        torch.testing.assert_close(dots, deform._corner_dots(grad, table, indices), **tol)
    else:
        assert dots is None


def test_compiled_sampling_backward_without_a_writable_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A read-only install with no writable user cache: numba refuses cache=True there, so the
    # kernel must compile in memory instead of failing the training.
    numba_caching = pytest.importorskip("numba.core.caching")
    from gkdcn.models import sampling_kernel

    monkeypatch.setattr(numba_caching.CacheImpl, "_locator_classes", [])
    kernel = sampling_kernel._kernel.__wrapped__()
    grad = np.arange(6, dtype=np.float64).reshape(2, 3)
    weights = np.full((2, 4), 0.5)
    table = np.ones((4, 3))
    grad_table = np.zeros((4, 3))
    dots = np.empty((2, 4))
    idx00 = np.array([0, 1])
    kernel(grad, weights, idx00, np.array([0, 1, 1, 2]), table, grad_table, dots, True, True)
    np.testing.assert_allclose(dots, [[3.0] * 4, [12.0] * 4])
    # rows 0..3 get corners (0,1,1,2) of sample 0 and (1,2,2,3) of sample 1, each 0.5 * grad
    expected = np.zeros((4, 3))
    for s, rows in ((0, (0, 1, 1, 2)), (1, (1, 2, 2, 3))):
        for r in rows:
            expected[r] += 0.5 * grad[s]
    np.testing.assert_allclose(grad_table, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_tensors_backward_on_cpu(dtype: torch.dtype) -> None:
    # Half-precision tensors given directly (no autocast) cannot go through NumPy to the compiled
    # loop; their backward takes PyTorch's kernels and agrees with float32 to their precision.
    gen = torch.Generator().manual_seed(5)
    shapes = {
        "x": (2, 3, 8, 8),
        "offset": (2, 18, 6, 6),
        "weight": (4, 3, 3, 3),
        "mask": (2, 9, 6, 6),
    }
    base = {k: torch.randn(v, generator=gen).to(dtype).double() for k, v in shapes.items()}
    base["mask"] = base["mask"].sigmoid().to(dtype).double()

    def grads_in(precision: torch.dtype) -> list[Tensor]:
        leaves = {k: v.to(precision).requires_grad_() for k, v in base.items()}
        out = deform_conv2d(leaves["x"], leaves["offset"], leaves["weight"], mask=leaves["mask"])
        out.float().square().sum().backward()
        return [leaves[k].grad.float() for k in shapes]  # type: ignore[union-attr]

    for got, want in zip(grads_in(dtype), grads_in(torch.float32), strict=True):
        assert torch.isfinite(got).all()
        # Relative to the whole gradient, in units of the dtype's rounding: the offset gradient
        # is made of differences of corner dots, which lose digits (bfloat16: 6 %, float16: 0.4 %).
        assert (got - want).norm() <= 25 * torch.finfo(dtype).eps * want.norm()


def test_only_some_inputs_need_grad() -> None:
    case = CASES[1]
    tensors = make_inputs(case, offset_scale=1.5, seed=17)
    ref = grads(reference_deform_conv2d, case, tensors)
    names = list(tensors)
    for wanted in ("input", "offset", "weight", "mask"):
        leaves = {k: v.detach().clone().requires_grad_(k == wanted) for k, v in tensors.items()}
        out = run_op(deform_conv2d, case, leaves)
        upstream = torch.randn(
            out.shape, generator=torch.Generator().manual_seed(99), dtype=out.dtype
        )
        (got,) = torch.autograd.grad(out, leaves[wanted], upstream)
        torch.testing.assert_close(got, ref[1 + names.index(wanted)], rtol=1e-10, atol=1e-10)


# --- against ordinary convolution ----------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_zero_offsets_unit_mask_equal_conv2d(case: Case, impl: str) -> None:
    tensors = make_inputs(case, offset_scale=0.0, seed=8, dtype=torch.float32)
    tensors["mask"] = torch.ones_like(tensors["mask"])
    ours = run_op(deform_conv2d, case, tensors, _impl=impl)
    conv = F.conv2d(
        tensors["input"],
        tensors["weight"],
        tensors["bias"],
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
    )
    torch.testing.assert_close(ours, conv, rtol=1e-5, atol=1e-5)


def test_memory_format_follows_input() -> None:
    case = CASES[0]
    tensors = make_inputs(case, offset_scale=1.0, seed=9)
    out = run_op(deform_conv2d, case, tensors)
    assert out.is_contiguous()
    tensors_cl = dict(tensors, input=tensors["input"].to(memory_format=torch.channels_last))
    out_cl = run_op(deform_conv2d, case, tensors_cl)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_cl, out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"offset": torch.zeros(2, 17, 5, 6)}, "multiple of"),
        ({"offset": torch.zeros(2, 18, 4, 6)}, "offset must have shape"),
        ({"mask": torch.zeros(2, 8, 5, 6)}, "mask must have shape"),
        ({"weight": torch.zeros(4, 2, 3, 3)}, "input channels per group"),
        ({"bias": torch.zeros(5)}, "bias must have shape"),
        ({"offset": torch.zeros(2, 36, 5, 6), "mask": None}, "divisible by offset groups"),
        ({"offset": torch.zeros(2, 18, 5, 6, dtype=torch.float64)}, "offset is torch.float64"),
    ],
)
def test_bad_shapes_raise(change: dict[str, Tensor | None], message: str) -> None:
    tensors: dict[str, Tensor | None] = dict(
        make_inputs(CASES[0], 0.0, seed=10, dtype=torch.float32)
    )
    tensors.update(change)
    with pytest.raises(ValueError, match=message):
        run_op(deform_conv2d, CASES[0], tensors)  # type: ignore[arg-type]


# --- the layer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stride", "size", "expected"),
    [(1, 9, 9), (1, 4, 4), (2, 9, 5), (2, 4, 2)],
)
def test_module_init_and_output_size(stride: int, size: int, expected: int) -> None:
    torch.manual_seed(0)
    layer = DeformConv2d(6, 5, kernel_size=3, stride=stride, padding=1, offset_groups=2)
    for branch in (layer.offset_conv, layer.mask_conv):
        assert branch.weight.abs().max() == 0
        assert branch.bias is not None and branch.bias.abs().max() == 0
    assert layer.offset_conv.out_channels == 2 * 2 * 9
    assert layer.mask_conv.out_channels == 2 * 9
    assert layer.weight.abs().max() > 0
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == (
        (3, 3),
        (stride, stride),
        (1, 1),
        (1, 1),
    )
    x = torch.randn(3, 6, size, size)
    out, offset, mask = layer.forward_with_sampling(x)
    assert out.shape == (3, 5, expected, expected)
    assert offset.shape == (3, 36, expected, expected)
    assert mask.shape == (3, 18, expected, expected)
    assert offset.abs().max() == 0
    torch.testing.assert_close(mask, torch.full_like(mask, 0.5))
    # A fresh layer is half an ordinary convolution (plus the bias).
    conv = F.conv2d(x, layer.weight, None, stride=stride, padding=1)
    assert layer.bias is not None
    torch.testing.assert_close(out, 0.5 * conv + layer.bias.view(1, -1, 1, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), out)


def test_module_learns_offsets_from_zero_init() -> None:
    # Zero-initialised branches must still receive gradient (the integer-position offset gradient).
    torch.manual_seed(1)
    layer = DeformConv2d(4, 3, bias=False)
    x = torch.randn(2, 4, 6, 6)
    layer(x).square().sum().backward()
    assert layer.offset_conv.weight.grad is not None
    assert layer.offset_conv.weight.grad.abs().max() > 0
    assert layer.mask_conv.weight.grad is not None
    assert layer.mask_conv.weight.grad.abs().max() > 0
    assert layer.bias is None


def test_module_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="offset_groups"):
        DeformConv2d(6, 4, offset_groups=4)


# --- torchvision parity (only where torchvision is installed) ------------------------------------


def tv_op() -> object:
    ops = pytest.importorskip("torchvision.ops")
    return ops.deform_conv2d


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("offset_scale", [2.0, 0.0], ids=["fractional", "zero"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torchvision_float64(case: Case, offset_scale: float, impl: str) -> None:
    tv = tv_op()
    tensors = make_inputs(case, offset_scale=offset_scale, seed=11)
    ours = grads(deform_conv2d, case, tensors, _impl=impl)
    theirs = grads(tv, case, tensors)
    names = ["output", "input", "offset", "weight", "bias", "mask"]
    for name, a, b in zip(names, ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_matches_torchvision_float32_project_shape() -> None:
    tv = tv_op()
    case = Case(8, 16, 24, 9, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    tensors = make_inputs(case, offset_scale=1.0, seed=12, dtype=torch.float32)
    tensors["weight"] = tensors["weight"] / 12.0  # keep outputs O(1) so atol means something
    ours = grads(deform_conv2d, case, tensors)
    theirs = grads(tv, case, tensors)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_matches_torchvision_at_exact_borders() -> None:
    # Positions exactly on -1, 0, H-1 and H (the edges of torchvision's bilinear rule).
    tv = tv_op()
    case = Case(1, 2, 2, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    tensors = make_inputs(case, offset_scale=0.0, seed=13)
    gen = torch.Generator().manual_seed(14)
    choices = torch.tensor(
        [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, -0.5, 0.5], dtype=torch.float64
    )
    pick = torch.randint(0, len(choices), tensors["offset"].shape, generator=gen)
    tensors["offset"] = choices[pick]
    ours = grads(deform_conv2d, case, tensors)
    theirs = grads(tv, case, tensors)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
