"""Shared fixtures (pytest finds them in every folder under ``tests``); the plain helpers they
use, and that tests import, are in ``helpers.py``.

``make_raster(name, data, ...)`` writes a GeoTIFF under ``tmp_path`` and returns its path;
``tiny_study`` writes a 4-layer, 20 x 24 study (elements folder, deposit / non-deposit rasters,
fault-weight raster) and returns its :class:`~gkdcn.config.StudyConfig`.

The folders mirror the source: ``io/``, ``data/``, ``models/``, ``training/`` (training,
pretraining, precision, selection of the epoch), ``compare/``, ``explain/``, ``report/``,
``cli/``; the top level holds the tests of gkdcn's single-module stages (``predict``,
``evaluate``, ``runner``, ``cluster``) and of the whole (demo, architecture, docs, front door,
the real data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gkdcn.config import StudyConfig, config_from_dict
from helpers import write_raster, write_tiny_study


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Every test starts with the process's PyTorch thread count: a command run in-process
    (``gkdcn --threads 1 ...`` through typer's runner) sets it for the whole process, and a
    later test would otherwise run with it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_raster("dir/name.tif", data, crs=..., transform=..., nodata=...)``."""

    def make(name: str, data: np.ndarray, **kwargs: Any) -> Path:
        return write_raster(tmp_path / name, data, **kwargs)

    return make


@pytest.fixture
def tiny_study(tmp_path: Path) -> StudyConfig:
    """The tiny study written under ``tmp_path / "study"``, as a validated config."""
    root = tmp_path / "study"
    return config_from_dict(write_tiny_study(root), base_dir=root)
