"""Modulated deformable convolution (DCNv2) in pure PyTorch, and the layer the networks use.

:func:`deform_conv2d` has exactly the semantics of ``torchvision.ops.deform_conv2d`` (output and
gradients agree to rounding), but needs no compiled extension and is much faster on CPU, where
torchvision's kernel builds its columns in serial loops.

How it works. Every output pixel ``(n, ho, wo)`` reads, for each offset group and kernel tap
``k = i*kw + j``, one bilinear sample of the input at ``(ho*stride - pad + i*dil + dy,
wo*stride - pad + j*dil + dx)``. The input is stored channels-last with a zero border (the
"table"), so each sample is a weighted sum of four rows of ``C / offset_groups`` contiguous values;
``F.embedding_bag`` computes those sums for all samples in one fused, multi-threaded kernel. The
resulting columns ``(N*Ho*Wo, kh*kw*C)`` meet the weight in one matrix product. Forward and backward
are written out in one autograd Function that works through the batch a few images at a time on
CPU, so the columns never exist in full (a training batch is one block, whose columns are kept
for the backward pass; larger batches rebuild theirs there) and each block is still in cache when
the matrix products read it. The backward's scatter of column gradients into the table and
the dot products that make the offset and mask gradients run on CPU as one compiled pass over
the samples (:mod:`gkdcn.models.sampling_kernel`), on other devices as PyTorch's fused kernels.
Calls that need no gradient (prediction, under ``torch.no_grad`` or
``torch.inference_mode``) take a forward-only path with the same samples and weights but less work
(:func:`_forward_no_grad`). :class:`DeformConv2d` runs its offset and mask branches as one
convolution. Under ``torch.autocast`` (mixed-precision training) the offsets, mask and sampling
stay in float32 and the matrix products run in the autocast dtype (:func:`deform_conv2d`).

Boundary rule (torchvision's): a corner outside the input reads 0, so a sample with
``h <= -1``, ``h >= H``, ``w <= -1`` or ``w >= W`` is 0. Bilinear weights come from ``floor(h)`` and
``h - floor(h)``, and the gradient with respect to the offsets is taken through those weights, so at
exactly integer positions (zero offsets at initialisation) it uses the same two corners as
torchvision (the sample's own row/column and the next one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from gkdcn.models.sampling_kernel import scatter_and_corner_dots

__all__ = ["DeformConv2d", "deform_conv2d"]

IntPair = int | tuple[int, int]

# Devices where ``F.embedding_bag`` with per-sample weights is known to be implemented; elsewhere
# (MPS, XPU, ...) the sampling falls back to plain gathers that every backend supports.
_EMBEDDING_BAG_DEVICES = frozenset({"cpu", "cuda"})


# The table is padded by two zero cells: a sample whose floor(h) is outside [-1, H-1] has both
# rows outside the input, so clamping floor(h) into [-2, H] keeps every corner inside the table
# and on zeros, which is torchvision's value (0) and gradient (0) for such samples.
_TABLE_PAD = 2

# Column block size on CPU with autograd. A training batch of the networks (~100 9x9 windows at
# width 64: 18 MB of columns in conv2) fits one block, whose columns are then kept for the
# backward pass instead of gathered again, which is faster than splitting the batch. Larger
# batches (explanations) still work through the batch in blocks, each of which costs its
# columns twice in the backward pass; a larger block would raise peak memory for them.
_BLOCK_BYTES = 32 * 2**20
# Column block size of the forward-only path (no autograd): small enough for a block's columns
# to stay in a core's L2 cache while the matrix product reads them (docs/benchmarks.md).
_NO_GRAD_BLOCK_BYTES = 2**20


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (pair[0], pair[1])


def _columns_times_weight(
    cols: Tensor, weight_mat: Tensor, bias: Tensor | None, out: Tensor
) -> None:
    """``out = cols @ weight_mat + bias`` with ``out`` (M, Cout) written in place.

    ``weight_mat`` is ``(K, Cout)`` for an ungrouped weight, or ``(wg, K / wg, Cout / wg)``
    for ``wg`` weight groups: group ``j``'s block of columns meets its own weight only (one
    batched product, not a block-diagonal one with ``wg`` times the work).
    """
    if weight_mat.dim() == 2:
        if bias is None:
            torch.mm(cols, weight_mat, out=out)
        else:
            torch.addmm(bias, cols, weight_mat, out=out)
        return
    wg, k, per_group = weight_mat.shape
    m = cols.shape[0]
    product = torch.bmm(cols.view(m, wg, k).transpose(0, 1), weight_mat)
    grouped = out.view(m, wg, per_group)
    grouped.copy_(product.transpose(0, 1))
    if bias is not None:
        grouped += bias.view(wg, per_group)


def _weight_outputs(weight_mat: Tensor) -> int:
    """Output channels of a (possibly grouped) weight matrix."""
    if weight_mat.dim() == 2:
        return int(weight_mat.shape[1])
    return int(weight_mat.shape[0] * weight_mat.shape[2])


def _grouped_weight_grad(cols: Tensor, grad: Tensor, weight_mat: Tensor) -> Tensor:
    """d(loss)/d(weight_mat) of one block: ``cols.T @ grad``, per weight group when grouped."""
    if weight_mat.dim() == 2:
        return cols.t() @ grad
    wg, k, per_group = weight_mat.shape
    m = cols.shape[0]
    return torch.bmm(
        cols.view(m, wg, k).permute(1, 2, 0), grad.view(m, wg, per_group).transpose(0, 1)
    )


def _grouped_column_grad(grad: Tensor, weight_mat: Tensor) -> Tensor:
    """d(loss)/d(columns) of one block, ``(M, K)``: ``grad @ weight_mat.T``, per weight group."""
    if weight_mat.dim() == 2:
        return grad @ weight_mat.t()
    wg, k, per_group = weight_mat.shape
    m = grad.shape[0]
    product = torch.bmm(grad.view(m, wg, per_group).transpose(0, 1), weight_mat.transpose(1, 2))
    return product.transpose(0, 1).reshape(m, wg * k)


@dataclass(frozen=True)
class _Geometry:
    """Everything that maps (output pixel, group, tap) to a table row, fixed for one call."""

    n: int
    height: int
    width: int
    out_h: int
    out_w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @property
    def table_rows(self) -> int:
        return (self.height + 2 * _TABLE_PAD) * (self.width + 2 * _TABLE_PAD)

    @property
    def delta(self) -> tuple[int, int, int, int]:
        """Table-row shifts from the top-left corner to each of the four corners.

        In the order top-left, top-right, bottom-left, bottom-right.
        """
        g, row = self.groups, (self.width + 2 * _TABLE_PAD) * self.groups
        return (0, g, row, row + g)


def _undeformed_grid(
    geo: _Geometry, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where each output cell's kernel would sample without offsets, as separable parts.

    Output ``rows`` (out_h,) and ``cols`` (out_w,) of the padded input, and each tap's row and
    column step ``tap_i``, ``tap_j`` (taps,). Both the autograd and the forward-only path add the
    offsets to these, so the two compute every position with the same operations.
    """
    kh, kw = geo.kernel
    tap_i = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * geo.dilation[0]
    tap_j = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * geo.dilation[1]
    rows = torch.arange(geo.out_h, device=device, dtype=dtype) * geo.stride[0] - geo.padding[0]
    cols = torch.arange(geo.out_w, device=device, dtype=dtype) * geo.stride[1] - geo.padding[1]
    return rows, cols, tap_i, tap_j


