"""Shared test helpers (plain functions and constants; the fixtures are in ``conftest.py``).

Every test module imports these as ``from helpers import ...`` (``tests`` is on the import path
through ``pythonpath`` in ``[tool.pytest.ini_options]``): tiny GeoTIFF writers, the tiny
complete study (a 4-layer, 20 x 24 district with deposit / non-deposit rasters and a fault
weight), site tables, seeded random network states, and :func:`run_cli`, the one way a test runs
the command line in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine

from gkdcn.config import StudyConfig, config_from_dict
from gkdcn.data.sites import SiteTable

CRS = "EPSG:32645"
CELL = 1000.0
ORIGIN = (500_000.0, 4_000_000.0)
TRANSFORM = Affine(CELL, 0.0, ORIGIN[0], 0.0, -CELL, ORIGIN[1])

TINY_SHAPE = (20, 24)
TINY_LAYERS = ("Cu", "Au", "As", "Zn")  # sorted order: As, Au, Cu, Zn
TINY_DEPOSITS = ((4, 5), (6, 15), (12, 8), (15, 18))
TINY_NON_DEPOSITS = ((3, 20), (9, 3), (16, 4), (17, 12))


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = CRS,
    transform: Affine = TRANSFORM,
    nodata: float | None = None,
    descriptions: Sequence[str | None] | None = None,
    dtype: str | None = None,
) -> Path:
    """Write ``(H, W)`` or ``(B, H, W)`` data as a GeoTIFF (plain rasterio, no gkdcn code)."""
    array = np.asarray(data)
    if array.ndim == 2:
        array = array[np.newaxis]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=array.shape[1],
        width=array.shape[2],
        count=array.shape[0],
        dtype=dtype or array.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(array.astype(dtype or array.dtype))
        for i, text in enumerate(descriptions or [], start=1):
            if text is not None:
                dst.set_band_description(i, text)
    return path


def random_state(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """``net``'s state with random weights, BatchNorm statistics and (non-zero) offset and mask
    branches, so deformable layers really sample off the regular grid."""
    gen = torch.Generator().manual_seed(seed)
    state = net.state_dict()
    for name, value in state.items():
        if not value.is_floating_point():
            continue
        if name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(value.shape, generator=gen)
        else:
            state[name] = 0.3 * torch.randn(value.shape, generator=gen)
    return state


def tiny_layers(seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded log-normal 'concentrations' for the tiny study's layers (float32, all positive)."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.lognormal(mean=i, sigma=0.5, size=TINY_SHAPE).astype(np.float32)
        for i, name in enumerate(TINY_LAYERS)
    }


def write_tiny_study(root: Path, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Write the tiny study's files under ``root``; return its config as a dict (paths relative).

    Deposits are cells equal to 1 in ``deposits.tif`` (uint8, nodata 255); non-deposits cells
    equal to 0 in ``non_deposits.tif`` (1 elsewhere, the Tianshan coding); ``weights.tif`` is a
    fault weight in [0, 1] falling off with distance from column 10.
    """
    for name, values in tiny_layers(seed).items():
        write_raster(root / "elements" / f"{name}.tif", values, nodata=-9999.0)
    deposits = np.zeros(TINY_SHAPE, dtype=np.uint8)
    for r, c in TINY_DEPOSITS:
        deposits[r, c] = 1
    deposits[0, 0] = 255  # a nodata cell: never a site
    write_raster(root / "deposits.tif", deposits, nodata=255)
    non_deposits = np.ones(TINY_SHAPE, dtype=np.uint8)
    for r, c in TINY_NON_DEPOSITS:
        non_deposits[r, c] = 0
    write_raster(root / "non_deposits.tif", non_deposits, nodata=255)
    cols = np.arange(TINY_SHAPE[1])
    weight = np.clip(1 - np.abs(cols - 10) / 8, 0, 1)[np.newaxis].repeat(TINY_SHAPE[0], axis=0)
    write_raster(root / "weights.tif", weight.astype(np.float32))
    config: dict[str, Any] = {
        "name": "tiny",
        "elements": {"path": "elements"},
        "sites": {
            "deposits": {"raster": "deposits.tif", "value": 1},
            "non_deposits": {"raster": "non_deposits.tif", "value": 0},
        },
        "knowledge": {"weights": "weights.tif"},
        "samples": {"window": 5, "shift": 3},
        "split": {"method": "site", "validation_fraction": 0.25, "seed": 0},
    }
    config.update(overrides)
    return config


def make_sites(rows: list[int], cols: list[int], labels: list[int]) -> SiteTable:
    """A site table with ids ``s0``, ``s1``, ... at the given cells and labels."""
    return SiteTable(
        ids=np.array([f"s{i}" for i in range(len(rows))]),
        labels=np.asarray(labels, dtype=np.int8),
        rows=np.asarray(rows, dtype=np.int64),
        cols=np.asarray(cols, dtype=np.int64),
    )


def tiny_comparison_config(
    root: Path, *, epochs: int = 2, seeds: int = 2, **compare: Any
) -> StudyConfig:
    """The tiny study under ``root`` set up for a quick comparison (small networks, a site
    split with a 2-unit exclusion radius, authors' and leave-one-deposit-out protocols, every
    background cell); ``compare`` overrides keys of its ``[compare]`` table."""
    raw = write_tiny_study(
        root,
        train={"epochs": epochs, "width": 8, "batch_size": 16, "patience": None},
        split={"method": "site", "validation_fraction": 0.25, "seed": 0, "exclusion_radius": 2.0},
        compare={
            "seeds": seeds,
            "models": ["cnn", "gk-dcn"],
            "protocols": ["authors", "lodo"],
            "bootstrap": 20,
            "heldout_background": 0,
        }
        | compare,
    )
    return config_from_dict(raw, base_dir=root)


def run_cli(*args: str) -> tuple[int, str]:
    """Run ``gkdcn --threads 1 ARGS`` in-process; return its exit status and its output.

    The output is what a terminal shows (standard output and standard error together).
    """
    from typer.testing import CliRunner

    from gkdcn.cli import app

    result = CliRunner().invoke(app, ["--threads", "1", *args])
    return result.exit_code, result.output
