"""A synthetic geochemical survey: point samples drawn from a synthetic district.

A real survey arrives as a table of samples, not as grids. :func:`make_survey` draws ``n`` sample
sites at random over the district's valid cells (none in its nodata holes), reads every element
at the cell under each site, multiplies it by log-normal analytical noise and then writes it the
way laboratories report: values below an element's detection limit as the negative limit
(``-0.5`` = "below 0.5"), a few "not analysed" entries as ``-9999`` and a few duplicate rows
(the same sample entered twice). Gridding the table (:mod:`gkdcn.data.gridding`) can then be
checked against the district's own rasters. Everything follows from one seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from gkdcn.data.synthetic import District, SyntheticSpec, make_district
from gkdcn.errors import GkdcnError
from gkdcn.io.atomic import atomic_path

#: Code for "not analysed" in a synthetic survey.
NOT_ANALYSED = -9999.0
#: Share of entries reported "not analysed", and of rows entered twice.
NOT_ANALYSED_SHARE = 0.005
DUPLICATE_SHARE = 0.005
#: Relative analytical precision (log10 standard deviation of the multiplicative noise).
LOG_NOISE = 0.02
# Detection limits as a quantile of each element's concentrations: the lowest few percent are
# reported "below detection".
_DETECTION_QUANTILE = 0.02
_SIG_DIGITS = 4


def detection_limits(district: District) -> dict[str, float]:
    """Per element: a round detection limit near the 2nd percentile of its concentrations."""
    limits: dict[str, float] = {}
    for name, band in zip(district.names, district.values, strict=True):
        q = float(np.nanquantile(band, _DETECTION_QUANTILE))
        limits[name] = float(f"{q:.1g}")
    return limits


def make_survey(district: District, n: int, seed: int = 0) -> pd.DataFrame:
    """A sample table ``sample_id, x, y, <element>...`` of ``n`` samples (plus duplicate rows).

    Coordinates are in the district's CRS; concentrations in the element's unit, with the
    reporting codes of the module docstring.
    """
    if n < 3:
        raise GkdcnError(f"--samples must be at least 3, not {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(16,)))
    valid = np.isfinite(district.values).all(axis=0)
    cells = np.flatnonzero(valid.ravel())
    pick = rng.choice(cells, size=n, replace=True)
    rows, cols = np.unravel_index(pick, valid.shape)
    # A random position inside the picked cell: sites are not on cell centres.
    t = district.grid.transform
    fx, fy = rng.uniform(0, 1, size=(2, n))
    x = t.c + (cols + fx) * t.a
    y = t.f + (rows + fy) * t.e
    limits = detection_limits(district)
    frame: dict[str, np.ndarray] = {
        "sample_id": np.array([f"S{i + 1:05d}" for i in range(n)], dtype=object),
        "x": np.round(x, 1),
        "y": np.round(y, 1),
    }
    for name, band in zip(district.names, district.values, strict=True):
        true = band[rows, cols].astype(np.float64)
        measured = true * 10.0 ** rng.normal(0.0, LOG_NOISE, size=n)
        measured = np.array([float(f"{v:.{_SIG_DIGITS}g}") for v in measured])
        measured[measured < limits[name]] = -limits[name]
        measured[rng.uniform(size=n) < NOT_ANALYSED_SHARE] = NOT_ANALYSED
        frame[name] = measured
    table = pd.DataFrame(frame)
    dupes = rng.uniform(size=n) < DUPLICATE_SHARE
    if dupes.any():
        table = pd.concat([table, table[dupes]], ignore_index=True)
    return table


def write_survey(
    path: str | Path,
    spec: SyntheticSpec,
    n: int,
    overwrite: bool = False,
    district: District | None = None,
) -> Path:
    """Write the survey of ``n`` samples of the district of ``spec`` to a CSV, atomically."""
    path = Path(path)
    table = make_survey(district if district is not None else make_district(spec), n, spec.seed)
    with atomic_path(path, overwrite) as tmp:
        table.to_csv(tmp, index=False)
    return path


SURVEY_GRIDS = "survey_grids"
"""Folder of a synthetic district that holds its survey gridded by :func:`write_survey_study`."""
SURVEY_STUDY = "survey.toml"
"""The study config of a synthetic district that reads the gridded survey, not the true layers."""


def write_survey_study(
    district_dir: str | Path,
    spec: SyntheticSpec,
    n: int,
    cell: float,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Make a district look like a real survey: sample it, grid the samples, point a config at them.

    Into ``district_dir`` (a district :func:`~gkdcn.data.synthetic.generate_district` wrote):
    ``samples.csv`` (:func:`make_survey`: detection-limit and not-analysed codes, duplicates),
    the samples IDW-gridded onto ``cell`` map units in :data:`SURVEY_GRIDS` (what ``gkdcn grid``
    does), and :data:`SURVEY_STUDY`, the district's own study config with its element layers
    replaced by the gridded ones (deposits, faults and every other setting unchanged). A model
    trained on it sees what a geochemist's grids show: sparse samples, smoothed by
    interpolation, censored below detection. Returns the path of the config.
    """
    from gkdcn.data.gridding import GriddingOptions, grid_file
    from gkdcn.data.synthetic import study_config_dict
    from gkdcn.io.atomic import write_text
    from gkdcn.io.toml import to_toml

    folder = Path(district_dir)
    samples = write_survey(folder / "samples.csv", spec, n, overwrite=overwrite)
    options = GriddingOptions(cell=cell, crs=spec.crs, nodata=(NOT_ANALYSED,), seed=spec.seed)
    grid_file(samples, folder / SURVEY_GRIDS, options, overwrite=overwrite, log=log)
    # Distances the config sets in cells of the grid (non-deposits 3 cells from deposits, fault
    # rings 2 cells wide) are measured in cells of the gridded survey.
    config = study_config_dict(spec.model_copy(update={"cell_size": cell}))
    config["name"] = f"{config['name']}-survey"
    config["elements"] = {"path": SURVEY_GRIDS}
    header = (
        f"# The synthetic district seen through a survey: {n} point samples (samples.csv)\n"
        f"# IDW-gridded onto {cell:g} map-unit cells ({SURVEY_GRIDS}/); deposits and faults as\n"
        "# in study.toml, which reads the district's true layers.\n"
    )
    path = folder / SURVEY_STUDY
    write_text(path, header + to_toml(config), overwrite=overwrite)
    return path