def _sample_positions(offset: Tensor, geo: _Geometry) -> tuple[Tensor, Tensor, Tensor]:
    """Top-left table row and fractional parts of every sample.

    ``offset`` is ``(n, out_h, out_w, groups, taps, 2)``. Returns ``idx00`` (S,) int64 and
    ``frac_h``, ``frac_w`` (S,) with S = n*out_h*out_w*groups*taps in that order; the fractions
    carry autograd to ``offset`` when it requires grad.
    """
    device, dtype = offset.device, offset.dtype
    rows, cols, tap_i, tap_j = _undeformed_grid(geo, device, dtype)
    h = offset[..., 0] + (rows.view(-1, 1, 1, 1) + tap_i)
    w = offset[..., 1] + (cols.view(-1, 1, 1) + tap_j)
    # floor(h) and h - floor(h), as torchvision's bilinear weights; the gradient w.r.t. h flows
    # through the fraction only, so at integer h it uses rows h and h + 1 like torchvision.
    h_floor = h.detach().floor()
    w_floor = w.detach().floor()
    frac_h = (h - h_floor).reshape(-1)
    frac_w = (w - w_floor).reshape(-1)
    row = h_floor.clamp_(-_TABLE_PAD, geo.height).long()
    col = w_floor.clamp_(-_TABLE_PAD, geo.width).long()
    # Per (image, group) constant part of the index, folded into one broadcast add.
    pad_cols = geo.width + 2 * _TABLE_PAD
    image = torch.arange(geo.n, device=device).view(-1, 1, 1, 1, 1) * geo.table_rows
    base = (image + (_TABLE_PAD * pad_cols + _TABLE_PAD)) * geo.groups
    base = base + torch.arange(geo.groups, device=device).view(-1, 1)
    idx00 = ((row * pad_cols + col) * geo.groups + base).reshape(-1)
    return idx00, frac_h, frac_w


def _corner_weights(frac_h: Tensor, frac_w: Tensor, mask: Tensor | None) -> Tensor:
    """(S, 4) bilinear weights in ``_Geometry.delta`` order, times the mask when given."""
    top, bottom = 1 - frac_h, frac_h
    if mask is not None:
        flat_mask = mask.reshape(-1)
        top, bottom = top * flat_mask, bottom * flat_mask
    left, right = 1 - frac_w, frac_w
    # Four flat products stacked (differentiable, for the generic path): a broadcast product
    # over trailing size-2 axes is several times slower.
    return torch.stack((top * left, top * right, bottom * left, bottom * right), dim=1)


def _corner_indices(idx00: Tensor, delta: tuple[int, int, int, int]) -> Tensor:
    out = idx00.new_empty(idx00.shape[0], 4)
    for c, shift in enumerate(delta):
        torch.add(idx00, shift, out=out[:, c])
    return out


