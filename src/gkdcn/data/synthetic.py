"""A synthetic exploration district for demos, tests and figures.

The district mimics a stream-sediment survey over an orogenic Au(-Cu) belt: a few curved
ore-controlling faults cross it; mineralised anomaly bodies (curved, elongated, branching) grow out
of the faults and carry the deposits. A small district scatters its bodies along the faults, one
deposit or two each; a larger one (more than :data:`SCATTERED_MAX_DEPOSITS` deposits, or
``n_systems`` set) clusters them into several fault-controlled anomaly systems, each a stretch of
one fault with a few bodies, and leaves some mineralised bodies without any known deposit
(undiscovered, as in real districts: a model that ranks them high is right). Pathfinder elements express each body with element-specific
contrast, width and a lateral offset (zonation: Cu-Mo-Bi-W proximal, As-Sb-Hg-Pb-Zn distal); barren
anomalies (black-shale or mafic signatures, some far from any fault) carry no deposit; the
background is spatially correlated and log-normal with realistic medians; a few lakes leave holes
of nodata. Everything follows from one seed.

Layout of a generated folder::

    elements/<name>.tif   float32 GeoTIFF per element, nodata -9999
    deposits.csv          site_id, x, y (map units)
    faults.gpkg           LineString layer "faults"
    truth.tif             uint8: 1 mineralised body with known deposits, 3 mineralised body without
                          (undiscovered), 2 barren anomaly, 0 background, 255 nodata
    bodies.csv            body_id, kind, system, deposits, x, y (each anomaly body's strongest point)
    study.toml            a complete study config (paths relative to the folder)
    README.md             what was generated
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from scipy.ndimage import binary_dilation, gaussian_filter, gaussian_filter1d
from shapely.geometry import LineString, box

from gkdcn.config import PointSitesConfig, config_from_dict
from gkdcn.data.knowledge import distance_to_lines
from gkdcn.errors import GkdcnError, InputError, validation_message
from gkdcn.io.atomic import atomic_dir, check_writable
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import write_geotiff
from gkdcn.io.toml import to_toml
from gkdcn.io.vectors import write_vector

NODATA = -9999.0
TRUTH_BACKGROUND = 0
TRUTH_MINERALISED = 1
TRUTH_BARREN = 2
TRUTH_UNDISCOVERED = 3
TRUTH_NODATA = 255

#: The ore-related pathfinders whose combined score marks the anomalies (always generated).
PATHFINDERS: tuple[str, ...] = ("Au", "As", "Sb", "Hg", "Cu")

# Deposits sit at cells whose pathfinder score is at least this percentile of all valid cells and
# that lie this close to a fault (in cells); the second pair is the fallback if too few qualify.
_DEPOSIT_PERCENTILE = (92.0, 90.5)
_DEPOSIT_FAULT_CELLS = (3.0, 4.0)
# Systems mode: deposits need only a moderately anomalous cell (top 30 %, relaxed to 40 % and
# 50 % if they do not fit) within 4 (6, 7) cells of a fault, and bodies vary in strength, so the
# geochemistry alone does not give every deposit away.
_SYSTEM_DEPOSIT_PERCENTILE = (70.0, 60.0, 50.0)
_SYSTEM_DEPOSIT_FAULT_CELLS = (4.0, 6.0, 7.0)
_SYSTEM_BODY_SCALE = (0.25, 0.9)
# Systems mode: this share of the bodies with known deposits lies under transported cover, its
# surface expression damped to this factor; their deposits sit near a fault whatever the
# geochemistry says, so only the geological prior points to them.
_COVERED_SHARE = 0.2
_COVER_DAMPING = 0.2
# A cell belongs to a body where its unit-amplitude footprint exceeds this (about 1.5 radii).
_FOOTPRINT = 0.32
#: Up to this many deposits a district scatters its bodies along the faults (the small default
#: district, unchanged); above it, ``n_systems`` defaults to one anomaly system per 10 deposits.
SCATTERED_MAX_DEPOSITS = 12
# Systems mode: deposits per known body on average, and the share of undiscovered bodies.
_DEPOSITS_PER_BODY = 3.0
_UNDISCOVERED_SHARE = 0.3


@dataclass(frozen=True)
class ElementSpec:
    """How one element is simulated.

    ``loadings`` are on three shared latent fields (mafic, felsic, regional); ``corr`` is the
    correlation length in cells of the element's own field; ``contrast`` is the log10 uplift at
    the core of a mineralised body; ``offset`` (cells) shifts its anomaly sideways from the body
    axis (positive = distal side) and ``halo`` scales its width.
    """

    name: str
    unit: str
    median: float
    log_sd: float
    corr: float
    loadings: tuple[float, float, float]
    contrast: float = 0.0
    offset: float = 0.0
    halo: float = 1.0


# Order matters: the first n_layers are generated. Medians are typical stream-sediment values.
ELEMENTS: tuple[ElementSpec, ...] = (
    ElementSpec("Au", "ppb", 1.8, 0.30, 1.5, (0.0, 0.0, 0.2), 1.40, 0.0, 1.0),
    ElementSpec("As", "ppm", 9.0, 0.30, 3.0, (0.1, 0.0, 0.3), 1.10, 0.8, 1.3),
    ElementSpec("Sb", "ppm", 0.7, 0.28, 3.0, (0.0, 0.0, 0.3), 0.95, 1.5, 1.5),
    ElementSpec("Hg", "ppb", 28.0, 0.30, 4.0, (0.0, 0.0, 0.25), 0.75, 2.2, 1.8),
    ElementSpec("Cu", "ppm", 26.0, 0.22, 5.0, (0.55, 0.0, 0.2), 0.70, -0.8, 1.0),
    ElementSpec("Mo", "ppm", 0.8, 0.25, 4.0, (0.0, 0.3, 0.2), 0.40, -1.4, 0.8),
    ElementSpec("Bi", "ppm", 0.3, 0.25, 4.0, (0.0, 0.35, 0.1), 0.45, -1.0, 0.9),
    ElementSpec("W", "ppm", 1.6, 0.25, 5.0, (0.0, 0.45, 0.1), 0.35, -1.6, 0.9),
    ElementSpec("Pb", "ppm", 22.0, 0.18, 6.0, (0.0, 0.4, 0.2), 0.22, 2.8, 1.6),
    ElementSpec("Zn", "ppm", 70.0, 0.16, 6.0, (0.35, 0.2, 0.2), 0.18, 3.0, 1.7),
    ElementSpec("Ag", "ppb", 75.0, 0.22, 4.0, (0.0, 0.2, 0.2), 0.45, 1.8, 1.4),
    ElementSpec("Co", "ppm", 12.0, 0.20, 7.0, (0.8, 0.0, 0.1)),
    ElementSpec("Ni", "ppm", 28.0, 0.22, 7.0, (0.8, 0.0, 0.1)),
    ElementSpec("Cr", "ppm", 60.0, 0.22, 8.0, (0.75, 0.0, 0.1)),
    ElementSpec("Mn", "ppm", 700.0, 0.15, 8.0, (0.5, 0.0, 0.2)),
    ElementSpec("Ba", "ppm", 480.0, 0.18, 9.0, (0.0, 0.5, 0.2)),
    ElementSpec("Sr", "ppm", 220.0, 0.20, 9.0, (0.0, 0.3, 0.3)),
    ElementSpec("Zr", "ppm", 190.0, 0.14, 10.0, (-0.3, 0.5, 0.2)),
    ElementSpec("V", "ppm", 85.0, 0.15, 8.0, (0.7, 0.0, 0.1)),
    ElementSpec("Li", "ppm", 25.0, 0.15, 9.0, (0.0, 0.5, 0.2)),
    ElementSpec("La", "ppm", 35.0, 0.13, 10.0, (0.0, 0.6, 0.1)),
    ElementSpec("Th", "ppm", 11.0, 0.15, 10.0, (0.0, 0.7, 0.1)),
    ElementSpec("U", "ppm", 2.4, 0.18, 9.0, (0.0, 0.6, 0.1)),
    ElementSpec("SiO2", "%", 62.0, 0.04, 12.0, (-0.5, 0.5, 0.2)),
    ElementSpec("Al2O3", "%", 13.0, 0.05, 12.0, (0.2, 0.3, 0.2)),
    ElementSpec("Fe2O3", "%", 5.2, 0.10, 10.0, (0.7, 0.0, 0.1)),
    ElementSpec("MgO", "%", 2.1, 0.15, 10.0, (0.75, 0.0, 0.1)),
    ElementSpec("CaO", "%", 3.5, 0.25, 12.0, (0.3, -0.2, 0.4)),
    ElementSpec("K2O", "%", 2.4, 0.10, 12.0, (-0.2, 0.7, 0.1)),
    ElementSpec("Na2O", "%", 2.2, 0.10, 12.0, (0.0, 0.5, 0.2)),
)
_LATENT_CORR = (10.0, 14.0, 28.0)  # mafic, felsic, regional correlation lengths in cells

# Barren anomalies: log10 contrasts of two common false-positive sources. Their pathfinder
# expression reaches about half to two thirds of a mineralised body's, so a model that reads the
# geochemistry alone is tempted by them.
BarrenStyle = Literal["black shale", "mafic"]
_BARREN_CONTRAST: dict[str, dict[str, float]] = {
    "black shale": {"Au": 0.45, "As": 1.00, "Sb": 0.85, "Hg": 0.60, "Cu": 0.35, "Mo": 0.90,
                    "Zn": 0.40, "Ag": 0.35, "Pb": 0.15, "V": 0.45, "Ba": 0.30, "U": 0.40},
    "mafic": {"Au": 0.35, "As": 0.45, "Sb": 0.25, "Cu": 0.90, "Co": 0.70, "Ni": 0.80,
              "Cr": 0.70, "Mn": 0.25, "V": 0.35, "Fe2O3": 0.25, "MgO": 0.35, "Zn": 0.20},
}  # fmt: skip


class SyntheticSpec(BaseModel):
    """Size, geometry and content of a synthetic district. ``origin`` is the top-left corner (x, y)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    height: int = Field(96, ge=32, le=4096)
    width: int = Field(128, ge=32, le=4096)
    cell_size: float = Field(1000.0, gt=0)
    crs: str = "EPSG:32645"
    origin: tuple[float, float] = (500000.0, 4600000.0)
    n_layers: int = Field(12, ge=len(PATHFINDERS), le=len(ELEMENTS))
    n_faults: int = Field(4, ge=1, le=16)
    n_deposits: int = Field(10, ge=1, le=200)
    n_barren_anomalies: int | None = Field(
        None, ge=0, le=100, description="default: 3, or 2 per anomaly system in systems mode"
    )
    n_systems: int | None = Field(
        None,
        ge=0,
        le=40,
        description="fault-controlled anomaly systems (clusters of bodies along one fault); "
        "0 = bodies scattered along the faults; default: 0 up to 12 deposits, else one per 10 "
        "deposits (at least 3)",
    )
    undiscovered: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="systems mode: share of mineralised bodies without a known deposit "
        "(default 0.3)",
    )
    nodata_holes: int = Field(2, ge=0, le=50)
    signature_spread: float = Field(
        0.0,
        ge=0,
        le=1,
        description="systems mode: how much an element's anomaly contrast differs between "
        "anomaly systems (each system scales each element's contrast by a factor drawn "
        "uniformly from 1 - spread .. 1 + spread; Au keeps its own); 0 = one signature for all",
    )
    seed: int = Field(0, ge=0)

    @field_validator("crs")
    @classmethod
    def _valid_crs(cls, value: str) -> str:
        try:
            crs = CRS.from_user_input(value)
        except CRSError as exc:
            raise ValueError(f"not a CRS ({exc})") from None
        if not crs.is_projected:
            raise ValueError("must be a projected CRS (distances are in map units)")
        return value

    @property
    def grid(self) -> Grid:
        """The district's element grid."""
        x0, y0 = self.origin
        return Grid(
            crs=CRS.from_user_input(self.crs),
            transform=Affine(self.cell_size, 0.0, x0, 0.0, -self.cell_size, y0),
            height=self.height,
            width=self.width,
        )

    @property
    def elements(self) -> tuple[ElementSpec, ...]:
        """The generated elements, in channel order."""
        return ELEMENTS[: self.n_layers]

    @property
    def systems(self) -> int:
        """The number of anomaly systems (0: bodies scattered along the faults)."""
        if self.n_systems is not None:
            return self.n_systems
        if self.n_deposits <= SCATTERED_MAX_DEPOSITS:
            return 0
        return max(3, round(self.n_deposits / 10))

    @property
    def barren_anomalies(self) -> int:
        """The number of barren anomalies."""
        if self.n_barren_anomalies is not None:
            return self.n_barren_anomalies
        return 2 * self.systems if self.systems else 3

    @property
    def undiscovered_share(self) -> float:
        """Share of mineralised bodies left without a known deposit (0 when scattered)."""
        if not self.systems:
            return 0.0
        return _UNDISCOVERED_SHARE if self.undiscovered is None else self.undiscovered


