"""Streaming prediction: exactness against window-by-window extraction, outputs and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from gkdcn import predict as predict_module
from gkdcn.data.samples import extract_windows
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError, InputError, OutputExistsError
from gkdcn.io.rasters import ElementSource, open_elements
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.predict import (
    NODATA,
    PredictionResult,
    predict_map,
    predict_to_file,
    write_prediction,
)
from gkdcn.runtime import resolve_device
from helpers import random_state, write_raster

LAYERS = ["Ag", "As", "Au", "Cu", "Zn"]
MODEL_ORDER = ["Cu", "Au", "Zn", "Ag", "As"]  # not the folder's sorted order: forces a reorder
WINDOW = 5
HEIGHT, WIDTH = 14, 11
TRANSFORM = Affine(1000.0, 0.0, 565_000.0, 0.0, -1000.0, 4_624_000.0)
CRS = "EPSG:32645"


def _write_layers(
    folder: Path, layers: list[str], height: int = HEIGHT, width: int = WIDTH, seed: int = 0
) -> np.ndarray:
    """Single-band GeoTIFFs with a few nodata cells (-9999); returns the raw stack, NaN invalid."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stack = rng.lognormal(mean=1.0, sigma=0.8, size=(len(layers), height, width)).astype(np.float32)
    # Nodata in one layer only (the whole cell becomes invalid), next to the top edge, in the
    # interior, in a corner and a short run along the right edge.
    holes = [(0, 0, 4), (1, 6, 5), (2, height - 1, width - 1), (3, 3, width - 1), (3, 4, width - 1)]
    for layer, r, c in holes:
        if layer < len(layers) and r < height and c < width:
            stack[layer, r, c] = np.nan
    for name, band in zip(layers, stack, strict=True):
        write_raster(
            folder / f"{name}.tif",
            np.where(np.isnan(band), -9999.0, band).astype(np.float32),
            crs=CRS,
            transform=TRANSFORM,
            nodata=-9999.0,
        )
    return stack


def _bundle(
    kind: str = "cnn",
    padding: str = "zero",
    seed: int = 0,
    window: int = WINDOW,
    channels: list[str] | None = None,
    dropout: float = 0.5,
    head: str = "gap",
) -> ModelBundle:
    """A tiny bundle with random weights, random BatchNorm statistics and random offsets."""
    channels = list(MODEL_ORDER if channels is None else channels)
    spec = ModelSpec(
        kind=kind,  # type: ignore[arg-type]
        in_channels=len(channels),
        window=window,
        head=head,  # type: ignore[arg-type]
        dropout=dropout,
        width=8,
    )
    state = random_state(build_network(spec), seed)
    rng = np.random.default_rng(seed)
    values = rng.lognormal(mean=1.0, sigma=0.8, size=(300, len(channels)))
    transform = ChannelTransform.fit(values, "log", "standard")
    return ModelBundle(
        spec=spec, state=state, channels=channels, transform=transform, padding=padding
    )