def _corner_dots(grad: Tensor, table: Tensor, indices: Tensor) -> Tensor:
    """``e[s, c] = <grad[s], table[indices[s, c]]>`` (S, 4): the gradient w.r.t. corner weights."""
    s = indices.shape[0]
    flat = indices.reshape(-1)
    if grad.device.type in _EMBEDDING_BAG_DEVICES:
        try:
            # The fused kernel behind embedding_bag's own backward (a private ATen op, hence the
            # fallback): several times faster than gathering the rows.
            offsets = torch.arange(0, 4 * s, 4, device=grad.device)
            offset2bag = torch.arange(s, device=grad.device).repeat_interleave(4)
            out = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad, table, flat, offsets, offset2bag, 0
            )
            return out.view(s, 4)
        except (AttributeError, NotImplementedError, RuntimeError):  # pragma: no cover
            pass
    return _corner_dots_gather(grad, table, flat)


def _corner_dots_gather(grad: Tensor, table: Tensor, flat_indices: Tensor) -> Tensor:
    """Portable :func:`_corner_dots`, chunked so the gathered rows stay in cache."""
    s = grad.shape[0]
    out = grad.new_empty(s, 4)
    chunk = 2048
    for start in range(0, s, chunk):
        stop = min(start + chunk, s)
        rows = table.index_select(0, flat_indices[4 * start : 4 * stop]).view(stop - start, 4, -1)
        torch.bmm(rows, grad[start:stop].unsqueeze(-1), out=out[start:stop].unsqueeze(-1))
    return out


def _scatter_corners(
    grad: Tensor, weights: Tensor, idx00: Tensor, delta: tuple[int, int, int, int], out: Tensor
) -> None:
    """Add to ``out`` (table rows) ``weights[s, c] * grad[s]`` at row ``idx00[s] + delta[c]``.

    A scatter-add of 4*S rows. ``embedding_bag``'s own backward sorts all 4*S indices; here the
    corners share one sort of ``idx00`` (they are fixed shifts of it), one ``embedding_bag`` per
    corner sums each row's samples, and the four sums are added shifted into place.
    """
    rows = out.shape[0]
    keys, order = torch.sort(idx00, stable=True)
    # Bag r holds the samples whose top-left corner is table row r (possibly none).
    starts = torch.searchsorted(keys, torch.arange(rows, device=keys.device))
    sorted_weights = weights.index_select(0, order).t().contiguous()
    for c, shift in enumerate(delta):
        per_row = F.embedding_bag(
            order, grad, starts, mode="sum", per_sample_weights=sorted_weights[c]
        )
        out[shift:] += per_row[: rows - shift]


def _sampling_backward(
    grad_cols: Tensor,
    weights: Tensor,
    indices: Tensor,
    block: _Block,
    geo: _Geometry,
    source: Tensor,
    grad_table: Tensor | None,
    want_dots: bool,
) -> Tensor | None:
    """One block's sampling backward: the table gradient and the corner dots.

    Scatter ``grad_cols`` into ``grad_table`` (when given) and return the corner dots (S, 4) (when
    ``want_dots``). On CPU one compiled pass does both (:mod:`gkdcn.models.sampling_kernel`) for
    float32 and float64; other devices and dtypes (bfloat16 or float16 tensors outside autocast,
    which NumPy cannot hold) take PyTorch's fused kernels.
    """
    if source.device.type == "cpu" and source.dtype in (torch.float32, torch.float64):
        return scatter_and_corner_dots(
            grad_cols, weights, indices[:, 0], geo.delta, source, grad_table, want_dots
        )
    if grad_table is not None:
        # A block's samples only touch its own images' table rows.
        keys = indices[:, 0] - block.table_rows.start
        _scatter_corners(grad_cols, weights, keys, geo.delta, grad_table[block.table_rows])
    return _corner_dots(grad_cols, source, indices) if want_dots else None


@dataclass(frozen=True)
class _Block:
    """A run of whole images: its output rows, samples and table rows."""

    rows: slice
    samples: slice
    table_rows: slice

    def corners(
        self,
        idx00: Tensor,
        frac_h: Tensor,
        frac_w: Tensor,
        flat_mask: Tensor | None,
        geo: _Geometry,
    ) -> tuple[Tensor, Tensor]:
        """Corner table rows (S, 4) and weights (S, 4) of this block's samples."""
        mask = None if flat_mask is None else flat_mask[self.samples]
        weights = _corner_weights(frac_h[self.samples], frac_w[self.samples], mask)
        return _corner_indices(idx00[self.samples], geo.delta), weights


def _blocks(geo: _Geometry, images: int) -> list[_Block]:
    """Blocks of at most ``images`` images covering the batch."""
    pixels = geo.out_h * geo.out_w
    samples = pixels * geo.groups * geo.kernel[0] * geo.kernel[1]
    table_rows = geo.table_rows * geo.groups
    out = []
    for start in range(0, geo.n, images):
        stop = min(start + images, geo.n)
        out.append(
            _Block(
                rows=slice(start * pixels, stop * pixels),
                samples=slice(start * samples, stop * samples),
                table_rows=slice(start * table_rows, stop * table_rows),
            )
        )
    return out