DEFAULT_SPEC = SyntheticSpec()


def spec_from_dict(raw: dict[str, Any]) -> SyntheticSpec:
    """Validate synthetic-district options; errors become one-line :class:`InputError`."""
    try:
        return SyntheticSpec.model_validate(raw)
    except ValidationError as exc:
        raise InputError("synthetic spec", validation_message(exc)) from None


@dataclass
class District:
    """An in-memory synthetic district (what :func:`generate_district` writes)."""

    spec: SyntheticSpec
    grid: Grid
    names: list[str]
    values: np.ndarray  # (C, H, W) float32 concentrations, NaN in nodata holes
    truth: np.ndarray  # (H, W) uint8, TRUTH_* codes
    fault_distance: np.ndarray  # (H, W) float64 map units
    faults: gpd.GeoDataFrame
    bodies: pd.DataFrame  # body_id, kind, system, deposits, x, y (strongest point, map units)
    deposit_ids: list[str]
    deposit_rows: np.ndarray
    deposit_cols: np.ndarray
    deposit_x: np.ndarray
    deposit_y: np.ndarray


@dataclass
class _Body:
    pts: np.ndarray  # (P, 2) skeleton points as (col, row) in cell units
    amp: np.ndarray  # (P,) relative amplitude along the skeleton
    rad: np.ndarray  # (P,) radius in cells
    zdir: np.ndarray  # (2,) unit vector towards the distal side
    barren: BarrenStyle | None  # None for a mineralised body
    scale: float  # overall amplitude
    system: int = -1  # anomaly system (systems mode), -1 otherwise
    undiscovered: bool = False  # a mineralised body that gets no deposit
    covered: bool = False  # under cover: weak surface expression, deposits placed regardless


