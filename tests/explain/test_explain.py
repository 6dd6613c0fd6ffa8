"""Explanations: Grad-CAM values and placement, integrated-gradients completeness, deformable
sampling read back where it was sent (rows vs columns), map outputs on the input grid, export."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rich.console import Console
from rich.progress import Progress, TextColumn
from torch import nn

from gkdcn.config import StudyConfig, config_from_dict
from gkdcn.data.samples import extract_windows
from gkdcn.data.study import Study, load_study
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError, OutputExistsError
from gkdcn.explain.attribution import (
    attribution_maps,
    element_attribution,
    integrated_gradients,
    plot_element_ranking,
    rank_elements,
)
from gkdcn.explain.gradcam import gradcam, gradcam_map, gradcam_maps, plot_site_cam
from gkdcn.explain.offsets import (
    map_sampling_summary,
    plot_offset_field,
    plot_sampling,
    sampling_positions,
    sampling_summary,
)
from gkdcn.explain.run import explain_model, select_sites
from gkdcn.io.atomic import MARKER, mark_output, write_text
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.deform import DeformConv2d
from gkdcn.models.nets import AnomalyNet, ModelSpec, build_network
from helpers import random_state, write_tiny_study


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny networks run faster on one thread (thread hand-offs dominate on shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- tiny models -------------------------------------------------------------------------------


class Gate(nn.Module):
    """Keeps one cell of its input and zeroes the rest: a layer that sees one cell only."""

    def __init__(self, size: int, cell: tuple[int, int]) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., cell[0], cell[1]] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class CellNet(nn.Module):
    """logit = factor * sum of the channels at one cell: depends on that cell only."""

    def __init__(self, channels: int, size: int, cell: tuple[int, int], factor: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(channels)[:, :, None, None])
        self.gate = Gate(size, cell)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * self.gate(self.conv(x)).sum(dim=(1, 2, 3))


class PooledCellNet(nn.Module):
    """Max pool 2, then keep one pooled cell: a layer map smaller than the window."""

    def __init__(self, window: int, cell: tuple[int, int]) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.gate = Gate(window // 2, cell)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.pool(x)).sum(dim=(1, 2, 3))


class LinearNet(nn.Module):
    """logit = sum(W * x) + b: integrated gradients from 0 are exactly W * x."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(dim=(1, 2, 3)) + self.bias


