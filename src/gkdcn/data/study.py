"""A study in memory: the aligned element stack, its valid mask, knowledge weight and sites.

:func:`load_study` turns a :class:`~gkdcn.config.StudyConfig` into a :class:`Study`;
:func:`save_prepared` writes it (with its samples and splits) to a folder that GIS tools open and
:func:`load_prepared` reads back. Problems that do not stop the study (skipped sites, rasters lined
up by index) are collected in ``Study.notes`` for the CLI to show.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio

import gkdcn
from gkdcn.config import (
    PointSitesConfig,
    RasterSitesConfig,
    SiteSource,
    StudyConfig,
    config_from_dict,
)
from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL, knowledge_channel, load_knowledge_weight
from gkdcn.data.samples import (
    SampleSet,
    Split,
    check_centres,
    check_trains_on_deposits,
    make_samples,
    make_splits,
)
from gkdcn.data.sites import (
    DEPOSIT,
    NON_DEPOSIT,
    SiteTable,
    drop_invalid,
    placement_hint,
    sample_negatives,
    sites_from_points,
    sites_from_raster,
)
from gkdcn.errors import GkdcnError, InputError
from gkdcn.io.atomic import atomic_dir
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import (
    AlignmentWarning,
    NodataWarning,
    check_valid_cells,
    open_elements,
    write_geotiff,
)
from gkdcn.io.vectors import read_points, write_vector

PREPARED_FORMAT = 1


@dataclass
class Study:
    """Everything a study needs in memory, on the element grid.

    ``raw`` is ``(C, H, W)`` float32 with NaN on invalid cells; ``valid`` is ``(H, W)`` bool (every
    element channel finite); ``knowledge`` the ``(H, W)`` float32 weight in [0, 1] or None;
    ``sites`` deposits followed by non-deposits; ``notes`` one line per warning or skipped site.
    """

    config: StudyConfig
    names: list[str]
    grid: Grid
    raw: np.ndarray
    valid: np.ndarray
    knowledge: np.ndarray | None
    sites: SiteTable
    faults: gpd.GeoDataFrame | None = None
    notes: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def compositional(self) -> list[bool]:
        """Per channel: does the log / CLR apply? Not for ``[elements] auxiliary`` layers nor
        the knowledge channel, which are only scaled (they are not parts of the composition)."""
        return compositional_mask(self.names, self.config)


def compositional_mask(names: list[str], config: StudyConfig) -> list[bool]:
    """Per channel of ``names``: True for a concentration, False for an auxiliary layer or the
    knowledge channel (``knowledge.as_channel``)."""
    aux = set(config.elements.auxiliary)
    knowledge = KNOWLEDGE_CHANNEL if config.knowledge.as_channel else None
    return [n not in aux and n != knowledge for n in names]


def _check_auxiliary(config: StudyConfig, names: list[str]) -> None:
    """Every auxiliary layer must be a layer read; a CLR needs two compositional ones."""
    source = config.source or "config"
    aux = config.elements.auxiliary
    # Naming the knowledge channel is harmless: it is never in the log-ratio anyway.
    known = [*names, KNOWLEDGE_CHANNEL] if config.knowledge.as_channel else names
    unknown = [n for n in aux if n not in known]
    if unknown:
        raise InputError(
            source,
            f"key 'elements.auxiliary': unknown layers: {', '.join(unknown)} "
            f"(the {len(names)} layers read are {_shorten(names)})",
        )
    parts = [n for n in names if n not in aux]
    if config.transform.method == "clr" and len(parts) < 2:
        # Blame what took the layers away: the auxiliary list, or the layers read at all.
        cause = [n for n in names if n in aux]
        key = "elements.auxiliary" if cause else "elements.layers"
        if cause:
            left = f"{len(parts)} left ({', '.join(cause)} only scaled)"
        else:
            left = f"{len(parts)} read: {_shorten(names)}"
        raise InputError(
            source,
            f"key '{key}': the centred log-ratio (transform.method = \"clr\") needs at least 2 "
            f'compositional layers, {left}; read more layers or set method = "log"',
        )


def _shorten(names: list[str], limit: int = 12) -> str:
    return ", ".join(names) if len(names) <= limit else ", ".join(names[:limit]) + ", ..."


def data_fingerprint(study: Study) -> str:
    """A content hash of what a study computes from: the aligned stack, valid mask, knowledge
    weight, site cells and labels, and the layer names (so a resumed comparison can tell that
    the data changed even when every setting is the same)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(study.names)).encode())
    for array in (study.raw, study.valid, study.knowledge):
        if array is not None:
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    sites = study.sites
    for array in (sites.rows, sites.cols, sites.labels):
        digest.update(np.asarray(array, dtype=np.int64).tobytes())
    digest.update("\0".join(map(str, sites.ids)).encode())
    return digest.hexdigest()[:16]