def _block_columns(
    source: Tensor,
    indices: Tensor,
    weights: Tensor,
    block: _Block,
    matmul_dtype: torch.dtype | None,
) -> Tensor:
    """A block's columns ``(pixels, taps*C)``.

    Sampled in the table's dtype, then cast to ``matmul_dtype`` when given (the autocast dtype).
    """
    cols = F.embedding_bag(indices, source, per_sample_weights=weights, mode="sum")
    cols = cols.view(block.rows.stop - block.rows.start, -1)
    return cols if matmul_dtype is None else cols.to(matmul_dtype)


class _DeformConv(torch.autograd.Function):
    """The whole layer: ``out = columns(table, offset, mask) @ weight_mat + bias``, (M, Cout).

    Inputs: ``table`` (rows, C/G), ``offset`` (n, ho, wo, G, taps, 2), ``mask`` (n, ho, wo, G,
    taps) or None, ``weight_mat`` (taps*C, Cout), ``bias`` or None. Per block of images the
    backward rebuilds the columns (for the weight gradient), forms the column gradient, scatters
    it to the table and takes its dot products with the four corners, ``e``
    (:func:`_sampling_backward`), and turns those into offset and mask gradients with
    torchvision's formulas:
    d/dh = m*((1-fw)(e10-e00) + fw(e11-e01)), d/dw = m*((1-fh)(e01-e00) + fh(e11-e10)),
    d/dm = the unmasked bilinear weights dotted with ``e``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        table: Tensor,
        offset: Tensor,
        mask: Tensor | None,
        weight_mat: Tensor,
        bias: Tensor | None,
        geo: _Geometry,
        images_per_block: int,
        matmul_dtype: torch.dtype | None,
    ) -> Tensor:
        idx00, frac_h, frac_w = _sample_positions(offset, geo)
        flat_mask = None if mask is None else mask.reshape(-1)
        # Detached: embedding_bag skips its backward bookkeeping for a table that needs no grad.
        source = table.detach()
        # The matrix products' operands (the columns are cast block by block).
        mm_weight = weight_mat if matmul_dtype is None else weight_mat.to(matmul_dtype)
        mm_bias = bias if bias is None or matmul_dtype is None else bias.to(matmul_dtype)
        out = table.new_empty(
            geo.n * geo.out_h * geo.out_w,
            _weight_outputs(weight_mat),
            dtype=matmul_dtype or table.dtype,
        )
        blocks = _blocks(geo, images_per_block)
        cols = indices = weights = None
        for block in blocks:
            indices, weights = block.corners(idx00, frac_h, frac_w, flat_mask, geo)
            cols = _block_columns(source, indices, weights, block, matmul_dtype)
            _columns_times_weight(cols, mm_weight, mm_bias, out[block.rows])
        # A single block's columns and corners are small: keep them rather than gather and
        # compute them again in backward.
        single = len(blocks) == 1
        kept = (cols, indices, weights) if single else (None, None, None)
        # save_for_backward accepts None (documented), but torch's stubs say Tensor only.
        ctx.save_for_backward(table, idx00, frac_h, frac_w, flat_mask, mm_weight, *kept)  # type: ignore[arg-type]
        ctx.geo = geo  # type: ignore[attr-defined]
        ctx.images_per_block = images_per_block  # type: ignore[attr-defined]
        ctx.offset_shape = offset.shape  # type: ignore[attr-defined]
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        ctx.weight_dtype = weight_mat.dtype  # type: ignore[attr-defined]
        ctx.matmul_dtype = matmul_dtype  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_out: Tensor
    ) -> tuple[
        Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None, None, None, None
    ]:
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        # weight_mat: in the matrix products' dtype (the autocast dtype, or the weight's own).
        table, idx00, frac_h, frac_w, flat_mask, weight_mat = saved[:6]
        kept, kept_indices, kept_weights = saved[6:]  # one block's columns and corners, or None
        matmul_dtype = ctx.matmul_dtype  # type: ignore[attr-defined]
        geo: _Geometry = ctx.geo  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        need_table, need_offset, need_weight = needs[0], needs[1], needs[3]
        need_mask = needs[2] and flat_mask is not None
        grad_out = grad_out.contiguous()
        source = table.detach()
        grad_table = torch.zeros_like(table) if need_table else None
        grad_weight = (
            torch.zeros_like(weight_mat, dtype=ctx.weight_dtype)  # type: ignore[attr-defined]
            if need_weight
            else None
        )
        grad_hw = frac_h.new_empty(frac_h.shape[0], 2) if need_offset else None
        grad_mask = frac_h.new_empty(frac_h.shape) if need_mask else None
        for block in _blocks(geo, ctx.images_per_block):  # type: ignore[attr-defined]
            if kept_indices is not None:
                indices, weights = kept_indices, kept_weights
            else:
                indices, weights = block.corners(idx00, frac_h, frac_w, flat_mask, geo)
            g_block = grad_out[block.rows]
            if grad_weight is not None:
                cols = kept
                if cols is None:
                    cols = _block_columns(source, indices, weights, block, matmul_dtype)
                if weight_mat.dim() == 2 and matmul_dtype is None:
                    grad_weight.addmm_(cols.t(), g_block)
                else:  # (a low-precision product, summed over blocks in the weight's dtype)
                    grad_weight += _grouped_weight_grad(cols, g_block, weight_mat)
            if not (need_table or need_offset or need_mask):
                continue
            grad_cols = _grouped_column_grad(g_block, weight_mat).view(indices.shape[0], -1)
            # The sampling's gradients in the table's dtype (float32 under autocast).
            grad_cols = grad_cols.to(source.dtype)
            want_dots = grad_hw is not None or grad_mask is not None
            dots = _sampling_backward(
                grad_cols, weights, indices, block, geo, source, grad_table, want_dots
            )
            if dots is None:
                continue
            e00, e01, e10, e11 = dots.unbind(1)
            fh, fw = frac_h[block.samples], frac_w[block.samples]
            if grad_hw is not None:
                torch.lerp(e10 - e00, e11 - e01, fw, out=grad_hw[block.samples, 0])
                torch.lerp(e01 - e00, e11 - e10, fh, out=grad_hw[block.samples, 1])
            if grad_mask is not None:
                top = torch.lerp(e00, e01, fw)
                bottom = torch.lerp(e10, e11, fw)
                torch.lerp(top, bottom, fh, out=grad_mask[block.samples])
        grad_offset = None
        if grad_hw is not None:
            if flat_mask is not None:
                grad_hw *= flat_mask.unsqueeze(1)
            grad_offset = grad_hw.view(ctx.offset_shape)  # type: ignore[attr-defined]
        if grad_mask is not None:
            grad_mask = grad_mask.view(ctx.offset_shape[:-1])  # type: ignore[attr-defined]
        grad_bias = None
        if needs[4] and ctx.has_bias:  # type: ignore[attr-defined]
            grad_bias = grad_out.sum(0, dtype=ctx.weight_dtype)  # type: ignore[attr-defined]
        return grad_table, grad_offset, grad_mask, grad_weight, grad_bias, None, None, None


def _forward_no_grad(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight_mat: Tensor,
    bias: Tensor | None,
    geo: _Geometry,
    images_per_block: int,
) -> Tensor:
    """The forward pass alone, ``(M, Cout)``, for calls that need no gradient (prediction).

    The same samples, bilinear weights (bit for bit) and corner order as :class:`_DeformConv`,
    with less work: no zero-bordered copy of the input (its own channels-last rows are gathered,
    no copy at all when ``input`` is channels-last; a corner outside the input gets weight 0 and
    a clamped, valid row, and ``0 * x`` adds exactly what the border's ``w * 0`` adds), nothing
    saved for a backward pass, and the positions and weights of all samples computed in a few
    flat element-wise passes (broadcasting over size-2 corner axes is many times slower). Only
    the columns are built one block of images at a time, so each is still in cache when the
    matrix product reads it.
    """
    n, channels = input.shape[0], input.shape[1]
    height, width, groups = geo.height, geo.width, geo.groups
    table = input.permute(0, 2, 3, 1).reshape(-1, channels // groups)
    index_dtype = torch.int32 if table.shape[0] < 2**31 - 1 else torch.int64
    device, dtype = input.device, input.dtype
    rows, cols, tap_i, tap_j = _undeformed_grid(geo, device, dtype)
    # Positions exactly as _sample_positions computes them (same operations, same rounding).
    h = offset[..., 0] + (rows.view(-1, 1, 1, 1) + tap_i)
    w = offset[..., 1] + (cols.view(-1, 1, 1) + tap_j)
    h_floor = h.floor()
    w_floor = w.floor()
    frac_h = h.sub_(h_floor)
    frac_w = w.sub_(w_floor)
    # Clamped first, so huge offsets cannot overflow the integer conversion.
    r0 = h_floor.clamp_(-_TABLE_PAD, height).to(index_dtype)
    c0 = w_floor.clamp_(-_TABLE_PAD, width).to(index_dtype)
    del h_floor, w_floor
    # 1-D weights with each corner's validity folded in (multiplying by 1 or 0 is exact), the
    # mask on the row weights as in _corner_weights.
    top = (1 - frac_h).mul_((r0 >= 0) & (r0 < height))
    bottom = frac_h.mul_((r0 >= -1) & (r0 < height - 1))
    if mask is not None:
        top.mul_(mask)
        bottom.mul_(mask)
    left = (1 - frac_w).mul_((c0 >= 0) & (c0 < width))
    right = frac_w.mul_((c0 >= -1) & (c0 < width - 1))
    # Table row of (image, r, c, group) = (image*H + r) * (W*G) + (c*G + group).
    image = torch.arange(n, device=device, dtype=index_dtype).view(-1, 1, 1, 1, 1) * height
    row_top = (r0.clamp(0, height - 1) + image).mul_(width * groups)
    row_bottom = (r0.add_(1).clamp_(0, height - 1) + image).mul_(width * groups)
    col_left = c0.clamp(0, width - 1)
    col_right = c0.add_(1).clamp_(0, width - 1)
    if groups > 1:
        group = torch.arange(groups, device=device, dtype=index_dtype).view(-1, 1)
        col_left = col_left.mul_(groups).add_(group)
        col_right = col_right.mul_(groups).add_(group)
    # (S, 4) corners in _Geometry.delta order, written column by column: a broadcast over a
    # trailing size-2 or size-4 axis runs an order of magnitude slower.
    samples = top.numel()
    weights = input.new_empty(samples, 4)
    idx = torch.empty(samples, 4, device=device, dtype=index_dtype)
    for c, (wr, wc, ir, ic) in enumerate(
        (
            (top, left, row_top, col_left),
            (top, right, row_top, col_right),
            (bottom, left, row_bottom, col_left),
            (bottom, right, row_bottom, col_right),
        )
    ):
        torch.mul(wr.reshape(-1), wc.reshape(-1), out=weights[:, c])
        torch.add(ir.reshape(-1), ic.reshape(-1), out=idx[:, c])
    del top, bottom, left, right, row_top, row_bottom, col_left, col_right, r0, c0

    pixels = geo.out_h * geo.out_w
    per_image = samples // max(n, 1)
    out = input.new_empty(n * pixels, _weight_outputs(weight_mat))
    for start in range(0, n, images_per_block):
        stop = min(start + images_per_block, n)
        gathered = F.embedding_bag(
            idx[start * per_image : stop * per_image],
            table,
            per_sample_weights=weights[start * per_image : stop * per_image],
            mode="sum",
        )
        target = out[start * pixels : stop * pixels]
        gathered = gathered.view((stop - start) * pixels, -1)
        _columns_times_weight(gathered, weight_mat, bias, target)
    return out


def _sample_generic(table: Tensor, offset: Tensor, mask: Tensor | None, geo: _Geometry) -> Tensor:
    """Columns (S, C/G) from ``index_select`` and plain autograd: works on any backend."""
    idx00, frac_h, frac_w = _sample_positions(offset, geo)
    weights = _corner_weights(frac_h, frac_w, mask)
    out = None
    for c, shift in enumerate(geo.delta):
        term = table.index_select(0, idx00 + shift) * weights[:, c : c + 1]
        out = term if out is None else out + term
    assert out is not None
    return out


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = (1, 1),
    padding: IntPair = (0, 0),
    dilation: IntPair = (1, 1),
    mask: Tensor | None = None,
    *,
    _impl: str = "auto",
) -> Tensor:
    """Modulated deformable 2-D convolution with ``torchvision.ops.deform_conv2d`` semantics.

    Parameters
    ----------
    input
        ``(N, Cin, H, W)``.
    offset
        ``(N, 2*G*kh*kw, Ho, Wo)``; for offset group ``g`` and tap ``k = i*kw + j`` channel
        ``(g*kh*kw + k)*2`` is the row offset ``dy`` and the next channel the column offset.
        ``G`` (offset groups) must divide ``Cin``; group ``g`` moves input channels
        ``g*Cin/G .. (g+1)*Cin/G - 1``.
    weight
        ``(Cout, Cin/wg, kh, kw)`` for ``wg`` weight groups (as ``nn.Conv2d``'s ``groups``;
        1 = ungrouped): output channels ``j*Cout/wg ..`` read input channels
        ``j*Cin/wg .. (j+1)*Cin/wg - 1`` only. Offset and weight groups are independent.
    bias
        ``(Cout,)`` or None.
    stride, padding, dilation
        Ints or ``(h, w)`` pairs.
    mask
        ``(N, G*kh*kw, Ho, Wo)`` modulation multiplying each tap's sample, or None (all 1).

    Returns
    -------
    Tensor
        ``(N, Cout, Ho, Wo)``, channels-last in memory when ``input`` is, contiguous otherwise.

    Notes
    -----
    Differentiable with respect to input, offset, mask, weight and bias (first order only).

    Under ``torch.autocast`` (bfloat16 or float16) the sampling runs in float32 (torchvision's
    autocast rule runs all of this op in float32 and returns the input's dtype), but the matrix
    products of columns and weight, where a training step spends most of its time, run in the
    autocast dtype, and so does the output, as for an autocast ``conv2d``. Without gradients
    (prediction), and on devices without the fused kernels, all of it runs in float32.
    :class:`DeformConv2d` computes its offsets and mask in float32 under autocast too.
    """
    matmul_dtype = _autocast_dtype(input)
    if matmul_dtype is None:
        return _deform_conv2d(
            input, offset, weight, bias, stride, padding, dilation, mask, _impl, None
        )
    with torch.autocast(input.device.type, enabled=False):
        return _deform_conv2d(
            input.float(),
            offset.float(),
            weight.float(),
            None if bias is None else bias.float(),
            stride,
            padding,
            dilation,
            None if mask is None else mask.float(),
            _impl,
            matmul_dtype,
        )


def _autocast_dtype(input: Tensor) -> torch.dtype | None:
    """The lower-precision dtype autocast asks for on ``input``'s device, or None.

    None when autocast is off, or when ``input`` is not a float16/bfloat16/float32 tensor, which
    autocast leaves alone.
    """
    if input.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    device_type = input.device.type
    if not torch.is_autocast_enabled(device_type):
        return None
    dtype = torch.get_autocast_dtype(device_type)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair,
    mask: Tensor | None,
    _impl: str,
    matmul_dtype: torch.dtype | None,
) -> Tensor:
    """:func:`deform_conv2d` with the matrix products in ``matmul_dtype`` (None: the input's)."""
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError("input, offset and weight must be 4-D (N, C, H, W) tensors")
    stride_h, stride_w = _pair(stride, "stride")
    pad_h, pad_w = _pair(padding, "padding")
    dil_h, dil_w = _pair(dilation, "dilation")
    if min(stride_h, stride_w, dil_h, dil_w) < 1 or min(pad_h, pad_w) < 0:
        raise ValueError("stride and dilation must be >= 1 and padding >= 0")
    n, channels, height, width = input.shape
    out_channels, weight_channels, kh, kw = weight.shape
    if weight_channels < 1 or channels % weight_channels:
        raise ValueError(
            f"weight expects {weight_channels} input channels per group, which does not "
            f"divide the input's {channels}"
        )
    weight_groups = channels // weight_channels
    if out_channels % weight_groups:
        raise ValueError(
            f"weight has {out_channels} output channels, not divisible by its "
            f"{weight_groups} groups"
        )
    taps = kh * kw
    out_h = (height + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1
    out_w = (width + 2 * pad_w - dil_w * (kw - 1) - 1) // stride_w + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input {height}x{width} is too small for this kernel, stride and padding")
    if offset.shape[0] != n or offset.shape[2:] != (out_h, out_w):
        raise ValueError(
            f"offset must have shape ({n}, 2*G*{taps}, {out_h}, {out_w}), got {tuple(offset.shape)}"
        )
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps):
        raise ValueError(f"offset channels ({offset.shape[1]}) must be a multiple of 2*{taps}")
    groups = offset.shape[1] // (2 * taps)
    if channels % groups:
        raise ValueError(
            f"input channels ({channels}) must be divisible by offset groups ({groups})"
        )
    if mask is not None and tuple(mask.shape) != (n, groups * taps, out_h, out_w):
        raise ValueError(
            f"mask must have shape ({n}, {groups * taps}, {out_h}, {out_w}), got {tuple(mask.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {tuple(bias.shape)}")
    for name, t in (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if t is not None and (t.dtype != input.dtype or t.device != input.device):
            raise ValueError(
                f"{name} is {t.dtype} on {t.device} but input is {input.dtype} on {input.device}"
            )
    if _impl not in ("auto", "fused", "generic"):
        raise ValueError(f"unknown _impl {_impl!r}")

    # Sampling groups: the offset groups, split further where a weight group is narrower (a
    # sub-group shares its offset group's offsets and mask, so the samples are the same), so
    # every weight group covers whole sampling groups and its columns lie side by side.
    sampling = math.lcm(groups, weight_groups)
    if sampling != groups:
        repeat = sampling // groups
        offset = offset.view(n, groups, 1, 2 * taps, out_h, out_w)
        offset = offset.expand(-1, -1, repeat, -1, -1, -1).reshape(n, -1, out_h, out_w)
        if mask is not None:
            mask = mask.view(n, groups, 1, taps, out_h, out_w)
            mask = mask.expand(-1, -1, repeat, -1, -1, -1).reshape(n, -1, out_h, out_w)
        groups = sampling
    group_channels = channels // groups
    geo = _Geometry(
        n=n,
        height=height,
        width=width,
        out_h=out_h,
        out_w=out_w,
        kernel=(kh, kw),
        stride=(stride_h, stride_w),
        padding=(pad_h, pad_w),
        dilation=(dil_h, dil_w),
        groups=groups,
    )
    # Samples are ordered (n, ho, wo, group, tap): the offset's own channel order, so one
    # transpose of the (small) offset and mask tensors lines everything up.
    off = offset.reshape(n, groups * taps * 2, out_h * out_w).transpose(1, 2)
    off = off.reshape(n, out_h, out_w, groups, taps, 2)
    if mask is not None:
        mask = mask.reshape(n, groups * taps, out_h * out_w).transpose(1, 2)
        mask = mask.reshape(n, out_h, out_w, groups, taps)

    use_fused = _impl == "fused" or (
        _impl == "auto" and input.device.type in _EMBEDDING_BAG_DEVICES
    )
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, offset, weight, bias, mask)
    )
    # Weight columns in the same (group, tap, channel-in-group) order as the sampled columns.
    if weight_groups == 1:
        weight_mat = (
            weight.reshape(out_channels, groups, group_channels, taps)
            .transpose(2, 3)
            .reshape(out_channels, -1)
            .t()
        )
    else:
        # (weight group, its columns, its outputs): weight group j reads sampling groups
        # j*groups/wg .. (j+1)*groups/wg - 1, whose columns are contiguous.
        per_group = out_channels // weight_groups
        weight_mat = (
            weight.reshape(weight_groups, per_group, groups // weight_groups, group_channels, taps)
            .permute(0, 2, 4, 3, 1)
            .reshape(weight_groups, -1, per_group)
        )
    per_image = out_h * out_w * taps * channels * input.element_size()
    cpu = input.device.type == "cpu"
    if use_fused and not needs_grad:
        # On a GPU one block: fewer, larger kernels win.
        images_per_block = max(1, _NO_GRAD_BLOCK_BYTES // per_image, 0 if cpu else n)
        out = _forward_no_grad(input, off, mask, weight_mat, bias, geo, images_per_block)
    else:
        # Table: channels-last input with a zero border, one row per (n, padded row, padded
        # col, group) holding that group's channels contiguously.
        border = (0, 0, _TABLE_PAD, _TABLE_PAD, _TABLE_PAD, _TABLE_PAD)
        table = F.pad(input.permute(0, 2, 3, 1), border).reshape(-1, group_channels)
        if use_fused:
            images_per_block = max(1, _BLOCK_BYTES // per_image, 0 if cpu else n)
            out = _DeformConv.apply(
                table, off, mask, weight_mat, bias, geo, images_per_block, matmul_dtype
            )
        else:
            cols = _sample_generic(table, off, mask, geo).reshape(-1, taps * channels)
            if weight_groups == 1:
                out = cols @ weight_mat if bias is None else torch.addmm(bias, cols, weight_mat)
            else:  # differentiable through plain autograd, like the sampling
                m = cols.shape[0]
                out = torch.bmm(cols.view(m, weight_groups, -1).transpose(0, 1), weight_mat)
                out = out.transpose(0, 1).reshape(m, out_channels)
                if bias is not None:
                    out = out + bias
    out = out.view(n, out_h, out_w, out_channels)
    out = out.permute(0, 3, 1, 2)
    if input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous():
        return out
    return out.contiguous()


class DeformConv2d(nn.Module):
    """DCNv2 layer: a convolution whose taps are moved by learned offsets and scaled by a mask.

    Two branch convolutions read the layer's input: ``offset_conv`` predicts
    ``2*offset_groups*k*k`` offsets and ``mask_conv`` ``offset_groups*k*k`` mask logits. They use the
    main convolution's kernel size, stride, padding and dilation (3x3 for the default layer), so
    their output has the main output's spatial size. Both are initialised to zero, as in the
    authors' code: a fresh layer samples the regular grid with mask ``sigmoid(0) = 0.5``, i.e. it
    equals half an ordinary convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        dilation: IntPair = 1,
        bias: bool = True,
        offset_groups: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if offset_groups < 1 or in_channels % offset_groups:
            raise ValueError(
                f"offset_groups ({offset_groups}) must be >= 1 and divide in_channels "
                f"({in_channels})"
            )
        if groups < 1 or in_channels % groups or out_channels % groups or offset_groups % groups:
            raise ValueError(
                f"groups ({groups}) must be >= 1 and divide in_channels ({in_channels}), "
                f"out_channels ({out_channels}) and offset_groups ({offset_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.offset_groups = offset_groups
        self.groups = groups
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.offset_conv = self._branch(in_channels, 2 * offset_groups * taps)
        self.mask_conv = self._branch(in_channels, offset_groups * taps)
        self.reset_parameters()

    def _branch(self, in_channels: int, out_channels: int) -> nn.Conv2d:
        """A plain conv with this layer's geometry (offsets and masks: one per tap per output)."""
        return nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )

    def reset_parameters(self) -> None:
        """Main weight as ``nn.Conv2d`` initialises it; offset and mask branches to zero."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        for branch in (self.offset_conv, self.mask_conv):
            nn.init.zeros_(branch.weight)
            assert branch.bias is not None
            nn.init.zeros_(branch.bias)

    def _branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets and mask logits.

        Ungrouped branches with biases run as one convolution (one pass over ``x``, one wider
        output; the same sums, so the same values to rounding; with autograd too, its gradient
        reaching both branches through the concatenation).
        """
        offset_conv, mask_conv = self.offset_conv, self.mask_conv
        if self.groups > 1 or offset_conv.bias is None or mask_conv.bias is None:
            # (Grouped branches: a group of the fused convolution would mix offset and mask.)
            return offset_conv(x), mask_conv(x)
        weight = torch.cat((offset_conv.weight, mask_conv.weight))
        bias = torch.cat((offset_conv.bias, mask_conv.bias))
        branches = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)
        split = offset_conv.out_channels
        return branches[:, :split], branches[:, split:]

    def forward_with_sampling(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Output, the offsets ``(N, 2*G*kh*kw, Ho, Wo)`` and the mask after the sigmoid.

        Under autocast the branches run in float32 too: offsets are sampling positions, and one
        rounded to bfloat16 moves its sample by up to 2**-9 of itself, enough to move it across
        a cell edge, where the bilinear gradient jumps (offset gradients off by ~15 %).
        """
        if _autocast_dtype(x) is None:
            offset, mask_logits = self._branches(x)
        else:
            with torch.autocast(x.device.type, enabled=False):
                offset, mask_logits = self._branches(x.float())
        mask = torch.sigmoid(mask_logits)
        out = deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
        return out, offset, mask

    def forward(self, x: Tensor) -> Tensor:
        """Deformable convolution of ``x`` ``(N, in_channels, H, W)``."""
        return self.forward_with_sampling(x)[0]

    def extra_repr(self) -> str:
        """The layer's settings, as ``nn.Conv2d`` prints its own."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"offset_groups={self.offset_groups}, groups={self.groups}, "
            f"bias={self.bias is not None}"
        )