# --------------------------------------------------------------------------------------------
# public API


def pathfinder_score(values: np.ndarray) -> np.ndarray:
    """Mean z-score of log10 concentrations over the given layers ``(k, H, W)``; NaN where any is NaN.

    Applied to the :data:`PATHFINDERS` layers this is the score deposits are placed by.
    """
    values = np.asarray(values, dtype=np.float64)
    logs = np.log10(np.where(values > 0, values, np.nan))
    valid = np.all(np.isfinite(logs), axis=0)
    z = np.zeros(values.shape[1:], dtype=np.float64)
    for layer in logs:
        sel = layer[valid]
        z += (layer - sel.mean()) / sel.std()
    z /= len(logs)
    z[~valid] = np.nan
    return z


def make_district(spec: SyntheticSpec = DEFAULT_SPEC) -> District:
    """Build the district in memory (no I/O). Deterministic in ``spec.seed``."""
    grid = spec.grid
    cs = spec.cell_size
    shape = grid.shape

    fault_lines = _make_faults(spec, _rng(spec.seed, 1))
    faults = gpd.GeoDataFrame(
        {
            "fault_id": [f"F{i + 1}" for i in range(len(fault_lines))],
            "kind": [kind for kind, _ in fault_lines],
        },
        geometry=[_to_map(line, spec) for _, line in fault_lines],
        crs=grid.crs,
    )
    fault_distance = distance_to_lines(faults, grid)
    dist_cells = fault_distance / cs

    rng_bodies = _rng(spec.seed, 2)
    lines = [line for _, line in fault_lines]
    if spec.systems:
        # Its own random stream, so the scattered layout's draws do not depend on this branch.
        main = [line for kind, line in fault_lines if kind == "main"] or lines
        ore = _system_bodies(spec, main, _rng(spec.seed, 8))
    else:
        ore = _ore_bodies(spec, lines, rng_bodies)
    barren = _barren_bodies(spec, dist_cells, ore, rng_bodies)
    holes = _holes(spec, [b.pts[_peak(b)] for b in ore], _rng(spec.seed, 3))

    footprints = [_stamp(shape, b.pts, np.ones_like(b.amp), b.rad) for b in ore + barren]
    truth = np.zeros(shape, dtype=np.uint8)
    for body, foot in zip(ore + barren, footprints, strict=True):
        if body.barren is not None:
            truth[foot >= _FOOTPRINT] = TRUTH_BARREN
    for undiscovered in (True, False):  # known bodies win where the two overlap
        for body, foot in zip(ore, footprints, strict=False):
            if body.undiscovered == undiscovered:
                code = TRUTH_UNDISCOVERED if undiscovered else TRUTH_MINERALISED
                truth[foot >= _FOOTPRINT] = code

    values = _element_values(spec, ore + barren)
    values[:, holes] = np.nan
    truth[holes] = TRUTH_NODATA

    pf = [i for i, e in enumerate(spec.elements) if e.name in PATHFINDERS]
    # Score on the float32 values that get written, so a reader recomputes exactly this score.
    score = pathfinder_score(values[pf])
    known = [i for i, b in enumerate(ore) if not b.undiscovered]
    ore_feet = [footprints[i] >= _FOOTPRINT for i in known]
    covered = [ore[i].covered for i in known]
    rows, cols, picked_in = _place_deposits(
        spec, ore_feet, covered, truth, score, dist_cells, holes, _rng(spec.seed, 4)
    )
    per_body = np.bincount(np.asarray(known)[picked_in], minlength=len(ore) + len(barren))
    bodies = _body_table(spec, ore + barren, per_body)

    jitter = _rng(spec.seed, 5).uniform(-0.35, 0.35, size=(2, len(rows))) * cs
    x, y = grid.xy(rows, cols)
    x = np.round(x + jitter[0], 1)
    y = np.round(y + jitter[1], 1)
    width = max(2, len(str(len(rows))))
    ids = [f"D{i + 1:0{width}d}" for i in range(len(rows))]
    return District(
        spec=spec,
        grid=grid,
        names=[e.name for e in spec.elements],
        values=values,
        truth=truth,
        fault_distance=fault_distance,
        faults=faults,
        bodies=bodies,
        deposit_ids=ids,
        deposit_rows=rows,
        deposit_cols=cols,
        deposit_x=x,
        deposit_y=y,
    )