def input_files(config: StudyConfig) -> dict[str, list[int]]:
    """``{path: [size, mtime_ns]}`` of every file a study reads (folders listed file by file; paths
    relative to the config's folder where they lie inside it), to name what changed when its data
    fingerprint no longer matches."""
    files: dict[str, list[int]] = {}
    base = Path(config.base_dir).resolve()
    for path in config.input_paths():
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            with contextlib.suppress(OSError):
                st = member.stat()
                # relative to the config's folder: a copied or moved district keeps its names
                resolved = member.resolve()
                name = resolved.relative_to(base) if resolved.is_relative_to(base) else resolved
                files[str(name)] = [st.st_size, st.st_mtime_ns]
    return files


def changed_files(recorded: dict[str, list[int]], current: dict[str, list[int]]) -> list[str]:
    """The files that differ between two :func:`input_files` records (changed, new or gone)."""
    names = sorted(set(recorded) | set(current))
    return [n for n in names if recorded.get(n) != current.get(n)]


def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    notes = []
    for w in caught:
        if issubclass(w.category, (AlignmentWarning, NodataWarning)):
            notes.append(str(w.message))
        else:  # not ours to swallow: hand it back to the caller's filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return notes


def _load_sites(
    source: SiteSource,
    config: StudyConfig,
    grid: Grid,
    valid: np.ndarray,
    label: int,
    prefix: str,
) -> tuple[SiteTable, list[str], Path]:
    path = config.resolve(source.raster if isinstance(source, RasterSitesConfig) else source.points)
    if isinstance(source, RasterSitesConfig):
        table = sites_from_raster(path, grid, config.align, source.value, label, prefix)
        if len(table) == 0:
            raise InputError(
                path, f"no cell equal to {source.value:g} on the element grid: no sites"
            )
        table, messages = drop_invalid(table, valid)
    else:
        assert isinstance(source, PointSitesConfig)
        gdf = read_points(
            path,
            x=source.x,
            y=source.y,
            crs=source.crs,  # a CSV without one is taken to be in the grid's CRS
            id=source.id,
            target_crs=grid.crs,
        )
        table, messages = sites_from_points(gdf, grid, valid, label)
        rows, cols = grid.rowcol(gdf.geometry.x.to_numpy(float), gdf.geometry.y.to_numpy(float))
        if len(table) == 0 and len(gdf) and not grid.inside(rows, cols).any():
            what = "deposit" if label == DEPOSIT else "non-deposit site"
            raise InputError(
                path,
                f"no {what} left on the element grid ({len(gdf)} skipped: all outside the "
                f"grid): {placement_hint(gdf, grid, source.crs)}",
            )
    return table, [f"{path}: {m}" for m in messages], path