def _reference(bundle: ModelBundle, raw: np.ndarray, names: list[str]) -> tuple[np.ndarray, ...]:
    """Probabilities of every valid cell from windows cut one by one from the transformed map."""
    ordered = raw[[names.index(c) for c in bundle.channels]]
    features = bundle.transform.apply(ordered)
    valid = np.isfinite(ordered).all(axis=0)
    rows, cols = np.nonzero(valid)
    padding = bundle.padding
    x = extract_windows(features, rows, cols, bundle.window, padding)  # type: ignore[arg-type]
    with torch.no_grad():
        prob = torch.sigmoid(bundle.network()(torch.from_numpy(x))).numpy()
    return rows, cols, prob, valid


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one torch thread avoids OpenMP spin-waiting on a busy machine (30x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("elements")
    raw = _write_layers(folder, LAYERS)
    return folder, raw


@pytest.fixture()
def source(grid_dir: tuple[Path, np.ndarray]) -> Iterator[ElementSource]:
    with open_elements(grid_dir[0]) as src:
        yield src


@pytest.mark.parametrize("kind", ["cnn", "dcn"])
@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_streamed_map_equals_window_by_window(
    grid_dir: tuple[Path, np.ndarray], source: ElementSource, kind: str, padding: str
) -> None:
    _, raw = grid_dir
    bundle = _bundle(kind, padding, seed=3)
    rows, cols, expected, valid = _reference(bundle, raw, LAYERS)
    # The border is really predicted with padding: some windows cross the map edge.
    assert rows.min() == 0 and cols.min() == 0 and rows.max() == HEIGHT - 1
    for block_rows, batch_size in [(3, 7), (64, 1024), (1, 5)]:
        result = predict_map(bundle, source, block_rows=block_rows, batch_size=batch_size)
        np.testing.assert_array_equal(result.valid, valid)
        np.testing.assert_allclose(result.mean[rows, cols], expected, atol=1e-5, rtol=0)
        assert np.isnan(result.mean[~valid]).all()
        assert result.std is None
        assert result.info["windows"] == rows.size


def test_reflect_mirrors_about_the_map_edge_not_the_block(source: ElementSource) -> None:
    zero = predict_map(_bundle("cnn", "zero", seed=5), source, block_rows=2)
    reflect = predict_map(_bundle("cnn", "reflect", seed=5), source, block_rows=2)
    half = WINDOW // 2
    interior = np.zeros((HEIGHT, WIDTH), dtype=bool)
    interior[half:-half, half:-half] = True
    # Away from the edges the padding does not matter; at the edges it does.
    np.testing.assert_allclose(zero.mean[interior], reflect.mean[interior], equal_nan=True)
    edge = ~interior & zero.valid
    assert np.abs(zero.mean[edge] - reflect.mean[edge]).max() > 1e-4
    # And the interior of a block that is not at the map edge is unaffected by block size.
    bigger = predict_map(_bundle("cnn", "reflect", seed=5), source, block_rows=HEIGHT)
    np.testing.assert_allclose(bigger.mean, reflect.mean, atol=1e-6, equal_nan=True)


def test_transform_applied_in_column_chunks(
    grid_dir: tuple[Path, np.ndarray], source: ElementSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunking the per-cell transform across columns (wide grids) changes nothing."""
    _, raw = grid_dir
    bundle = _bundle("cnn", "reflect", seed=6)
    rows, cols, expected, _ = _reference(bundle, raw, LAYERS)
    monkeypatch.setattr(predict_module, "_TRANSFORM_CELLS", 7)  # 1-2 columns per chunk
    result = predict_map(bundle, source, block_rows=4)
    np.testing.assert_allclose(result.mean[rows, cols], expected, atol=1e-5, rtol=0)


def test_reads_only_block_plus_halo(grid_dir: tuple[Path, np.ndarray]) -> None:
    heights: list[int] = []

    class Spy(ElementSource):
        def read(self, window=None):  # type: ignore[no-untyped-def]
            assert window is not None, "the whole map must never be read at once"
            heights.append(int(window.height))
            return super().read(window)

    with open_elements(grid_dir[0]) as src:
        spy = Spy(src.names, src.grid, src.paths, src._readers)
        predict_map(_bundle(), spy, block_rows=4)
    assert heights and max(heights) <= 4 + 2 * (WINDOW // 2)


def test_flatten_head_and_extra_layers(tmp_path: Path, grid_dir: tuple[Path, np.ndarray]) -> None:
    """A grid with layers the model does not use predicts the same as the exact grid."""
    _, raw = grid_dir
    folder = tmp_path / "more"
    more = _write_layers(folder, [*LAYERS, "xx"])
    np.testing.assert_array_equal(more[: len(LAYERS)], raw, strict=False)
    bundle = _bundle("cnn", "zero", head="flatten", seed=2)
    rows, cols, expected, _ = _reference(bundle, raw, LAYERS)
    with open_elements(folder) as src:
        result = predict_map(bundle, src, block_rows=5)
    np.testing.assert_allclose(result.mean[rows, cols], expected, atol=1e-5, rtol=0)
    assert result.names == MODEL_ORDER


def test_mc_dropout_is_k_stochastic_passes_with_batchnorm_in_eval(
    grid_dir: tuple[Path, np.ndarray], source: ElementSource
) -> None:
    _, raw = grid_dir
    bundle = _bundle("dcn", "zero", seed=4)
    k = 4
    result = predict_map(
        bundle, source, mc_dropout=k, seed=11, block_rows=HEIGHT, batch_size=10_000
    )
    ordered = raw[[LAYERS.index(c) for c in bundle.channels]]
    rows, cols = np.nonzero(np.isfinite(ordered).all(axis=0))
    x = torch.from_numpy(extract_windows(bundle.transform.apply(ordered), rows, cols, WINDOW))
    net = bundle.network()
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train()  # BatchNorm stays in eval
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(11)
        passes = torch.stack([torch.sigmoid(net(x)) for _ in range(k)]).double().numpy()
    assert result.std is not None
    np.testing.assert_allclose(result.mean[rows, cols], passes.mean(axis=0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.std[rows, cols], passes.std(axis=0), atol=1e-5, rtol=0)
    assert result.std[rows, cols].max() > 1e-3
    assert np.isnan(result.std[~result.valid]).all()
    again = predict_map(bundle, source, mc_dropout=k, seed=11, block_rows=HEIGHT, batch_size=10_000)
    np.testing.assert_array_equal(again.mean, result.mean)
    # Without MC dropout the prediction is deterministic (dropout off) and has no std.
    plain = predict_map(bundle, source)
    assert plain.std is None


def test_ensemble_mean_and_std_across_models(source: ElementSource) -> None:
    a = _bundle("cnn", "reflect", seed=1)
    b = _bundle("cnn", "reflect", seed=2)  # its own transform too
    pa = predict_map(a, source).mean
    pb = predict_map(b, source).mean
    both = predict_map([a, b], source, block_rows=3)
    assert both.std is not None
    np.testing.assert_allclose(both.mean, (pa + pb) / 2, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(both.std, np.abs(pa - pb) / 2, atol=1e-6, equal_nan=True)
    assert both.info["models"] == 2


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"window": 7}, "window 7 vs 5"),
        ({"padding": "reflect"}, "padding"),
        ({"channels": list(reversed(MODEL_ORDER))}, "channels differ"),
    ],
)
def test_ensemble_must_agree(source: ElementSource, other: dict, message: str) -> None:
    with pytest.raises(GkdcnError, match=message) as err:
        predict_map([_bundle(), _bundle(**other)], source)
    assert "\n" not in str(err.value)


def test_write_geotiff_and_csv(tmp_path: Path, source: ElementSource) -> None:
    result = predict_map([_bundle(seed=1), _bundle(seed=2)], source)
    out = write_prediction(result, tmp_path / "map.tif", csv_path=tmp_path / "map.csv")
    with rasterio.open(out) as ds:
        assert (ds.height, ds.width) == (HEIGHT, WIDTH)
        assert ds.transform == TRANSFORM
        assert ds.crs == rasterio.crs.CRS.from_string(CRS)
        assert ds.nodata == NODATA
        assert ds.count == 2 and ds.descriptions == ("probability", "std")
        assert ds.dtypes == ("float32", "float32")
        assert ds.compression is not None and ds.compression.name.lower() == "deflate"
        prob = ds.read(1)
        masked = ds.read(1, masked=True)
    np.testing.assert_array_equal(prob[~result.valid], NODATA)
    np.testing.assert_array_equal(masked.mask, ~result.valid)
    np.testing.assert_allclose(prob[result.valid], result.mean[result.valid])
    table = np.genfromtxt(tmp_path / "map.csv", delimiter=",", names=True)
    assert table.dtype.names == ("x", "y", "probability", "std")
    assert table.size == result.n_valid
    rows, cols = np.nonzero(result.valid)
    x, y = source.grid.xy(rows, cols)
    np.testing.assert_allclose(table["x"], x)
    np.testing.assert_allclose(table["y"], y)
    np.testing.assert_allclose(table["probability"], result.mean[rows, cols], atol=1e-6)
    # A single deterministic model: one band.
    single = predict_map(_bundle(), source)
    write_prediction(single, tmp_path / "one.tif")
    with rasterio.open(tmp_path / "one.tif") as ds:
        assert ds.count == 1 and ds.descriptions == ("probability",)


def test_large_map_is_tiled(tmp_path: Path) -> None:
    grid_folder = tmp_path / "big"
    _write_layers(grid_folder, MODEL_ORDER, height=300, width=260)
    with open_elements(grid_folder, layers=MODEL_ORDER) as src:
        result = PredictionResult(
            mean=np.full(src.grid.shape, 0.5, np.float32),
            std=None,
            valid=np.ones(src.grid.shape, bool),
            grid=src.grid,
            names=MODEL_ORDER,
        )
    write_prediction(result, tmp_path / "big.tif")
    with rasterio.open(tmp_path / "big.tif") as ds:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)


def _no_leftovers(folder: Path, allowed: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == allowed


def _save(bundle: ModelBundle, path: Path) -> Path:
    bundle.save(path)
    return path


def test_predict_to_file_end_to_end(tmp_path: Path, source: ElementSource) -> None:
    models = [_save(_bundle(seed=s), tmp_path / f"m{s}.pt") for s in (1, 2)]
    out = tmp_path / "out" / "map.tif"
    written = predict_to_file(models, source, out, csv_path=tmp_path / "out" / "map.csv")
    assert written == [out, tmp_path / "out" / "map.csv"]
    _no_leftovers(out.parent, {"map.tif", "map.csv", "map.qml"})
    expected = predict_map([ModelBundle.load(m) for m in models], source)
    assert _band(out, 1) == pytest.approx(expected.mean[expected.valid])
    assert _band(out, 2) == pytest.approx(expected.std[expected.valid])  # type: ignore[index]
    with pytest.raises(OutputExistsError):
        predict_to_file(models[0], source, out)
    # Loaded bundles work as well as files.
    assert predict_to_file(_bundle(seed=1), source, out, overwrite=True) == [out]
    with rasterio.open(out) as ds:
        assert ds.count == 1


def _band(path: Path, band: int) -> np.ndarray:
    """The valid cells of one band of a written map."""
    with rasterio.open(path) as ds:
        data = ds.read(band, masked=True)
    return data.compressed()


def _one_line_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(excinfo.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def test_error_missing_channels(tmp_path: Path) -> None:
    folder = tmp_path / "few"
    _write_layers(folder, ["Ag", "Au", "Cu"])
    model = _save(_bundle(), tmp_path / "m.pt")
    out = tmp_path / "map.tif"
    with open_elements(folder) as src, pytest.raises(InputError) as err:
        predict_to_file(model, src, out)
    text = _one_line_error(err)
    assert "missing layers Zn, As" in text and str(folder) in text
    assert not out.exists()
    _no_leftovers(tmp_path, {"few", "m.pt"})


def test_error_grid_smaller_than_window(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    _write_layers(folder, LAYERS, height=4, width=20)
    model = _save(_bundle(), tmp_path / "m.pt")
    with open_elements(folder) as src, pytest.raises(GkdcnError) as err:
        predict_to_file(model, src, tmp_path / "map.tif")
    assert "smaller than the model's 5 x 5 window" in _one_line_error(err)
    _no_leftovers(tmp_path, {"tiny", "m.pt"})


def test_error_output_exists_checked_before_computing(
    tmp_path: Path, source: ElementSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("predicted before checking the output")

    monkeypatch.setattr(predict_module, "predict_map", boom)
    model = _save(_bundle(), tmp_path / "m.pt")
    out = tmp_path / "map.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError) as err:
        predict_to_file(model, source, out)
    assert "--overwrite" in _one_line_error(err)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(OutputExistsError):
        predict_to_file(model, source, tmp_path / "new.tif", csv_path=out)
    _no_leftovers(tmp_path, {"m.pt", "map.tif"})


def test_error_unwritable_folder(tmp_path: Path, source: ElementSource) -> None:
    model = _save(_bundle(), tmp_path / "m.pt")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(GkdcnError) as err:
        predict_to_file(model, source, blocker / "map.tif")
    assert "not a folder" in _one_line_error(err)
    readonly = Path("/proc/sys/gkdcn-test")  # not writable even by root
    if readonly.parent.exists():
        with pytest.raises(GkdcnError) as err:
            predict_to_file(model, source, readonly / "map.tif")
        assert "not writable" in _one_line_error(err)
    _no_leftovers(tmp_path, {"m.pt", "a_file"})


def test_error_corrupt_model_file(tmp_path: Path, source: ElementSource) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"\x00not a model at all" * 10)
    out = tmp_path / "map.tif"
    with pytest.raises(InputError) as err:
        predict_to_file(model, source, out)
    assert str(model) in _one_line_error(err)
    with pytest.raises(InputError, match="model file not found"):
        predict_to_file(tmp_path / "missing.pt", source, out)
    _no_leftovers(tmp_path, {"m.pt"})


def test_bad_arguments(source: ElementSource) -> None:
    bundle = _bundle()
    with pytest.raises(GkdcnError, match="mc_dropout"):
        predict_map(bundle, source, mc_dropout=1)
    with pytest.raises(GkdcnError, match="batch size"):
        predict_map(bundle, source, batch_size=0)
    with pytest.raises(GkdcnError, match="dropout > 0"):
        predict_map(_bundle(dropout=0.0), source, mc_dropout=3)
    with pytest.raises(GkdcnError, match="no model"):
        predict_map([], source)
    with pytest.raises(GkdcnError, match="threads"):
        predict_map(bundle, source, threads=0)
    before = torch.get_num_threads()
    result = predict_map(bundle, source, threads=2)
    assert result.info["threads"] == 2 and torch.get_num_threads() == before


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(GkdcnError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(GkdcnError, match="unknown device"):
        resolve_device("tpu0")


def _write_config(root: Path, elements: Path, extra: str = "") -> Path:
    """A minimal study config (TOML written by hand) pointing at ``elements``."""
    sites = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    sites[5, 5] = 1
    write_raster(root / "deposits.tif", sites, crs=CRS, transform=TRANSFORM)
    config = root / "study.toml"
    config.write_text(
        f'name = "t"\n[elements]\npath = "{elements.name}"\n'
        '[sites.deposits]\nraster = "deposits.tif"\n'
        "[predict]\nbatch_size = 7\nblock_rows = 3\n" + extra,
        encoding="utf-8",
    )
    return config


def test_predict_to_file_from_config_or_folder(
    tmp_path: Path, grid_dir: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path source opens only the model's layers (extra ones ignored), in the model's order."""
    _, raw = grid_dir
    elements = tmp_path / "elements"
    _write_layers(elements, [*LAYERS, "xx"])
    bundle = _bundle("dcn", "reflect", seed=8)
    model = _save(bundle, tmp_path / "m.pt")
    _, _, expected, _ = _reference(bundle, raw, LAYERS)
    config = _write_config(tmp_path, elements)
    seen: list[tuple[int, int]] = []

    def spy(*args: Any, **kwargs: Any) -> PredictionResult:
        seen.append((kwargs["batch_size"], kwargs["block_rows"]))
        return predict_map(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_map", spy)
    predict_to_file(model, config, tmp_path / "a.tif")
    predict_to_file(model, elements, tmp_path / "b.tif", batch_size=64)
    assert seen == [(7, 3), (64, 64)]  # the config's [predict] settings, else the defaults
    for name in ("a.tif", "b.tif"):
        assert _band(tmp_path / name, 1) == pytest.approx(expected, abs=1e-5)


def test_knowledge_channel_comes_from_the_config(
    tmp_path: Path, grid_dir: tuple[Path, np.ndarray]
) -> None:
    from gkdcn.data.knowledge import KNOWLEDGE_CHANNEL

    _, raw = grid_dir
    elements = tmp_path / "elements"
    _write_layers(elements, LAYERS)
    weight = np.linspace(0, 1, HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
    write_raster(tmp_path / "weights.tif", weight, crs=CRS, transform=TRANSFORM)
    config = _write_config(tmp_path, elements, '[knowledge]\nweights = "weights.tif"\n')
    channels = [*MODEL_ORDER, KNOWLEDGE_CHANNEL]
    bundle = _bundle("cnn", "zero", seed=9, channels=channels)
    model = _save(bundle, tmp_path / "m.pt")
    stacked = np.concatenate([raw, weight[np.newaxis]])
    _, _, expected, _ = _reference(bundle, stacked, [*LAYERS, KNOWLEDGE_CHANNEL])
    predict_to_file(model, config, tmp_path / "k.tif")
    assert _band(tmp_path / "k.tif", 1) == pytest.approx(expected, abs=1e-5)
    with open_elements(elements) as src, pytest.raises(InputError) as err:
        predict_map(bundle, src)
    assert "knowledge weight as a channel" in _one_line_error(err)


def _old_clr_features(t: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    """The pre-version-2 transform written out by hand: CLR across every channel, then scaling."""
    shift, floor = np.asarray(t["shift"])[:, None, None], np.asarray(t["floor"])[:, None, None]
    x = raw.astype(np.float64)
    valid = np.isfinite(x).all(axis=0)
    logs = np.log(np.maximum(np.where(valid, x, 1.0) + shift, floor))
    clr = logs - logs.mean(axis=0, keepdims=True)
    out = (clr - np.asarray(t["center"])[:, None, None]) / np.asarray(t["scale"])[:, None, None]
    return np.where(valid, out, 0.0).astype(np.float32)


def _knowledge_case(tmp_path: Path, raw: np.ndarray) -> tuple[Path, np.ndarray, list[str]]:
    """Element folder + a weights raster + a config naming it; the stacked raw channels."""
    from gkdcn.data.study import KNOWLEDGE_CHANNEL

    elements = tmp_path / "elements"
    _write_layers(elements, LAYERS)
    weight = np.linspace(0, 1, HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
    weight[:4] = 0.0  # many exact zeros, like a fault-proximity weight
    write_raster(tmp_path / "weights.tif", weight, crs=CRS, transform=TRANSFORM)
    config = _write_config(tmp_path, elements, '[knowledge]\nweights = "weights.tif"\n')
    stacked = np.concatenate([raw, np.where(np.isfinite(raw).all(axis=0), weight, np.nan)[None]])
    return config, stacked, [*LAYERS, KNOWLEDGE_CHANNEL]


def test_model_file_from_before_channel_kinds_predicts_as_before(
    tmp_path: Path, grid_dir: tuple[Path, np.ndarray]
) -> None:
    """A file written before non-compositional channels: its knowledge channel stays in the CLR."""
    from gkdcn.data.study import KNOWLEDGE_CHANNEL

    _, raw = grid_dir
    config, stacked, names = _knowledge_case(tmp_path, raw)
    channels = [*MODEL_ORDER, KNOWLEDGE_CHANNEL]
    spec = ModelSpec(kind="cnn", in_channels=len(channels), window=WINDOW, width=8)
    state = random_state(build_network(spec), 21)
    rng = np.random.default_rng(21)
    values = np.column_stack(
        [rng.lognormal(1.0, 0.8, size=(300, len(LAYERS))), rng.uniform(0, 1, 300)]
    )
    values[:100, -1] = 0.0
    fitted = ChannelTransform.fit(values, "clr", "standard")
    # The old format, written by hand: no "compositional" entry, both versions 1.
    old_transform = {
        "version": 1,
        "method": "clr",
        "scaling": "standard",
        **{k: getattr(fitted, k).tolist() for k in ("shift", "center", "scale", "floor")},
    }
    meta = {
        "format": "gkdcn-model",
        "format_version": 1,
        "spec": spec.to_dict(),
        "channels": channels,
        "transform": old_transform,
        "padding": "zero",
        "train_config": {},
        "info": {},
    }
    model = tmp_path / "old.pt"
    torch.save({"meta": json.dumps(meta), "state": state}, model)

    bundle = ModelBundle.load(model)
    assert bundle.transform.all_compositional
    assert set(bundle.channel_kinds.values()) == {"log-ratio"}
    ordered = stacked[[names.index(c) for c in channels]]
    features = _old_clr_features(old_transform, ordered)
    np.testing.assert_allclose(bundle.transform.apply(ordered), features, atol=1e-6, rtol=0)
    valid = np.isfinite(ordered).all(axis=0)
    rows, cols = np.nonzero(valid)
    x = extract_windows(features, rows, cols, WINDOW, "zero")
    with torch.no_grad():
        expected = torch.sigmoid(bundle.network()(torch.from_numpy(x))).numpy()
    predict_to_file(model, config, tmp_path / "old.tif")
    assert _band(tmp_path / "old.tif", 1) == pytest.approx(expected, abs=1e-5)
    # Saved again it is still a version 1 file (older gkdcn versions read it).
    resaved = torch.load(bundle.save(tmp_path / "again.pt"), weights_only=True)
    again = json.loads(resaved["meta"])
    assert again["format_version"] == 1 and again["transform"] == old_transform


def test_scaled_only_channels_are_recorded_and_applied_at_prediction(
    tmp_path: Path, grid_dir: tuple[Path, np.ndarray]
) -> None:
    from gkdcn.data.study import KNOWLEDGE_CHANNEL

    _, raw = grid_dir
    config, stacked, names = _knowledge_case(tmp_path, raw)
    channels = [*MODEL_ORDER, KNOWLEDGE_CHANNEL]
    bundle = _bundle("cnn", "zero", seed=22, channels=channels)
    rng = np.random.default_rng(22)
    values = np.column_stack(
        [rng.lognormal(1.0, 0.8, size=(300, len(LAYERS))), rng.uniform(0, 1, 300)]
    )
    mask = [True] * len(LAYERS) + [False]
    bundle.transform = ChannelTransform.fit(values, "clr", "standard", compositional=mask)
    model = _save(bundle, tmp_path / "m.pt")
    meta = json.loads(torch.load(model, weights_only=True)["meta"])
    # Version 2: an older gkdcn refuses the file instead of log-ratioing the weight.
    assert meta["format_version"] == 2 and meta["transform"]["compositional"] == mask
    loaded = ModelBundle.load(model)
    assert loaded.channel_kinds[KNOWLEDGE_CHANNEL] == "scaled"
    assert [loaded.channel_kinds[c] for c in MODEL_ORDER] == ["log-ratio"] * len(LAYERS)
    _, _, expected, _ = _reference(loaded, stacked, names)
    predict_to_file(model, config, tmp_path / "k.tif")
    assert _band(tmp_path / "k.tif", 1) == pytest.approx(expected, abs=1e-5)
    # The split matters: read as all compositional, the same weights map differently.
    bundle.transform = ChannelTransform.fit(values, "clr", "standard")
    _, _, as_before, _ = _reference(bundle, stacked, names)
    assert np.abs(as_before - expected).max() > 1e-3


def test_model_file_whose_transform_does_not_fit_its_channels(tmp_path: Path) -> None:
    bundle = _bundle(seed=23)
    model = _save(bundle, tmp_path / "m.pt")
    payload = torch.load(model, weights_only=True)
    meta = json.loads(payload["meta"])
    meta["transform"]["compositional"] = [True, False]
    meta["transform"]["version"] = 2
    torch.save({"meta": json.dumps(meta), "state": payload["state"]}, model)
    with pytest.raises(InputError) as err:
        ModelBundle.load(model)
    assert "model file is incomplete or inconsistent" in _one_line_error(err)
    meta["transform"] = {**bundle.transform.to_dict(), "shift": [0.0] * 4, "center": [0.0] * 4}
    meta["transform"].update(scale=[1.0] * 4, floor=[1.0] * 4)
    torch.save({"meta": json.dumps(meta), "state": payload["state"]}, model)
    with pytest.raises(InputError) as err:
        ModelBundle.load(model)
    assert "its transform has 4 channels, its channel list 5" in _one_line_error(err)


def test_a_multi_member_file_maps_the_mean_of_its_members(
    tmp_path: Path, source: ElementSource, grid_dir: tuple[Path, np.ndarray]
) -> None:
    singles = [_bundle("dcn", "reflect", seed=s) for s in (1, 2, 3)]  # own transforms too
    for i, b in enumerate(singles):
        b.train_config = {"seed": i}
    path = ModelBundle.ensemble(singles).save(tmp_path / "ensemble.pt")
    loaded = ModelBundle.load(path)
    assert len(loaded.members) == 3 and loaded.info["seeds"] == [0, 1, 2]
    assert json.loads(torch.load(path, weights_only=True)["meta"])["format_version"] == 3
    maps = [predict_map(b, source).mean for b in singles]
    got = predict_map(loaded, source, block_rows=4)
    np.testing.assert_allclose(got.mean, np.mean(maps, axis=0), atol=1e-6, equal_nan=True)
    assert got.info["models"] == 3 and got.std is not None
    # Same nodata rule as one model: NaN exactly where a single model has none.
    np.testing.assert_array_equal(np.isnan(got.mean), np.isnan(maps[0]))
    # predict_cells (held-out scoring) averages the members the same way.
    raw = grid_dir[1]
    rows, cols = np.nonzero(got.valid)
    cells = predict_module.predict_cells(loaded, raw, LAYERS, rows, cols, batch_size=7)
    np.testing.assert_allclose(cells, got.mean[rows, cols], atol=1e-6)
    # A file through predict_to_file gives the same map, and an ensemble of two such files
    # averages all six members.
    out = tmp_path / "map.tif"
    predict_to_file(path, source, out)
    assert _band(out, 1) == pytest.approx(got.mean[got.valid], abs=1e-6)
    six = predict_map([loaded, loaded], source)
    assert six.info["models"] == 6
    np.testing.assert_allclose(six.mean, got.mean, atol=1e-6, equal_nan=True)


def test_single_member_files_keep_their_format(tmp_path: Path, source: ElementSource) -> None:
    single = _bundle(seed=4)
    path = single.save(tmp_path / "one.pt")
    meta = json.loads(torch.load(path, weights_only=True)["meta"])
    assert meta["format_version"] == 1 and "members" not in meta  # what older gkdcn reads
    loaded = ModelBundle.load(path)
    assert loaded.members == [loaded] and not loaded.others
    assert ModelBundle.ensemble([single]) is single
    np.testing.assert_allclose(
        predict_map(loaded, source).mean, predict_map(single, source).mean, equal_nan=True
    )


def test_ensemble_members_must_agree_and_files_must_be_whole(tmp_path: Path) -> None:
    with pytest.raises(GkdcnError, match="member 2 differs"):
        ModelBundle.ensemble([_bundle(), _bundle(window=7)])
    path = ModelBundle.ensemble([_bundle(seed=1), _bundle(seed=2)]).save(tmp_path / "e.pt")
    payload = torch.load(path, weights_only=True)
    payload["members"] = []  # weights of the second member lost
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(InputError, match="member records"):
        ModelBundle.load(tmp_path / "broken.pt")
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["members"][0].items() if v.is_floating_point())
    payload["members"][0][name] = payload["members"][0][name] * float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(InputError, match="NaN"):
        ModelBundle.load(tmp_path / "nan.pt")