def generate_district(
    out_dir: str | Path, spec: SyntheticSpec = DEFAULT_SPEC, overwrite: bool = False
) -> Path:
    """Write a synthetic district into ``out_dir`` (built aside, then moved into place).

    Returns the path of its ``study.toml``. Refuses to replace an existing ``out_dir`` unless
    ``overwrite`` is true, and leaves it untouched on any failure.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite, folder=True)
    district = make_district(spec)
    config = study_config_dict(spec)
    with atomic_dir(out_dir, overwrite=overwrite, command="synth") as tmp:
        (tmp / "elements").mkdir()
        for name, band in zip(district.names, district.values, strict=True):
            unit = next(e.unit for e in spec.elements if e.name == name)
            write_geotiff(
                tmp / "elements" / f"{name}.tif",
                band,
                district.grid,
                nodata=NODATA,
                descriptions=[name],
                tags=[{"unit": unit} if unit else {}],
            )
        write_geotiff(
            tmp / "truth.tif",
            district.truth,
            district.grid,
            nodata=TRUTH_NODATA,
            descriptions=["truth"],
            dtype="uint8",
        )
        (tmp / "deposits.csv").write_text(_deposits_csv(district), encoding="utf-8")
        district.bodies.to_csv(tmp / "bodies.csv", index=False, float_format="%.1f")
        write_vector(district.faults, tmp / "faults.gpkg", layer="faults", driver="GPKG")
        text = _study_toml(spec, config)
        _validate_study(text, tmp)
        (tmp / "study.toml").write_text(text, encoding="utf-8")
        (tmp / "README.md").write_text(_readme(district), encoding="utf-8")
    return out_dir / "study.toml"


def load_truth(out_dir: str | Path) -> np.ndarray:
    """The (H, W) uint8 truth raster of a generated district (TRUTH_* codes)."""
    path = Path(out_dir) / "truth.tif"
    if not path.exists():
        raise InputError(path, "not found (is this a folder made by generate_district?)")
    try:
        with rasterio.open(path) as src:
            return src.read(1)
    except RasterioIOError as exc:
        raise InputError(path, f"cannot read ({exc})") from None


def study_config_dict(spec: SyntheticSpec) -> dict[str, Any]:
    """The study config for a district generated with ``spec`` (paths relative to its folder)."""
    cs = spec.cell_size
    return {
        "name": f"synthetic-district-seed{spec.seed}",
        "align": "strict",
        "elements": {"path": "elements"},
        "sites": {
            "deposits": {
                "points": "deposits.csv",
                "x": "x",
                "y": "y",
                "crs": spec.crs,
                "id": "site_id",
            },
            "negatives": {"count": spec.n_deposits, "min_distance": 3 * cs, "seed": spec.seed},
        },
        "knowledge": {
            "faults": "faults.gpkg",
            "decay": {"kind": "rings", "ring_width": 2 * cs, "rings": 12, "exponent": 0.46},
        },
        "transform": {"method": "clr", "scaling": "standard"},
        "samples": {"window": 9, "shift": 3, "padding": "zero"},
        "split": {"method": "site", "validation_fraction": 0.2, "seed": spec.seed},
        "train": {"epochs": 40, "batch_size": 32, "lr": 1e-3, "patience": 10, "seed": spec.seed},
    }


# --------------------------------------------------------------------------------------------
# geometry


def _rng(seed: int, *key: int) -> np.random.Generator:
    # Independent streams per component: changing n_layers does not move faults or deposits.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _to_map(line: np.ndarray, spec: SyntheticSpec) -> LineString:
    x0, y0 = spec.origin
    cs = spec.cell_size
    return LineString(np.round(np.column_stack([x0 + line[:, 0] * cs, y0 - line[:, 1] * cs]), 1))


def _make_faults(spec: SyntheticSpec, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Curved fault traces in cell coordinates (col, row), clipped to the grid, ~0.5 cell spacing."""
    W, H = spec.width, spec.height
    frame = box(0, 0, W, H)
    n_cross = spec.n_faults // 4
    n_main = spec.n_faults - n_cross
    trend = math.radians(rng.uniform(10.0, 35.0))  # ENE-trending belt, as in the Tianshan
    centre = np.array([W / 2, H / 2])
    half_diag = math.hypot(W, H) / 2 + 5
    out: list[tuple[str, np.ndarray]] = []
    for k in range(spec.n_faults):
        main = k < n_main
        best: np.ndarray | None = None
        for _ in range(50):
            if main:
                theta = trend + math.radians(rng.normal(0.0, 6.0))
            else:
                theta = trend + rng.choice([-1, 1]) * math.radians(rng.uniform(55.0, 80.0))
            direction = np.array([math.cos(theta), -math.sin(theta)])  # rows grow southwards
            normal = np.array([math.sin(theta), math.cos(theta)])
            half = abs(normal[0]) * W / 2 + abs(normal[1]) * H / 2
            if main:  # spread the main faults across the belt
                u = (((k + 0.5) / n_main - 0.5) * 1.4 + rng.uniform(-0.1, 0.1)) * half
            else:
                u = rng.uniform(-0.4, 0.4) * half
            t = np.arange(-half_diag, half_diag + 1.0, 1.0)
            wiggle = gaussian_filter1d(rng.standard_normal(t.size), sigma=10.0)
            wiggle *= rng.uniform(1.5, 4.0) / max(wiggle.std(), 1e-12)
            bend = rng.uniform(-8.0, 8.0) * (t / half_diag) ** 2
            pts = centre + u * normal + t[:, None] * direction + (wiggle + bend)[:, None] * normal
            clipped = LineString(pts).intersection(frame)
            parts = getattr(clipped, "geoms", [clipped])
            longest = max(parts, key=lambda g: g.length)
            if longest.is_empty or longest.geom_type != "LineString":
                continue
            dense = np.asarray(longest.segmentize(0.5).coords)
            if best is None or len(dense) > len(best):
                best = dense
            if longest.length >= 0.6 * min(W, H):
                break
        if best is None:  # pragma: no cover - a line through the centre always crosses the frame
            raise GkdcnError("synthetic district: could not draw a fault across the grid")
        out.append(("main" if main else "cross", best))
    return out


def _walk(
    start: np.ndarray, heading: float, length: float, rng: np.random.Generator, turn_sd: float
) -> tuple[np.ndarray, np.ndarray]:
    """A persistent random walk (0.5-cell steps): points (n, 2) and headings (n,)."""
    n = max(2, int(length / 0.5))
    pts = np.empty((n, 2))
    heads = np.empty(n)
    p = np.array(start, dtype=float)
    h = heading
    k = 0.0
    for i in range(n):
        pts[i] = p
        heads[i] = h
        k = 0.8 * k + rng.normal(0.0, turn_sd)  # curvature persists, so bodies curve smoothly
        h += k
        p = p + 0.5 * np.array([math.cos(h), math.sin(h)])
    return pts, heads