def load_study(config: StudyConfig) -> Study:
    """Read a study's inputs onto the element grid and collect its sites and knowledge.

    Raises :class:`InputError` naming the file for every problem the user must fix; skipped sites
    and index alignment end up in ``Study.notes``.
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AlignmentWarning)
        warnings.simplefilter("always", NodataWarning)
        elements_path = config.resolve(config.elements.path)
        with open_elements(
            elements_path, config.elements.layers, config.elements.exclude, config.align,
            nodata=config.elements.nodata, valid_range=config.elements.valid_range,
        ) as source:  # fmt: skip
            names = list(source.names)
            grid = source.grid
            raw = source.read()
        valid = np.isfinite(raw).all(axis=0)
        check_valid_cells(valid, elements_path)
        _check_auxiliary(config, names)
        if KNOWLEDGE_CHANNEL in names and config.knowledge.as_channel:
            raise InputError(
                elements_path,
                f"a layer is named '{KNOWLEDGE_CHANNEL}', the knowledge channel's name",
            )

        deposits, messages, dep_path = _load_sites(
            config.sites.deposits, config, grid, valid, DEPOSIT, "D"
        )
        notes += messages
        skipped = len(messages)
        if len(deposits) == 0:
            raise InputError(
                dep_path,
                f"no deposit left on the element grid ({len(messages)} skipped: outside the grid "
                "or on nodata cells)",
            )

        if config.sites.non_deposits is not None:
            negatives, messages, neg_path = _load_sites(
                config.sites.non_deposits, config, grid, valid, NON_DEPOSIT, "N"
            )
            skipped += len(messages)
            notes += messages
            negatives, clash = _drop_deposit_cells(negatives, deposits)
            skipped += len(clash)
            notes += [f"{neg_path}: {m}" for m in clash]
            if len(negatives) == 0:
                raise InputError(neg_path, "no non-deposit left on the element grid")
        else:
            cfg = config.sites.negatives
            count = cfg.count if cfg.count is not None else len(deposits)
            with naming_the_config(config):
                negatives = sample_negatives(
                    deposits, valid, grid, count, cfg.min_distance, cfg.seed
                )
            notes.append(
                f"sampled {count} non-deposit cells at least {cfg.min_distance:g} map units from "
                f"any deposit (seed {cfg.seed})"
            )

        knowledge, faults = load_knowledge_weight(config, grid, valid, notes)
    notes = _warning_notes(caught) + notes

    deposits, negatives = _unique_ids(deposits, negatives, notes)
    if knowledge is not None and config.knowledge.as_channel:
        raw = np.concatenate([raw, knowledge_channel(knowledge, valid)], axis=0)
        names.append(KNOWLEDGE_CHANNEL)
    return Study(
        config=config,
        names=names,
        grid=grid,
        raw=raw,
        valid=valid,
        knowledge=knowledge,
        sites=deposits.concat(negatives),
        faults=faults,
        notes=notes,
        skipped=skipped,
    )


def _drop_deposit_cells(negatives: SiteTable, deposits: SiteTable) -> tuple[SiteTable, list[str]]:
    """A cell cannot be both: a non-deposit on a deposit cell is dropped and reported."""
    deposit_cells = set(zip(deposits.rows.tolist(), deposits.cols.tolist(), strict=True))
    clash = np.array(
        [(r, c) in deposit_cells for r, c in zip(negatives.rows, negatives.cols, strict=True)],
        dtype=bool,
    )
    messages = [
        f"non-deposit {negatives.ids[i]} is on deposit cell (row {negatives.rows[i]}, "
        f"col {negatives.cols[i]}); skipped"
        for i in np.flatnonzero(clash)
    ]
    return negatives.subset(~clash), messages


def _unique_ids(
    deposits: SiteTable, negatives: SiteTable, notes: list[str]
) -> tuple[SiteTable, SiteTable]:
    # Sites are grouped by id downstream; two files numbering their points 1, 2, ... would merge.
    if not set(deposits.ids.tolist()) & set(negatives.ids.tolist()):
        return deposits, negatives
    notes.append("deposit and non-deposit ids overlap: prefixed with 'D:' and 'N:'")
    return (
        replace(deposits, ids=np.char.add("D:", deposits.ids)),
        replace(negatives, ids=np.char.add("N:", negatives.ids)),
    )


def check_window(study: Study, source: str | Path) -> None:
    """Refuse a ``samples.window`` larger than the grid before any window is cut (a model trained
    so could never map the grid, and a huge window would allocate terabytes)."""
    window, grid = study.config.samples.window, study.grid
    if window > min(grid.height, grid.width):
        raise InputError(
            source,
            f"key 'samples.window': {window} is larger than the element grid "
            f"({grid.height} x {grid.width} cells)",
        )


@contextlib.contextmanager
def naming_the_config(config: StudyConfig) -> Any:
    """Context: a problem of the config's settings (the split, the samples, the negatives)
    raised inside names the config file, as every other error of it does."""
    try:
        yield
    except InputError as exc:
        if exc.path is None or Path(exc.path).exists():
            raise
        # a config key ("sites.negatives"), not a file: the file is the config
        raise InputError(config.source or "config", f"key '{exc.path}': {exc.problem}") from None
    except GkdcnError as exc:
        raise InputError(config.source or "config", str(exc)) from None


def build_samples(study: Study) -> tuple[SampleSet, list[Split]]:
    """Window centres for the study's sites (``config.samples``) and its splits (``config.split``).

    Errors name the config file: a ``samples.shift`` whose neighbourhoods put a window centre
    on a deposit and a non-deposit at once, or that asks for more windows than the grid has
    cells, and a split that leaves no deposit window to train on.
    """
    cfg = study.config.samples
    with naming_the_config(study.config):
        check_centres(study.sites, study.grid.shape, cfg.shift)
        samples = make_samples(study.sites, study.grid.shape, cfg.shift, cfg.rotations, cfg.flips)
        splits = make_splits(samples, study.sites, study.grid, study.config.split)
        for split in splits:
            check_trains_on_deposits(samples, split, study.sites)
    return samples, splits


def _grid_dict(grid: Grid) -> dict[str, Any]:
    return {
        "crs": None if grid.crs is None else grid.crs.to_wkt(),
        "transform": list(grid.transform)[:6],
        "height": grid.height,
        "width": grid.width,
        "description": grid.describe(),
    }


def summarize(
    study: Study, samples: SampleSet | None = None, splits: list[Split] | None = None
) -> dict[str, Any]:
    """Plain-data summary: grid, layers, valid cells, sites kept and skipped, samples per split."""
    grid = study.grid
    epsg = grid.crs.to_epsg() if grid.crs is not None else None
    summary: dict[str, Any] = {
        "name": study.config.name,
        "grid": grid.describe(),
        "crs": None if grid.crs is None else (f"EPSG:{epsg}" if epsg else grid.crs.to_string()),
        "shape": [grid.height, grid.width],
        "cell_size": list(grid.cell_size),
        "layers": list(study.names),
        "valid_cells": int(study.valid.sum()),
        "cells": int(study.valid.size),
        "deposits": int((study.sites.labels == DEPOSIT).sum()),
        "non_deposits": int((study.sites.labels == NON_DEPOSIT).sum()),
        "skipped_sites": int(study.skipped),
        "knowledge": None,
        "transform": _transform_summary(study),
        "notes": list(study.notes),
    }
    if study.knowledge is not None:
        k = study.knowledge[study.valid]
        source = "faults" if study.config.knowledge.faults is not None else "weights"
        summary["knowledge"] = {
            "source": source,
            "as_channel": study.config.knowledge.as_channel,
            "mean": float(k.mean()) if k.size else math.nan,
            "nonzero_fraction": float((k > 0).mean()) if k.size else math.nan,
        }
    if samples is not None:
        labels = np.asarray(samples.labels)
        summary["samples"] = {
            "total": len(samples),
            "positive": int((labels == 1).sum()),
            "negative": int((labels == 0).sum()),
        }
    if splits is not None and samples is not None:
        labels = np.asarray(samples.labels)
        summary["splits"] = [
            {
                "name": s.name,
                "description": s.description,
                "train": len(s.train),
                "val": len(s.val),
                "train_positive": int((labels[s.train] == 1).sum()),
                "val_positive": int((labels[s.val] == 1).sum()),
            }
            for s in splits
        ]
    return summary


def _transform_summary(study: Study) -> dict[str, Any]:
    cfg = study.config.transform
    mask = study.compositional
    return {
        "method": cfg.method,
        "scaling": cfg.scaling,
        "log_ratio": [n for n, c in zip(study.names, mask, strict=True) if c],
        "scaled_only": [n for n, c in zip(study.names, mask, strict=True) if not c],
    }


def save_prepared(
    study: Study,
    out_dir: str | Path,
    overwrite: bool = False,
    samples: SampleSet | None = None,
    splits: list[Split] | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write the prepared study to a folder, atomically; returns the folder.

    The folder never replaces, holds or lies inside the study's inputs (nor ``inputs``, e.g. the
    config file); an existing one is replaced only with ``overwrite`` and only if gkdcn wrote it.

    Files: ``stack.tif`` (raw aligned stack, band descriptions = names, nodata NaN), ``valid.tif``
    (1 valid / 0), ``knowledge.tif`` (if any), ``faults.gpkg`` (if any), ``sites.csv``,
    ``samples.csv`` (one column per split: train / val / -) and ``metadata.json``. Samples and
    splits are built from the config unless given.
    """
    out_dir = Path(out_dir)
    if samples is None or splits is None:
        samples, splits = build_samples(study)
    summary = summarize(study, samples, splits)
    inputs = [*study.config.input_paths(), *inputs]
    with atomic_dir(out_dir, overwrite, inputs=inputs, command="prepare") as tmp:
        write_geotiff(
            tmp / "stack.tif", study.raw, study.grid, nodata=math.nan, descriptions=study.names
        )
        write_geotiff(
            tmp / "valid.tif",
            study.valid.astype(np.uint8),
            study.grid,
            nodata=None,
            descriptions=["valid"],
            dtype="uint8",
        )
        if study.knowledge is not None:
            write_geotiff(
                tmp / "knowledge.tif",
                study.knowledge,
                study.grid,
                nodata=None,
                descriptions=[KNOWLEDGE_CHANNEL],
            )
        if study.faults is not None:
            write_vector(study.faults, tmp / "faults.gpkg", driver="GPKG")
        study.sites.to_frame(study.grid).to_csv(tmp / "sites.csv", index=False)
        frame = pd.DataFrame(
            {
                "row": samples.rows,
                "col": samples.cols,
                "label": np.asarray(samples.labels).astype(np.int8),
                "site_id": study.sites.ids[np.asarray(samples.site)],
                "aug": samples.aug,
            }
        )
        for split in splits:
            column = np.full(len(samples), "-", dtype=object)
            column[split.train] = "train"
            column[split.val] = "val"
            frame[split.name] = column
        frame.to_csv(tmp / "samples.csv", index=False)
        metadata = {
            "format": PREPARED_FORMAT,
            "gkdcn_version": gkdcn.__version__,
            "config": study.config.to_toml_dict(),
            "base_dir": str(study.config.base_dir),
            "config_source": study.config.source,
            "grid": _grid_dict(study.grid),
            "names": list(study.names),
            "skipped": study.skipped,
            "notes": list(study.notes),
            "summary": summary,
        }
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return out_dir