class OneDeformNet(nn.Module):
    """A single deformable layer called ``conv2``; its input is the network input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = DeformConv2d(1, 9, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x).sum(dim=(1, 2, 3))


# Asymmetric per-tap offsets (dy != dx, no two taps alike) so a row/column mix-up shows.
SENT_DY = np.array([0.25, -0.5, 1.0, 0.75, -1.25, 0.5, -0.25, 1.5, -0.75])
SENT_DX = np.array([-1.0, 0.5, 0.25, -0.75, 1.25, 1.5, -0.5, 0.0, 0.75])
MASK_BIAS = np.linspace(-2.0, 2.0, 9)


def known_offset_net(dy: np.ndarray = SENT_DY, dx: np.ndarray = SENT_DX) -> OneDeformNet:
    """Tap t is sent by (dy[t], dx[t]) everywhere; output channel t reads tap t only."""
    net = OneDeformNet()
    layer = net.conv2
    with torch.no_grad():
        layer.offset_conv.weight.zero_()
        bias = np.empty(18)
        bias[0::2], bias[1::2] = dy, dx  # channel 2t = dy, 2t+1 = dx (torchvision layout)
        layer.offset_conv.bias.copy_(torch.from_numpy(bias))
        layer.mask_conv.weight.zero_()
        layer.mask_conv.bias.copy_(torch.from_numpy(MASK_BIAS))
        weight = torch.zeros(9, 1, 3, 3)
        for t in range(9):
            weight[t, 0, t // 3, t % 3] = 1.0
        layer.weight.copy_(weight)
        layer.bias.zero_()
    return net.eval()


def randomised(net: nn.Module, seed: int) -> nn.Module:
    """Random weights, BatchNorm statistics and (non-zero) offset / mask branches, eval mode."""
    net.load_state_dict(random_state(net, seed))
    return net.eval()


def tiny_net(kind: str = "dcn", window: int = 9, channels: int = 3, seed: int = 0) -> AnomalyNet:
    spec = ModelSpec(kind=kind, in_channels=channels, window=window, width=8)  # type: ignore[arg-type]
    net = randomised(build_network(spec), seed)
    assert isinstance(net, AnomalyNet)
    return net


def windows(n: int = 3, channels: int = 3, size: int = 9, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, channels, size, size)).astype(np.float32)


# --- Grad-CAM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [(4, 4), (1, 6)])
def test_gradcam_of_a_one_cell_model_is_that_cell(cell: tuple[int, int]) -> None:
    x = np.abs(windows(2)) + 0.1  # positive, so the ReLU keeps the cell
    net = CellNet(3, 9, cell)
    cam = gradcam(net, x, "gate")
    assert cam.shape == (2, 9, 9)
    # Gradient of the sum is 1 everywhere, so Grad-CAM = relu(sum of channels) at the cell, raw.
    expected = np.zeros_like(cam)
    expected[:, cell[0], cell[1]] = x[:, :, cell[0], cell[1]].sum(axis=1)
    np.testing.assert_allclose(cam, expected, rtol=1e-6, atol=1e-7)
    peak = np.unravel_index(cam[0].argmax(), cam[0].shape)
    assert peak == cell  # rows are rows, columns are columns


def test_gradcam_keeps_raw_scale_and_weights_by_mean_gradient() -> None:
    x = np.abs(windows(2)) + 0.1
    single = gradcam(CellNet(3, 9, (4, 4)), x, "gate")
    double = gradcam(CellNet(3, 9, (4, 4), factor=2.0), x, "gate")
    np.testing.assert_allclose(double, 2.0 * single, rtol=1e-6)  # no per-window normalisation
    # At the layer before the gate the gradient is non-zero at one cell of 81, so each channel
    # weight is 1/81 and the map is the channel sum / 81 everywhere (Grad-CAM's definition).
    before = gradcam(CellNet(3, 9, (4, 4)), x, "conv")
    np.testing.assert_allclose(before, x.sum(axis=1) / 81.0, rtol=1e-5)


def test_gradcam_of_a_pooled_layer_lands_on_the_cells_it_pooled() -> None:
    x = np.abs(windows(1, channels=1)) + 0.1
    cam = gradcam(PooledCellNet(9, (1, 2)), x, "gate")[0]
    assert cam.shape == (9, 9)
    pooled = x[0, 0, 2:4, 4:6].max()  # pooled cell (1, 2) covers window rows 2-3, cols 4-5
    # Bilinear, centre of pooled cell p at window coordinate 2p + 0.5: the four window cells it
    # pooled get 0.75 * 0.75 of its value and the map is symmetric about that centre.
    np.testing.assert_allclose(cam[2:4, 4:6], 0.5625 * pooled, rtol=1e-6)
    np.testing.assert_allclose(cam[1:5, 3:7], cam[1:5, 3:7][::-1, ::-1], rtol=1e-6)
    assert cam[0].max() == 0 and cam[:, 0].max() == 0
    # Window row / column 8 is not pooled (floor): it repeats row / column 7.
    np.testing.assert_array_equal(cam[8], cam[7])


def test_gradcam_on_anomalynet_layers() -> None:
    net = tiny_net("dcn")
    net.train()
    x = windows(3)
    for layer in ("conv1", "conv2", "conv3"):
        cam = gradcam(net, x, layer, batch_size=2)
        assert cam.shape == (3, 9, 9) and cam.dtype == np.float32
        assert np.all(cam >= 0) and np.all(np.isfinite(cam)) and cam.max() > 0
        np.testing.assert_allclose(cam[1:2], gradcam(net, x[1:2], layer), rtol=1e-5, atol=1e-7)
    assert net.training  # the caller's mode is restored
    with pytest.raises(GkdcnError, match="no layer 'conv9'"):
        gradcam(net, x, "conv9")
    with pytest.raises(ValueError, match="windows must be shaped") as info:
        gradcam(net, x[0], "conv2")
    assert not isinstance(info.value, GkdcnError)  # API misuse, not a user error


def test_plot_site_cam_has_both_panels_with_units() -> None:
    x = windows(1)[0]
    cam = np.zeros((9, 9), dtype=np.float32)
    cam[4, 4] = 2.0
    fig = plot_site_cam(x, cam, ["Au", "Cu", "As"], "D7", 512_345.0, 4_001_000.0, element="Cu")
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2
    np.testing.assert_array_equal(image_axes[0].images[0].get_array(), x[1])  # Cu is channel 1
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "Grad-CAM (logit units)" in labels and "Cu (transformed units)" in labels
    assert "D7" in fig.texts[0].get_text() and "512,345.0" in fig.texts[0].get_text()
    with pytest.raises(GkdcnError, match="not a model channel"):
        plot_site_cam(x, cam, ["Au", "Cu", "As"], "D7", 0.0, 0.0, element="Pb")


# --- integrated gradients ----------------------------------------------------------------------


def test_integrated_gradients_are_exact_for_a_linear_model() -> None:
    weight = torch.from_numpy(windows(1, seed=5)[0])
    x = windows(4, seed=6)
    result = element_attribution(LinearNet(weight), x, ["Au", "Cu", "As"], n_steps=20)
    expected = (x * weight.numpy()).sum(axis=(2, 3))
    np.testing.assert_allclose(result.values.to_numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.baseline_logit, 0.7, rtol=1e-6)
    np.testing.assert_allclose(result.logit, expected.sum(axis=1) + 0.7, rtol=1e-4, atol=1e-5)
    assert list(result.values.columns) == ["Au", "Cu", "As"]


@pytest.mark.parametrize("kind", ["cnn", "dcn"])
def test_integrated_gradients_are_complete(kind: str) -> None:
    net = tiny_net(kind, seed=2)
    x = windows(3, seed=3)
    result = element_attribution(net, x, ["Au", "Cu", "As"], n_steps=128, ids=["a", "b", "c"])
    with torch.no_grad():
        logit = net(torch.from_numpy(x)).numpy()
        base = net(torch.zeros(1, 3, 9, 9)).numpy()[0]
    np.testing.assert_allclose(result.logit, logit, rtol=1e-5, atol=1e-6)
    change = logit - base
    total = result.values.sum(axis=1).to_numpy()
    assert np.all(np.abs(change) > 1e-3)
    np.testing.assert_allclose(total, change, rtol=1e-2, atol=1e-3 * np.abs(change).max())
    # captum's delta is exactly the completeness gap.
    np.testing.assert_allclose(result.delta, total - change, atol=2e-4)
    assert list(result.values.index) == ["a", "b", "c"]
    frame = result.to_frame()
    assert list(frame.columns) == ["Au", "Cu", "As", "logit", "baseline_logit", "convergence_delta"]


def test_element_ranking_orders_by_mean_contribution() -> None:
    values = pd.DataFrame({"Au": [1.0, 3.0], "Cu": [-1.0, -2.0], "As": [0.5, 0.7]})
    assert rank_elements(values) == ["Au", "As", "Cu"]
    fig = plot_element_ranking(values)
    ax = fig.axes[0]
    ticks = sorted((t.get_position()[1], t.get_text()) for t in ax.get_yticklabels())
    assert [name for _, name in ticks] == ["Cu", "As", "Au"]  # bottom to top: first on top
    widths = sorted(p.get_width() for p in ax.patches)
    np.testing.assert_allclose(widths, [-1.5, 0.6, 2.0])
    assert "logit units" in ax.get_xlabel()


# --- deformable sampling -----------------------------------------------------------------------


def test_sampling_positions_find_each_tap_where_it_was_sent() -> None:
    net = known_offset_net()
    size = 11
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    ramp = (10.0 * rows + cols)[None, None]  # bilinear sampling of it is exact inside the map
    x = np.concatenate([ramp, ramp + 5.0])
    data = sampling_positions(net, x, "conv2")
    assert data.positions.shape == (2, size, size, 9, 2)
    assert data.offset.shape == (2, 9, 2, size, size) and data.mask.shape == (2, 9, size, size)
    assert data.scale == 1 and data.input_size == (size, size)
    ho, wo = np.broadcast_arrays(*np.mgrid[0:2, 0:size, 0:size][1:])  # (2, size, size) each
    for t in range(9):
        i, j = divmod(t, 3)
        np.testing.assert_allclose(data.positions[:, :, :, t, 0], ho - 1 + i + SENT_DY[t])
        np.testing.assert_allclose(data.positions[:, :, :, t, 1], wo - 1 + j + SENT_DX[t])
        np.testing.assert_allclose(data.offset[:, t, 0], SENT_DY[t])
        np.testing.assert_allclose(data.offset[:, t, 1], SENT_DX[t])
        np.testing.assert_allclose(data.mask[:, t], 1 / (1 + np.exp(-MASK_BIAS[t])), rtol=1e-6)
    # The layer itself reads the ramp at those positions: output t = mask_t * ramp(row, col).
    # With dy and dx swapped these values would differ (the ramp is 10 per row, 1 per column).
    with torch.no_grad():
        out = net.conv2(torch.from_numpy(x)).numpy()
    pos = data.positions
    inside = (pos >= 0).all(axis=-1) & (pos <= size - 1).all(axis=-1)  # (N, Ho, Wo, K)
    expected = data.mask.transpose(0, 2, 3, 1) * (
        10.0 * pos[..., 0] + pos[..., 1] + np.array([0.0, 5.0])[:, None, None, None]
    )
    got = out.transpose(0, 2, 3, 1)
    assert inside.sum() > 500
    np.testing.assert_allclose(got[inside], expected[inside], rtol=1e-5, atol=1e-4)


def test_sampling_plots_draw_rows_as_rows() -> None:
    data = sampling_positions(known_offset_net(), windows(1, channels=1, size=7), "conv2")
    fig = plot_sampling(data, 0, centre=(2, 4))
    ax = fig.axes[0]
    dots = next(c for c in ax.collections if c.get_label() == "sampled position")
    xy = np.asarray(dots.get_offsets())
    taps = np.arange(9)
    np.testing.assert_allclose(xy[:, 0], 4 - 1 + taps % 3 + SENT_DX)  # x = column
    np.testing.assert_allclose(xy[:, 1], 2 - 1 + taps // 3 + SENT_DY)  # y = row
    np.testing.assert_allclose(dots.get_array(), 1 / (1 + np.exp(-MASK_BIAS)), rtol=1e-6)
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # rows grow downwards
    field = plot_offset_field(data, 0)
    quiver = next(c for c in field.axes[0].collections if hasattr(c, "U"))
    np.testing.assert_allclose(np.asarray(quiver.U).ravel(), SENT_DX.mean())
    np.testing.assert_allclose(np.asarray(quiver.V).ravel(), SENT_DY.mean())
    heat = field.axes[0].images[0].get_array()
    np.testing.assert_allclose(heat, np.hypot(SENT_DY, SENT_DX).mean(), rtol=1e-6)
    assert "cells" in field.axes[1].get_ylabel()


def test_pooled_layer_positions_map_to_window_cells() -> None:
    net = tiny_net("dcn")
    data = sampling_positions(net, windows(2), "conv3")
    assert data.input_size == (4, 4) and data.scale == 2
    assert data.positions.shape == (2, 4, 4, 9, 2)
    # Pooled cell p covers window cells 2p and 2p+1: its centre is window coordinate 2p + 0.5.
    np.testing.assert_allclose(data.to_window(np.array([0.0, 3.0])), [0.5, 6.5])
    np.testing.assert_allclose(data.output_centres()[1, 2], [1.0, 2.0])
    np.testing.assert_allclose(data.base_positions()[1, 2, 0], [0.0, 1.0])  # tap 0 = up-left
    assert np.abs(data.offset).max() > 0  # random offset branch: really deformed
    with pytest.raises(GkdcnError, match="not a deformable convolution"):
        sampling_positions(tiny_net("cnn"), windows(1), "conv2")


def test_sampling_summary_values() -> None:
    # Every tap shifted by (3, 4): length 5 cells; masks known.
    net = known_offset_net(np.full(9, 3.0), np.full(9, 4.0))
    x = windows(3, channels=1, size=9)
    data = sampling_positions(net, x, "conv2")
    summary = sampling_summary(data, [1, 0, 0])
    assert summary["deposit"]["n_windows"] == 1 and summary["background"]["n_windows"] == 2
    for key in ("deposit", "background", "all"):
        assert summary[key]["mean_offset_cells"] == pytest.approx(5.0)
        assert summary[key]["mean_mask"] == pytest.approx(np.mean(1 / (1 + np.exp(-MASK_BIAS))))
    # Shifted by (+3, +4) on a 9 x 9 map, a tap stays inside when its regular row ho - 1 + i <= 5
    # (18 of the 27 (ho, i) pairs) and its regular column wo - 1 + j <= 4 (15 of 27).
    assert summary["all"]["outside_share"] == pytest.approx(1 - (18 / 27) * (15 / 27))
    # The undeformed 3 x 3 grid reads the padding ring: 1 - (25/27)^2 of its taps.
    assert summary["all"]["outside_share_regular_grid"] == pytest.approx(104 / 729)
    zero = sampling_summary(
        sampling_positions(known_offset_net(np.zeros(9), np.zeros(9)), x), [1, 0, 0]
    )
    assert zero["all"]["outside_share"] == pytest.approx(104 / 729)
    assert zero["all"]["mean_offset_cells"] == 0.0
    empty = sampling_summary(data, [0, 0, 0])
    assert empty["deposit"]["n_windows"] == 0 and empty["deposit"]["mean_mask"] is None


# --- map outputs and export on the tiny study --------------------------------------------------


def study_bundle(study: Study, kind: str = "dcn", seed: int = 1) -> ModelBundle:
    """A randomised tiny model for the study, with channels in reverse order (forces a reorder)."""
    channels = list(reversed(study.names))
    spec = ModelSpec(
        kind=kind,  # type: ignore[arg-type]
        in_channels=len(channels),
        window=study.config.samples.window,
        width=8,
    )
    net = randomised(build_network(spec), seed)
    values = study.raw[[study.names.index(c) for c in channels]].reshape(len(channels), -1).T
    transform = ChannelTransform.fit(values, "clr", "standard")
    return ModelBundle(spec=spec, state=net.state_dict(), channels=channels, transform=transform)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """The conftest's tiny study cut down for speed: data only in rows 2-10, cols 1-8 (72 cells),
    one deposit and one non-deposit. The grid (shape, transform, CRS) is the full 20 x 24 one."""
    root = tmp_path_factory.mktemp("study")
    config: StudyConfig = config_from_dict(write_tiny_study(root), base_dir=root)
    full = load_study(config)
    valid = np.zeros_like(full.valid)
    valid[2:11, 1:9] = True
    keep = [
        i
        for i, (r, c) in enumerate(zip(full.sites.rows, full.sites.cols, strict=True))
        if (r, c) in {(4, 5), (9, 3)}
    ]
    return dataclasses.replace(
        full,
        valid=valid,
        raw=np.where(valid, full.raw, np.nan).astype(np.float32),
        sites=full.sites.subset(np.asarray(keep)),
    )


def features_of(bundle: ModelBundle, study: Study) -> np.ndarray:
    return bundle.transform.apply(study.raw[bundle.channel_order(study.names)])


def test_gradcam_map_is_the_cam_of_each_cells_window(study: Study) -> None:
    bundle = study_bundle(study)
    features = features_of(bundle, study)
    valid = study.valid.copy()
    valid[2, 1:4] = False
    maps = gradcam_maps(bundle, features, valid, layer="conv2", batch_size=37)
    assert maps["centre"].shape == study.grid.shape
    assert np.isnan(maps["centre"][~valid]).all() and np.isnan(maps["mean"][~valid]).all()
    assert np.isfinite(maps["centre"][valid]).all()
    cells = ([5, 2, 10], [7, 4, 8])
    win = extract_windows(features, *cells, bundle.window, bundle.padding)
    cam = gradcam(bundle.network(), win, "conv2")
    np.testing.assert_allclose(maps["centre"][cells], cam[:, 2, 2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps["mean"][cells], cam.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    single = gradcam_map(bundle, features, valid, layer="conv2", reduce="mean")
    np.testing.assert_allclose(single, maps["mean"], rtol=1e-5, atol=1e-7)


def test_attribution_maps_and_map_summary(study: Study) -> None:
    bundle = study_bundle(study)
    features = features_of(bundle, study)
    valid = study.valid
    names = bundle.channels
    maps = attribution_maps(bundle, features, valid, names, top_k=2, n_steps=4, batch_size=100)
    assert len(maps) == 2 and all(m.shape == study.grid.shape for m in maps.values())
    cells = ([3, 10], [4, 8])
    win = extract_windows(features, *cells, bundle.window, bundle.padding)
    attr, _ = integrated_gradients(bundle.network(), win, n_steps=4)
    for name, image in maps.items():
        k = names.index(name)
        np.testing.assert_allclose(image[cells], attr[:, k].sum(axis=(1, 2)), rtol=1e-4, atol=1e-6)
    chosen = attribution_maps(bundle, features, valid, names, elements=[names[3]], n_steps=2)
    assert list(chosen) == [names[3]]
    summary = map_sampling_summary(bundle, features, valid, "conv3", max_cells=30, seed=4)
    again = map_sampling_summary(bundle, features, valid, "conv3", max_cells=30, seed=4)
    assert summary == again and summary["sampled_cells"] == 30
    assert summary["valid_cells"] == int(valid.sum()) and summary["scale"] == 2
    assert summary["all"]["n_windows"] == 30 and summary["all"]["mean_offset_cells"] > 0


@pytest.fixture(scope="module")
def explained(
    study: Study, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    bundle = study_bundle(study)
    out = tmp_path_factory.mktemp("explain") / "run"
    # The CLI's progress display shows each task's "info" field: every task must define it.
    progress = Progress(
        TextColumn("{task.description} {task.fields[info]}"), console=Console(file=io.StringIO())
    )
    with progress:
        index = explain_model(
            bundle,
            study,
            out,
            sites=[("my point", 10, 2)],
            element=bundle.channels[0],
            top_k=2,
            ig_steps=16,
            map_ig_steps=4,
            map_sample=40,
            progress=progress,
        )
        progress.refresh()
    # Site figures, map offsets for conv2 and conv3, the Grad-CAM map, the attribution maps.
    assert len(progress.tasks) == 5
    assert all(t.finished and "info" in t.fields for t in progress.tasks)
    return out, index


def test_explain_model_writes_what_index_lists(
    explained: tuple[Path, dict[str, Any]], study: Study
) -> None:
    out, index = explained
    on_disk = json.loads((out / "index.json").read_text())
    assert on_disk["files"] == index["files"]
    listed = {f["path"] for f in on_disk["files"]}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written - {"index.json", MARKER} == listed
    assert all(f["description"] for f in on_disk["files"])
    n_deposits = int((study.sites.labels == 1).sum())
    ids = [s["id"] for s in on_disk["sites"]]
    assert len(ids) == n_deposits + 1 and ids[-1] == "my point"
    assert "gradcam/my_point.png" in listed
    for layer in ("conv2", "conv3"):
        assert f"sampling/my_point_{layer}.png" in listed
        assert f"offsets/{ids[0]}_{layer}.png" in listed
    assert not list(out.parent.glob(".run.*"))  # the build folder is gone


def test_explain_model_map_geotiffs_sit_on_the_input_grid(
    explained: tuple[Path, dict[str, Any]], study: Study
) -> None:
    out, index = explained
    bundle = study_bundle(study)
    features = features_of(bundle, study)
    with rasterio.open(out / "gradcam_map.tif") as ds:
        assert (ds.height, ds.width) == study.grid.shape and ds.count == 2
        assert ds.transform == study.grid.transform and ds.crs == study.grid.crs
        assert ds.descriptions == ("gradcam_conv2_centre", "gradcam_conv2_mean")
        centre = ds.read(1)
    expected = gradcam_map(bundle, features, study.valid, layer="conv2")
    np.testing.assert_allclose(centre, expected, rtol=1e-5, atol=1e-7)
    # It opens styled in QGIS: band 1 named, ramp over its values.
    qml = (out / "gradcam_map.qml").read_text()
    assert 'value="gradcam_conv2_centre"' in qml
    assert f'classificationMax="{np.nanmax(centre):.10g}"' in qml
    # Top-2 elements by mean contribution at the deposits, plus the requested element.
    table = pd.read_csv(out / "element_attribution.csv", index_col="id")
    deposits = table[table["label"] == "deposit"][bundle.channels]
    top = list(deposits.mean().sort_values(ascending=False).index[:2])
    mapped = top + [e for e in [bundle.channels[0]] if e not in top]
    assert index["mapped_elements"] == mapped
    assert index["element"] == bundle.channels[0] and index["element_chosen_by"] == "user"
    for element in mapped:
        with rasterio.open(out / f"attribution_{element}.tif") as ds:
            assert ds.transform == study.grid.transform and ds.shape == study.grid.shape


def test_explain_model_tables(explained: tuple[Path, dict[str, Any]], study: Study) -> None:
    out, _ = explained
    bundle = study_bundle(study)
    table = pd.read_csv(out / "element_attribution.csv", index_col="id", dtype={"id": str})
    assert list(table["label"]) == ["deposit", "point"]
    # Each row's contributions and its logit change differ by exactly the reported delta.
    gap = table[bundle.channels].sum(axis=1) - (table["logit"] - table["baseline_logit"])
    np.testing.assert_allclose(gap, table["convergence_delta"], atol=1e-4)
    x, y = study.grid.xy(table["row"].to_numpy(), table["col"].to_numpy())
    np.testing.assert_allclose(table["x"], x)
    np.testing.assert_allclose(table["y"], y)
    summary = json.loads((out / "sampling_summary.json").read_text())
    assert set(summary["layers"]) == {"conv2", "conv3"}
    conv2 = summary["layers"]["conv2"]
    assert conv2["sites"]["deposit"]["n_windows"] == 1
    assert (
        conv2["sites"]["all"]["n_windows"] == 2 and conv2["sites"]["background"]["n_windows"] == 0
    )
    assert conv2["map"]["sampled_cells"] == 40
    assert 0 < conv2["sites"]["all"]["mean_mask"] < 1


def test_explain_model_refuses_to_overwrite(
    explained: tuple[Path, dict[str, Any]], study: Study
) -> None:
    out, _ = explained
    before = (out / "index.json").read_text()
    with pytest.raises(OutputExistsError):
        explain_model(study_bundle(study), study, out, map_outputs=False, ig_steps=2)
    assert (out / "index.json").read_text() == before


def test_explain_cnn_without_maps(study: Study, tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    out.mkdir()
    mark_output(out, "explain")  # an earlier explanation, whose file gkdcn wrote ...
    write_text(out / "old.txt", "x")
    index = explain_model(
        study_bundle(study, "cnn"),
        study,
        out,
        sites="all",
        layer="conv3",
        map_outputs=False,
        ig_steps=4,
        overwrite=True,
    )
    files = {f["path"] for f in index["files"]}
    assert not (out / "old.txt").exists()  # replaced whole
    # No element given: the panels show the element contributing most at the deposits.
    assert index["element"] == index["element_ranking"][0]
    assert index["element_chosen_by"] == "top contribution"
    assert index["sampling_layers"] == [] and not (out / "sampling").exists()
    assert not any(f.endswith(".tif") for f in files) and "sampling_summary.json" not in files
    assert len([f for f in files if f.startswith("gradcam/")]) == len(study.sites)
    with pytest.raises(GkdcnError, match="unknown layer"):
        explain_model(study_bundle(study), study, tmp_path / "x", layer="head")
    with pytest.raises(GkdcnError, match="outside"):
        select_sites(study, [("far", 100, 1)])


# The index as explain_model wrote it before its steps were split into explain.sites,
# explain.maps and explain.index (recorded from that code on these two cases): keys in order,
# settings, layers, sites and every file name. Values that only the random tiny networks decide
# (the element ranking, the integrated-gradients notes) are left out; the order of the
# attribution maps follows the ranking, so it is read from "mapped_elements".
INDEX_KEYS = [
    "format",
    "version",
    "model",
    "model_file",
    "settings",
    "gradcam_layer",
    "sampling_layers",
    "element",
    "element_chosen_by",
    "element_ranking",
    "mapped_elements",
    "units",
    "sites",
    "files",
    "notes",
]
UNITS = {
    "gradcam": "logit units, raw (not normalised per window)",
    "attribution": "logit units, summed over the window",
    "offsets": "window cells",
}
SITE_KEYS = ["id", "label", "row", "col", "x", "y", "files"]


def site_figures(stem: str, layers: list[str]) -> list[str]:
    return [f"gradcam/{stem}.png"] + [
        f"{folder}/{stem}_{layer}.png" for layer in layers for folder in ("sampling", "offsets")
    ]


def test_explain_model_index_is_the_one_before_the_split(
    explained: tuple[Path, dict[str, Any]],
) -> None:
    out, returned = explained
    index = json.loads((out / "index.json").read_text())
    assert list(index) == INDEX_KEYS
    assert returned == {**index, "out_dir": str(out)}
    assert index["format"] == "gkdcn-explanations" and index["version"] == 1
    assert index["model"] == {
        "kind": "dcn",
        "window": 5,
        "padding": "zero",
        "channels": ["Zn", "Cu", "Au", "As"],
    }
    assert index["model_file"] is None
    assert index["settings"] == {
        "sites": "custom",
        "layer": None,
        "element": "Zn",
        "top_k": 2,
        "map_outputs": True,
        "ig_steps": 16,
        "map_ig_steps": 4,
    }
    assert index["gradcam_layer"] == "conv2"
    assert index["sampling_layers"] == ["conv2", "conv3"]
    assert index["element"] == "Zn" and index["element_chosen_by"] == "user"
    assert sorted(index["element_ranking"]) == ["As", "Au", "Cu", "Zn"]
    assert sorted(index["mapped_elements"]) == ["As", "Cu", "Zn"]
    assert index["units"] == UNITS
    assert [list(site) for site in index["sites"]] == [SITE_KEYS, SITE_KEYS]
    assert [(s["id"], s["label"], s["row"], s["col"]) for s in index["sites"]] == [
        ("D01", "deposit", 4, 5),
        ("my point", "point", 10, 2),
    ]
    assert [(s["x"], s["y"]) for s in index["sites"]] == [
        (505500.0, 3995500.0),
        (502500.0, 3989500.0),
    ]
    layers = ["conv2", "conv3"]
    assert [s["files"] for s in index["sites"]] == [
        site_figures("D01", layers),
        site_figures("my_point", layers),
    ]
    assert [list(f) for f in index["files"]] == [["path", "description"]] * 18
    assert [f["path"] for f in index["files"]] == [
        "gradcam/D01.png",
        "gradcam/my_point.png",
        "sampling/D01_conv2.png",
        "offsets/D01_conv2.png",
        "sampling/my_point_conv2.png",
        "offsets/my_point_conv2.png",
        "sampling/D01_conv3.png",
        "offsets/D01_conv3.png",
        "sampling/my_point_conv3.png",
        "offsets/my_point_conv3.png",
        "element_attribution.csv",
        "element_ranking.png",
        "sampling_summary.json",
        "gradcam_map.tif",
        "gradcam_map.qml",
        *[f"attribution_{e}.tif" for e in index["mapped_elements"]],
    ]
    descriptions = {f["path"]: f["description"] for f in index["files"]}
    assert (
        descriptions["gradcam/my_point.png"] == "Grad-CAM at conv2 for site my point (logit units)"
    )
    assert descriptions["attribution_Zn.tif"] == (
        "contribution of Zn to the logit of the window centred on each cell "
        "(logit units, integrated gradients with 4 steps)"
    )
    assert index["notes"] == []


def test_explain_model_index_without_maps_is_the_one_before_the_split(
    study: Study, tmp_path: Path
) -> None:
    index = explain_model(
        study_bundle(study, "cnn"),
        study,
        tmp_path / "cnn",
        sites="all",
        layer="conv3",
        map_outputs=False,
        ig_steps=4,
    )
    assert list(index) == [*INDEX_KEYS, "out_dir"]
    assert index["model"]["kind"] == "cnn" and index["model_file"] is None
    assert index["settings"] == {
        "sites": "all",
        "layer": "conv3",
        "element": None,
        "top_k": 3,
        "map_outputs": False,
        "ig_steps": 4,
        "map_ig_steps": 16,
    }
    assert index["gradcam_layer"] == "conv3" and index["sampling_layers"] == []
    assert index["element"] == index["element_ranking"][0]
    assert index["element_chosen_by"] == "top contribution"
    assert index["mapped_elements"] == [] and index["units"] == UNITS
    assert [(s["id"], s["label"], s["files"]) for s in index["sites"]] == [
        ("D01", "deposit", ["gradcam/D01.png"]),
        ("N02", "non-deposit", ["gradcam/N02.png"]),
    ]
    assert [f["path"] for f in index["files"]] == [
        "gradcam/D01.png",
        "gradcam/N02.png",
        "element_attribution.csv",
        "element_ranking.png",
    ]