def _smooth_noise(n: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    noise = gaussian_filter1d(rng.standard_normal(n), sigma=sigma, mode="nearest")
    return noise / max(float(noise.std()), 1e-12)


def _skeleton(
    seed_pt: np.ndarray,
    heading: float,
    forward: float,
    backward: float,
    n_branches: int,
    decay: float,
    r0: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body skeleton grown both ways from ``seed_pt``: points, amplitudes, radii (seed first)."""
    fwd, fwd_h = _walk(seed_pt, heading, forward, rng, turn_sd=0.06)
    back, _ = _walk(seed_pt, heading + math.pi, backward, rng, turn_sd=0.06)
    pts = np.concatenate([fwd, back[1:]])
    arc = np.concatenate([np.arange(len(fwd)), np.arange(1, len(back))]) * 0.5
    # Strongest where the body leaves the fault, yet with highs and lows all along it.
    amp = (0.5 + 0.5 * np.exp(-arc / decay)) * np.clip(
        1 + 0.35 * _smooth_noise(len(pts), rng, 4.0), 0.4, 1.6
    )
    ends = np.minimum(
        np.concatenate(
            [(len(fwd) - 1 - np.arange(len(fwd))), len(back) - 1 - np.arange(1, len(back))]
        ),
        6,
    )
    rad = r0 * np.clip(1 + 0.3 * _smooth_noise(len(pts), rng, 5.0), 0.6, 1.5)
    rad *= 0.55 + 0.45 * ends / 6  # taper towards the tips
    all_pts, all_amp, all_rad = [pts], [amp], [rad]
    for _ in range(n_branches):
        j = int(rng.integers(len(fwd) // 4, max(len(fwd) // 4 + 1, len(fwd) - 2)))
        side = rng.choice([-1.0, 1.0])
        b_pts, _ = _walk(
            fwd[j],
            fwd_h[j] + side * math.radians(rng.uniform(25, 70)),
            rng.uniform(5, 14),
            rng,
            0.08,
        )
        b_arc = np.arange(len(b_pts)) * 0.5
        all_pts.append(b_pts[1:])
        all_amp.append((amp[j] * np.exp(-b_arc / rng.uniform(3, 7)))[1:])
        taper = 0.5 + 0.5 * np.minimum(len(b_pts) - 1 - np.arange(len(b_pts)), 4) / 4
        all_rad.append((rad[j] * 0.75 * taper)[1:])
    amp_all = np.concatenate(all_amp)
    return np.concatenate(all_pts), amp_all / amp_all.max(), np.concatenate(all_rad)


def _peak(body: _Body) -> int:
    return int(np.argmax(body.amp))


@dataclass(frozen=True)
class _BodyShape:
    """Ranges (low, high) of one family of anomaly bodies seeded on a fault."""

    splay: tuple[float, float]  # degrees off the fault trace, for bodies that splay off it
    forward: tuple[float, float]
    backward: tuple[float, float]
    max_branches: int  # the branch count is drawn from 0 .. max_branches - 1
    decay: tuple[float, float]
    r0: tuple[float, float]


# Lone ore bodies of a small district are longer and broader than the bodies of a system.
_ORE_SHAPE = _BodyShape((15, 50), (10, 24), (3, 10), 3, (6, 12), (1.0, 1.7))
_SYSTEM_SHAPE = _BodyShape((20, 60), (6, 14), (2, 6), 2, (4, 9), (0.9, 1.4))


def _body_on_fault(
    fault: np.ndarray, i: int, shape: _BodyShape, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Skeleton (points, amplitude, radius) and side normal of a body seeded at ``fault[i]``.

    The body either hugs the fault (a dilational jog) or splays off it (a Riedel /
    second-order structure); the draws keep one order so a seed always gives the same district.
    """
    tangent = fault[min(i + 2, len(fault) - 1)] - fault[max(i - 2, 0)]
    along = math.atan2(tangent[1], tangent[0]) + (math.pi if rng.random() < 0.5 else 0.0)
    if rng.random() < 0.4:  # hugs the fault
        heading = along + math.radians(rng.uniform(-12, 12))
    else:  # splays off it
        heading = along + rng.choice([-1, 1]) * math.radians(rng.uniform(*shape.splay))
    pts, amp, rad = _skeleton(
        fault[i],
        heading,
        forward=rng.uniform(*shape.forward),
        backward=rng.uniform(*shape.backward),
        n_branches=int(rng.integers(0, shape.max_branches)),
        decay=rng.uniform(*shape.decay),
        r0=rng.uniform(*shape.r0),
        rng=rng,
    )
    normal = np.array([-math.sin(along), math.cos(along)]) * rng.choice([-1.0, 1.0])
    return pts, amp, rad, normal


def _ore_bodies(
    spec: SyntheticSpec, faults: list[np.ndarray], rng: np.random.Generator
) -> list[_Body]:
    """Mineralised bodies, each seeded on a fault and strongest where it leaves the fault."""
    n = max(1, round(0.6 * spec.n_deposits))
    margin = 5.0
    lengths = np.array([len(f) for f in faults], dtype=float)
    seeds: list[np.ndarray] = []
    bodies: list[_Body] = []
    spacing = 14.0
    for _ in range(n):
        for attempt in range(300):
            if attempt and attempt % 100 == 0:
                spacing *= 0.7  # crowded district: let bodies sit closer
            f = faults[int(rng.choice(len(faults), p=lengths / lengths.sum()))]
            i = int(rng.integers(0, len(f)))
            p = f[i]
            if not (
                margin <= p[0] <= spec.width - margin and margin <= p[1] <= spec.height - margin
            ):
                continue
            if seeds and min(np.hypot(*(p - s)) for s in seeds) < spacing:
                continue
            break
        else:
            raise GkdcnError(
                "synthetic district: no room for the anomaly bodies; use a larger grid or fewer deposits"
            )
        seeds.append(p)
        pts, amp, rad, normal = _body_on_fault(f, i, _ORE_SHAPE, rng)
        bodies.append(_Body(pts, amp, rad, normal, None, 1.0))
    return bodies


def _system_bodies(
    spec: SyntheticSpec, faults: list[np.ndarray], rng: np.random.Generator
) -> list[_Body]:
    """Mineralised bodies clustered into anomaly systems, each along one stretch of a fault.

    System centres are drawn on the faults (weighted by length) and kept apart, so the systems
    spread over the district; each system's bodies are seeded on its fault within
    ``reach`` cells (along the trace) of the centre and kept a few cells apart. About
    ``spec.undiscovered_share`` of the bodies, drawn at random, are marked undiscovered: they
    look like the others but get no deposit.
    """
    n_sys = spec.systems
    n_known = max(n_sys, math.ceil(spec.n_deposits / _DEPOSITS_PER_BODY))
    share = spec.undiscovered_share
    n_bodies = n_known + round(share * n_known / (1.0 - share))
    margin = 5.0
    lengths = np.array([len(f) for f in faults], dtype=float)
    inside = [
        (f[:, 0] >= margin)
        & (f[:, 0] <= spec.width - margin)
        & (f[:, 1] >= margin)
        & (f[:, 1] <= spec.height - margin)
        for f in faults
    ]
    # Centres: spread over the district, at least `spacing` cells apart (relaxed if crowded).
    spacing = 0.8 * math.sqrt(spec.height * spec.width / n_sys)
    centres: list[tuple[int, int]] = []
    points: list[np.ndarray] = []
    for attempt in range(2000):
        if len(centres) == n_sys:
            break
        if attempt and attempt % 200 == 0:
            spacing *= 0.8
        fi = int(rng.choice(len(faults), p=lengths / lengths.sum()))
        ok = np.flatnonzero(inside[fi])
        if len(ok) == 0:
            continue
        i = int(rng.choice(ok))
        p = faults[fi][i]
        if points and min(np.hypot(*(p - q)) for q in points) < spacing:
            continue
        centres.append((fi, i))
        points.append(p)
    else:  # pragma: no cover - the spacing shrinks until the centres fit
        raise GkdcnError("synthetic district: no room for the anomaly systems; use a larger grid")
    # Bodies per system: an equal share each, the remainder to random systems.
    per_system = np.full(n_sys, n_bodies // n_sys)
    per_system[rng.choice(n_sys, n_bodies % n_sys, replace=False)] += 1
    seeds: list[np.ndarray] = []
    bodies: list[_Body] = []
    for system, ((fi, ci), count) in enumerate(zip(centres, per_system, strict=True)):
        f = faults[fi]
        reach = rng.uniform(8.0, 14.0) + 2.0 * count  # cells along the trace from the centre
        lo, hi = max(0, ci - int(2 * reach)), min(len(f), ci + int(2 * reach) + 1)  # 0.5-cell steps
        stretch = np.arange(lo, hi)[inside[fi][lo:hi]]
        gap = 5.0
        for _ in range(count):
            for attempt in range(200):
                if attempt and attempt % 50 == 0:
                    gap *= 0.75
                i = int(rng.choice(stretch))
                p = f[i]
                if not seeds or min(np.hypot(*(p - q)) for q in seeds) >= gap:
                    break
            seeds.append(p)
            pts, amp, rad, normal = _body_on_fault(f, i, _SYSTEM_SHAPE, rng)
            scale = float(rng.uniform(*_SYSTEM_BODY_SCALE))
            bodies.append(_Body(pts, amp, rad, normal, None, scale, system=system))
    n_undiscovered = n_bodies - n_known
    for b in rng.choice(n_bodies, n_undiscovered, replace=False):
        bodies[int(b)].undiscovered = True
    known = [b for b in bodies if not b.undiscovered]
    for b in rng.choice(len(known), round(_COVERED_SHARE * len(known)), replace=False):
        known[int(b)].covered = True
        known[int(b)].scale *= _COVER_DAMPING
    return bodies


def _barren_bodies(
    spec: SyntheticSpec,
    dist_cells: np.ndarray,
    ore: list[_Body],
    rng: np.random.Generator,
) -> list[_Body]:
    """Barren anomalies: every third one near a fault, the rest well away from any fault.

    Each body is redrawn (up to a limit, keeping the best) until its whole skeleton keeps clear
    of the mineralised bodies and, for the far ones, of the faults.
    """
    H, W = dist_cells.shape
    margin = 4
    rr, cc = np.mgrid[0:H, 0:W]
    centres = np.column_stack([cc.ravel() + 0.5, rr.ravel() + 0.5])
    inner = (
        (rr.ravel() >= margin)
        & (rr.ravel() < H - margin)
        & (cc.ravel() >= margin)
        & (cc.ravel() < W - margin)
    )
    d = dist_cells.ravel()
    styles: tuple[BarrenStyle, ...] = ("black shale", "mafic")
    others = np.concatenate([b.pts for b in ore]) if ore else np.empty((0, 2))
    bodies: list[_Body] = []
    for k in range(spec.barren_anomalies):
        near = k % 3 == 1
        ok = inner & ((d >= 3) & (d <= 8) if near else d >= min(12.0, float(np.quantile(d, 0.8))))
        if not ok.any():
            ok = inner
        best: tuple[float, _Body] | None = None
        for _ in range(30):
            p = centres[rng.choice(np.flatnonzero(ok))] + rng.uniform(-0.5, 0.5, 2)
            pts, amp, rad = _skeleton(
                p,
                rng.uniform(0, 2 * math.pi),
                forward=rng.uniform(6, 14),
                backward=rng.uniform(3, 8),
                n_branches=int(rng.integers(0, 3)),
                decay=rng.uniform(8, 14),
                r0=rng.uniform(1.2, 2.0),
                rng=rng,
            )
            angle = rng.uniform(0, 2 * math.pi)
            zdir = np.array([math.cos(angle), math.sin(angle)])
            body = _Body(pts, amp, rad, zdir, styles[k % 2], float(rng.uniform(0.7, 1.0)))
            # Clearance (cells) from other bodies and, for far ones, from the faults.
            gap = _clearance(pts, others)
            if not near:
                ri = np.clip(pts[:, 1].astype(int), 0, H - 1)
                ci = np.clip(pts[:, 0].astype(int), 0, W - 1)
                gap = min(gap, float(dist_cells[ri, ci].min()) + 2.0)
            if best is None or gap > best[0]:
                best = (gap, body)
            if gap >= 10.0:
                break
        if best is None:  # pragma: no cover - the loop above always runs
            raise GkdcnError("synthetic district: could not place a barren anomaly")
        bodies.append(best[1])
        others = np.concatenate([others, best[1].pts])
    return bodies


def _clearance(pts: np.ndarray, others: np.ndarray) -> float:
    """Smallest distance (cells) between two point sets; infinite when ``others`` is empty."""
    if len(others) == 0:
        return math.inf
    diff = pts[:, None, :] - others[None, :, :]
    return float(np.sqrt((diff**2).sum(axis=2).min()))


def _holes(spec: SyntheticSpec, avoid: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Irregular lake-like blobs of nodata, kept away from the cores of the mineralised bodies."""
    H, W = spec.height, spec.width
    mask = np.zeros((H, W), dtype=bool)
    rr, cc = np.mgrid[0:H, 0:W] + 0.5
    for _ in range(spec.nodata_holes):
        radius = rng.uniform(2.0, 4.0)
        for _attempt in range(200):
            c = np.array(
                [rng.uniform(radius + 2, W - radius - 2), rng.uniform(radius + 2, H - radius - 2)]
            )
            if all(np.hypot(*(c - a)) >= radius + 6 for a in avoid):
                break
        rough = gaussian_filter(rng.standard_normal((H, W)), 1.5)
        rough /= max(float(rough.std()), 1e-12)
        blob = np.hypot(cc - c[0], rr - c[1]) / radius + 0.3 * rough < 1.0
        blob[int(c[1]), int(c[0])] = True
        mask |= blob
    return mask


def _stamp(shape: tuple[int, int], pts: np.ndarray, amp: np.ndarray, rad: np.ndarray) -> np.ndarray:
    """Max over skeleton points of amp * exp(-d^2 / 2 r^2) at each cell centre."""
    H, W = shape
    out = np.zeros(shape, dtype=np.float64)
    pad = 3.5 * float(rad.max())
    c0 = max(0, math.floor(pts[:, 0].min() - pad))
    c1 = min(W, math.ceil(pts[:, 0].max() + pad) + 1)
    r0 = max(0, math.floor(pts[:, 1].min() - pad))
    r1 = min(H, math.ceil(pts[:, 1].max() + pad) + 1)
    if c0 >= c1 or r0 >= r1:
        return out
    cc = np.arange(c0, c1) + 0.5
    rr = np.arange(r0, r1) + 0.5
    d2 = (cc[None, None, :] - pts[:, 0, None, None]) ** 2 + (
        rr[None, :, None] - pts[:, 1, None, None]
    ) ** 2
    field = amp[:, None, None] * np.exp(-d2 / (2.0 * rad[:, None, None] ** 2))
    out[r0:r1, c0:c1] = field.max(axis=0)
    return out


def _element_values(spec: SyntheticSpec, bodies: list[_Body]) -> np.ndarray:
    """(C, H, W) float32 concentrations: correlated log-normal background plus anomaly bodies."""
    shape = (spec.height, spec.width)
    latent = [_field(shape, corr, _rng(spec.seed, 6, j)) for j, corr in enumerate(_LATENT_CORR)]
    out = np.empty((spec.n_layers, *shape), dtype=np.float32)
    for idx, e in enumerate(spec.elements):
        rng = _rng(spec.seed, 7, idx)
        shared = sum(w * f for w, f in zip(e.loadings, latent, strict=True))
        own_w = math.sqrt(max(0.1, 1.0 - sum(w * w for w in e.loadings) - 0.3**2))
        z = shared + own_w * _field(shape, e.corr, rng) + 0.3 * rng.standard_normal(shape)
        anomaly = np.zeros(shape)
        for body in bodies:
            if body.barren is None:
                contrast, offset, halo = e.contrast, e.offset, e.halo
                if spec.signature_spread > 0 and body.system >= 0 and e.name != "Au":
                    contrast *= _system_factor(spec, body.system, idx)
            else:
                contrast = _BARREN_CONTRAST[body.barren].get(e.name, 0.0)
                offset, halo = 0.4 * e.offset, 1.0
            if contrast == 0.0:
                continue
            pts = body.pts + offset * body.zdir
            anomaly += body.scale * contrast * _stamp(shape, pts, body.amp, body.rad * halo)
        out[idx] = 10.0 ** (math.log10(e.median) + e.log_sd * z + anomaly)
    return out


def _system_factor(spec: SyntheticSpec, system: int, element: int) -> float:
    """The factor on one element's contrast in one anomaly system.

    Drawn from its own seeded stream, so it moves nothing else of the district.
    """
    rng = _rng(spec.seed, 17, system, element)
    return float(rng.uniform(1.0 - spec.signature_spread, 1.0 + spec.signature_spread))


def _field(shape: tuple[int, int], corr: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``corr`` cells."""
    f = gaussian_filter(rng.standard_normal(shape), sigma=corr, mode="reflect")
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def _place_deposits(
    spec: SyntheticSpec,
    ore_feet: list[np.ndarray],
    covered: list[bool],
    truth: np.ndarray,
    score: np.ndarray,
    dist_cells: np.ndarray,
    holes: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deposit cells: inside mineralised bodies, high pathfinder score, near a fault, not in a hole.

    Every body gets one deposit where it can; the rest go to bodies at random. Deposits are at
    more than two cells apart (so their 3 x 3 shifted windows never share a centre), at least two
    cells from the map edge and from any hole. The scattered layout takes the first level of
    (score percentile, fault distance) with enough candidate cells; the systems layout moves on
    to the next level whenever the deposits do not fit. A ``covered`` body's cells qualify by
    fault distance alone. Returns rows, cols and, per deposit, the index (into ``ore_feet``) of
    the body it was placed in.
    """
    valid = np.isfinite(score)
    keep_out = binary_dilation(holes, iterations=2)
    keep_out[:2] = keep_out[-2:] = True
    keep_out[:, :2] = keep_out[:, -2:] = True

    def candidates_at(pct: float, max_d: float) -> tuple[float, list[np.ndarray]]:
        threshold = float(np.percentile(score[valid], pct))
        near = valid & (truth == TRUTH_MINERALISED) & (dist_cells <= max_d) & ~keep_out
        good = near & (score >= threshold)
        return threshold, [
            np.flatnonzero((near if cover else good) & foot)
            for foot, cover in zip(ore_feet, covered, strict=True)
        ]

    if not spec.systems:
        for pct, max_d in zip(_DEPOSIT_PERCENTILE, _DEPOSIT_FAULT_CELLS, strict=True):
            threshold, candidates = candidates_at(pct, max_d)
            if sum(len(c) for c in candidates) >= spec.n_deposits:
                break
        placed = _pick_deposits(spec, candidates, threshold, score, rng)
        if isinstance(placed, int):
            raise GkdcnError(
                f"synthetic district: room for only {placed} of {spec.n_deposits} deposits; "
                "use a larger grid or fewer deposits"
            )
        return placed
    room = 0
    for pct, max_d in zip(_SYSTEM_DEPOSIT_PERCENTILE, _SYSTEM_DEPOSIT_FAULT_CELLS, strict=True):
        threshold, candidates = candidates_at(pct, max_d)
        if sum(len(c) for c in candidates) < spec.n_deposits:
            continue
        placed = _pick_deposits(spec, candidates, threshold, score, rng)
        if not isinstance(placed, int):
            return placed
        room = max(room, placed)
    raise GkdcnError(
        f"synthetic district: room for only {room} of {spec.n_deposits} deposits; "
        "use a larger grid, fewer deposits or more systems"
    )


def _pick_deposits(
    spec: SyntheticSpec,
    candidates: list[np.ndarray],
    threshold: float,
    score: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | int:
    """Deposits drawn from each body's candidate cells (see :func:`_place_deposits`).

    Returns rows, cols and body index per deposit, or the number placed when they do not fit.
    """
    flat_score = score.ravel()
    taken = np.zeros(score.size, dtype=bool)
    chosen: list[int] = []
    picked_in: list[int] = []

    def pick(body: int) -> bool:
        cells = candidates[body]
        free = cells[~taken[cells]]
        if len(free) == 0:
            return False
        # Covered bodies' cells may lie below the threshold: they get the floor weight.
        weight = np.maximum(flat_score[free] - threshold + 0.1, 0.1)
        cell = int(rng.choice(free, p=weight / weight.sum()))
        chosen.append(cell)
        picked_in.append(body)
        r, c = divmod(cell, spec.width)
        block = np.zeros(score.shape, dtype=bool)
        block[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3] = True
        taken[block.ravel()] = True
        return True

    order = rng.permutation(len(candidates))
    for b in order[: spec.n_deposits]:
        pick(int(b))
    sizes = np.array([len(c) for c in candidates], dtype=float)
    while len(chosen) < spec.n_deposits:
        open_bodies = [b for b in range(len(candidates)) if (~taken[candidates[b]]).any()]
        if not open_bodies:
            return len(chosen)
        p = sizes[open_bodies] / sizes[open_bodies].sum()
        pick(open_bodies[int(rng.choice(len(open_bodies), p=p))])
    rows, cols = np.divmod(np.array(chosen, dtype=np.int64), spec.width)
    return rows, cols, np.array(picked_in, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# writing


def _body_table(spec: SyntheticSpec, bodies: list[_Body], deposits: np.ndarray) -> pd.DataFrame:
    """One row per anomaly body: kind, system, deposits placed in it, strongest point."""
    records = []
    x0, y0 = spec.origin
    for k, (body, count) in enumerate(zip(bodies, deposits, strict=True)):
        if body.barren is not None:
            kind = f"barren ({body.barren})"
        else:
            kind = "undiscovered" if body.undiscovered else "mineralised"
            kind += " (covered)" if body.covered else ""
        peak = body.pts[_peak(body)]
        records.append(
            {
                "body_id": f"B{k + 1:02d}",
                "kind": kind,
                "system": f"S{body.system + 1}" if body.system >= 0 else "",
                "deposits": int(count),
                "x": x0 + peak[0] * spec.cell_size,
                "y": y0 - peak[1] * spec.cell_size,
            }
        )
    return pd.DataFrame(records, columns=["body_id", "kind", "system", "deposits", "x", "y"])


def _deposits_csv(district: District) -> str:
    lines = ["site_id,x,y"]
    for sid, x, y in zip(district.deposit_ids, district.deposit_x, district.deposit_y, strict=True):
        lines.append(f"{sid},{x:.1f},{y:.1f}")
    return "\n".join(lines) + "\n"


def _study_toml(spec: SyntheticSpec, config: dict[str, Any]) -> str:
    header = [
        "# Study config for a synthetic district made by gkdcn.data.synthetic.generate_district",
        f"# (seed {spec.seed}). Paths are relative to this folder.",
    ]
    return "\n".join(header) + "\n" + to_toml(config)


def _validate_study(text: str, folder: Path) -> None:
    # Guard against drift between this writer and gkdcn.config: fail here, not in a user's run.
    cfg = config_from_dict(tomllib.loads(text), base_dir=folder, source="study.toml")
    deposits = cfg.sites.deposits
    points = deposits.points if isinstance(deposits, PointSitesConfig) else None
    for path in (cfg.elements.path, points, cfg.knowledge.faults):
        if path is None or not cfg.resolve(path).exists():
            raise GkdcnError(f"synthetic district: study.toml names a missing file {path}")


def _readme(district: District) -> str:
    spec = district.spec
    ore = int((district.truth == TRUTH_MINERALISED).sum())
    undiscovered = int((district.truth == TRUTH_UNDISCOVERED).sum())
    barren = int((district.truth == TRUTH_BARREN).sum())
    kinds = district.bodies["kind"]
    n_undiscovered = int((kinds == "undiscovered").sum())
    n_covered = int((kinds == "mineralised (covered)").sum())
    n_mineralised = int(kinds.str.startswith("mineralised").sum()) + n_undiscovered
    if spec.systems:
        layout = (
            f"- Layout: {spec.systems} fault-controlled anomaly systems, each a stretch of one main "
            f"fault with a few mineralised bodies ({n_mineralised} in all); {n_undiscovered} of "
            "them, drawn at random, carry no known deposit (undiscovered: truth code 3). Bodies "
            f"vary in strength ({_SYSTEM_BODY_SCALE[0]:g} to {_SYSTEM_BODY_SCALE[1]:g} of the "
            f"full contrast); {n_covered} bodies with known deposits lie under cover (surface "
            f"expression x {_COVER_DAMPING:g}, deposits placed by fault distance alone). "
            "Deposits: cells of a known body within "
            f"{_SYSTEM_DEPOSIT_FAULT_CELLS[0]:g} cells of a fault in the top "
            f"{100 - _SYSTEM_DEPOSIT_PERCENTILE[0]:g} % of the pathfinder score (relaxed to "
            f"{_SYSTEM_DEPOSIT_FAULT_CELLS[1]:g} cells and the top "
            f"{100 - _SYSTEM_DEPOSIT_PERCENTILE[1]:g} % if too few qualify); this replaces the "
            "deposit rule below."
        )
    else:
        layout = (
            f"- Layout: {n_mineralised} mineralised bodies scattered along the faults, each "
            "with at least one deposit where there is room."
        )
    holes = int((district.truth == TRUTH_NODATA).sum())
    rows = "\n".join(
        f"| {e.name} | {e.unit} | {e.median:g} | "
        + (
            "pathfinder"
            if e.name in PATHFINDERS
            else "ore-related"
            if e.contrast > 0
            else "background"
        )
        + f" | {e.contrast:g} |"
        for e in spec.elements
    )
    return f"""# Synthetic exploration district (seed {spec.seed})

Made by `gkdcn.data.synthetic.generate_district`. Everything here is simulated; the same spec
and seed always give the same rasters and deposits.

## Spec
- grid: {spec.height} rows x {spec.width} columns of {spec.cell_size:g} m, {spec.crs},
  top-left corner ({spec.origin[0]:.10g}, {spec.origin[1]:.10g})
- {spec.n_layers} element layers, {spec.n_faults} faults, {spec.n_deposits} deposits,
  {spec.barren_anomalies} barren anomalies, {spec.nodata_holes} nodata holes
{layout}

## Files
| file | what |
|---|---|
| `elements/<name>.tif` | one float32 GeoTIFF per element (nodata {NODATA:g}), concentration in the unit below |
| `deposits.csv` | `site_id, x, y`: {spec.n_deposits} deposits in map units ({spec.crs}) |
| `faults.gpkg` | layer `faults`: {len(district.faults)} ore-controlling fault traces (LineString) |
| `truth.tif` | uint8: 1 mineralised anomaly body with known deposits ({ore} cells), 3 mineralised body without a known deposit ({undiscovered} cells), 2 barren anomaly ({barren} cells), 0 background, 255 nodata ({holes} cells) |
| `bodies.csv` | one row per anomaly body: `body_id, kind, system, deposits` (known deposits inside it), `x, y` of its strongest point |
| `study.toml` | a complete gkdcn study config for this folder |

## How it was made
- Background: log-normal, log10 value = log10(median) + sd x (three shared latent Gaussian random
  fields for mafic, felsic and regional variation + an element-specific field + white noise).
- Mineralised bodies: curved, branching random-walk skeletons grown from points on the faults,
  strongest where they leave the fault, with an amplitude and width that vary along them.
  Each pathfinder expresses a body with its own contrast, width and sideways offset (zonation:
  Cu-Mo-Bi-W on the proximal side, As-Sb-Hg-Ag-Pb-Zn distal).
- Deposits: cells of a mineralised body within {_DEPOSIT_FAULT_CELLS[0]:g} cells of a fault whose
  pathfinder score (mean z-score of log10 {", ".join(PATHFINDERS)}) is in the top
  {100 - _DEPOSIT_PERCENTILE[0]:g} % of the district (relaxed to {_DEPOSIT_FAULT_CELLS[1]:g} cells and
  the top {100 - _DEPOSIT_PERCENTILE[1]:g} % if too few cells qualify), at least three cells apart,
  then jittered inside the cell.
- Barren anomalies: black-shale (As-Sb-Mo-V-U) or mafic (Cu-Co-Ni-Cr) signatures with weak Au,
  one in three near a fault and the rest far from faults; they carry no deposit.
- Nodata holes: lakes, nodata in every layer, away from the deposits.

## Elements
| element | unit | median | role | log10 contrast in a mineralised body |
|---|---|---|---|---|
{rows}
"""