def load_prepared(path: str | Path) -> Study:
    """Read a folder written by :func:`save_prepared` back into a :class:`Study`."""
    path = Path(path)
    meta_path = path / "metadata.json"
    if not path.is_dir():
        raise InputError(path, "prepared study folder not found")
    if not meta_path.exists():
        raise InputError(path, "not a prepared study (no metadata.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(meta_path, f"cannot read ({exc})") from None
    if meta.get("format") != PREPARED_FORMAT:
        raise InputError(meta_path, f"unknown prepared-study format {meta.get('format')!r}")
    config = config_from_dict(meta["config"], base_dir=meta.get("base_dir", "."), source=meta_path)
    # The file the study came from, named by errors about its keys (None in older folders).
    config = config.model_copy(update={"source": meta.get("config_source")})
    for name in ("stack.tif", "valid.tif", "sites.csv"):
        if not (path / name).exists():
            raise InputError(path / name, "missing from the prepared study")
    try:
        with rasterio.open(path / "stack.tif") as ds:
            raw = ds.read().astype(np.float32, copy=False)
            grid = Grid(crs=ds.crs, transform=ds.transform, height=ds.height, width=ds.width)
        with rasterio.open(path / "valid.tif") as ds:
            valid = ds.read(1).astype(bool)
        knowledge = None
        if (path / "knowledge.tif").exists():
            with rasterio.open(path / "knowledge.tif") as ds:
                knowledge = ds.read(1).astype(np.float32, copy=False)
    except rasterio.errors.RasterioError as exc:
        raise InputError(path, f"cannot read a raster ({str(exc).splitlines()[0]})") from None
    faults = gpd.read_file(path / "faults.gpkg") if (path / "faults.gpkg").exists() else None
    try:
        sites = SiteTable.from_frame(pd.read_csv(path / "sites.csv", dtype={"site_id": str}))
    except (KeyError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(path / "sites.csv", f"cannot read ({exc})") from None
    _check_prepared(path, meta, raw, valid, knowledge, sites)
    return Study(
        config=config,
        names=list(meta["names"]),
        grid=grid,
        raw=raw,
        valid=valid,
        knowledge=knowledge,
        sites=sites,
        faults=faults,
        notes=list(meta.get("notes", [])),
        skipped=int(meta.get("skipped", 0)),
    )


def _check_prepared(
    path: Path,
    meta: dict[str, Any],
    raw: np.ndarray,
    valid: np.ndarray,
    knowledge: np.ndarray | None,
    sites: SiteTable,
) -> None:
    """Refuse a prepared folder whose files no longer agree (edited by hand or mixed up)."""
    names = meta.get("names")
    if not isinstance(names, list) or len(names) != raw.shape[0]:
        count = len(names) if isinstance(names, list) else "no"
        raise InputError(
            path,
            f"edited or inconsistent prepared study: metadata.json names {count} layers but "
            f"stack.tif has {raw.shape[0]} bands (prepare it again)",
        )
    shape = raw.shape[1:]
    for name, array in (("valid.tif", valid), ("knowledge.tif", knowledge)):
        if array is not None and array.shape != shape:
            raise InputError(
                path / name,
                f"shape {array.shape[0]} x {array.shape[1]} differs from stack.tif's "
                f"{shape[0]} x {shape[1]} (prepare it again)",
            )
    inside = (
        (sites.rows >= 0) & (sites.rows < shape[0]) & (sites.cols >= 0) & (sites.cols < shape[1])
    )
    if not inside.all():
        raise InputError(
            path / "sites.csv", "a site lies outside stack.tif's grid (prepare it again)"
        )
