"""The Dask engine on a real LocalCluster (loopback, 2 single-threaded worker processes)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytest.importorskip("distributed")
import cloudpickle  # a dependency of distributed

from gkdcn.cluster import (
    Scheduler,
    open_client,
    parse_scheduler,
    predict_map_on_cluster,
    run_jobs_on_cluster,
)
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError
from gkdcn.io.rasters import open_elements
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.predict import predict_map, predict_to_file
from helpers import random_state, run_cli, write_raster

# The workers cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LAYERS = ["As", "Au", "Cu", "Zn"]
HEIGHT, WIDTH = 23, 9


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with open_client("local:2") as c:
        yield c


def test_parse_scheduler() -> None:
    assert parse_scheduler("local:3") == Scheduler(local=3)
    assert parse_scheduler(" tcp://10.0.0.5:8786 ") == Scheduler(address="tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "10.0.0.5:8786", "tcp://host", "http://h:1", "tcp://:8786"):
        with pytest.raises(GkdcnError, match="--scheduler"):
            parse_scheduler(bad)


def test_unreachable_scheduler_is_one_line_error_before_any_work() -> None:
    import socket

    with socket.socket() as probe:  # a free loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tic = time.perf_counter()
    with (
        pytest.raises(GkdcnError, match=r"cannot reach the Dask scheduler within 2 s") as info,
        open_client(f"tcp://127.0.0.1:{port}", timeout=2),
    ):
        raise AssertionError("connected to nothing")
    assert "\n" not in str(info.value)
    assert time.perf_counter() - tic < 30


def _draw(
    job: tuple[int, int], context: dict[str, float], progress: None
) -> tuple[int, np.ndarray, int]:
    """A stand-in job: seeded numbers scaled by the shared context, after a pause."""
    index, seed = job
    time.sleep(context["pause"])
    return index, context["scale"] * np.random.default_rng(seed).normal(size=3), os.getpid()


def _expected(seed: int) -> np.ndarray:
    return 2.0 * np.random.default_rng(seed).normal(size=3)


def test_jobs_return_results_to_the_client_on_both_workers(client: object) -> None:
    jobs = [(i, 100 + i) for i in range(6)]
    got: dict[int, np.ndarray] = {}
    pids: set[int] = set()

    def keep(job: tuple[int, int], result: tuple[int, np.ndarray, int]) -> None:
        assert result[0] == job[0]
        got[job[0]] = result[1]
        pids.add(result[2])

    run_jobs_on_cluster(client, jobs, _draw, {"scale": 2.0, "pause": 0.3}, on_result=keep)  # type: ignore[arg-type]
    assert sorted(got) == list(range(6))
    for i, seed in jobs:
        np.testing.assert_array_equal(got[i], _expected(seed))
    assert len(pids) == 2 and os.getpid() not in pids


def _fail(job: int, context: None, progress: None) -> int:
    if job == 3:
        raise GkdcnError("job 3 failed on purpose")
    return job


def test_a_failing_job_raises_in_the_client(client: object) -> None:
    seen: list[int] = []
    with pytest.raises(GkdcnError, match="job 3 failed on purpose"):
        run_jobs_on_cluster(
            client,  # type: ignore[arg-type]
            [3, 1, 2, 4],
            _fail,
            None,
            on_result=lambda job, result: seen.append(result),
            retries=0,
        )
    assert 3 not in seen


# --------------------------------------------------------------------------------------------
# large maps


def _bundle(kind: str, padding: str, seed: int, dropout: float = 0.5) -> ModelBundle:
    spec = ModelSpec(kind=kind, in_channels=len(LAYERS), window=5, dropout=dropout, width=8)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    transform = ChannelTransform.fit(
        rng.lognormal(1.0, 0.8, size=(200, len(LAYERS))), "log", "standard"
    )
    return ModelBundle(
        spec=spec,
        state=random_state(build_network(spec), seed),
        channels=list(reversed(LAYERS)),  # not the folder's order: the block reorders
        transform=transform,
        padding=padding,
    )


@pytest.fixture(scope="module")
def elements(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elements")
    rng = np.random.default_rng(7)
    for i, name in enumerate(LAYERS):
        band = rng.lognormal(1.0, 0.8, size=(HEIGHT, WIDTH)).astype(np.float32)
        band[(5 * i + 3) % HEIGHT, i] = -9999.0  # invalid cells
        write_raster(folder / f"{name}.tif", band, nodata=-9999.0)
    return folder


@pytest.mark.parametrize(("kind", "padding"), [("cnn", "reflect"), ("dcn", "zero")])
def test_blockwise_cluster_map_equals_local_map(
    client: object, elements: Path, kind: str, padding: str
) -> None:
    bundle = _bundle(kind, padding, seed=3)
    with open_elements(elements) as source:
        local = predict_map(bundle, source, block_rows=4, batch_size=16, threads=1)
        remote = predict_map_on_cluster(
            client,  # type: ignore[arg-type]
            bundle,
            source,
            block_rows=4,
            batch_size=16,
            in_flight=3,  # fewer than the 6 blocks: blocks are fed as others finish
        )
    assert local.n_valid == remote.n_valid == HEIGHT * WIDTH - len(LAYERS)
    np.testing.assert_array_equal(remote.valid, local.valid)
    np.testing.assert_array_equal(remote.mean, local.mean)
    assert remote.std is None


def test_cluster_ensemble_with_mc_dropout_equals_local_file(
    client: object, elements: Path, tmp_path: Path
) -> None:
    bundles = [_bundle("dcn", "reflect", seed=s) for s in (1, 2)]
    settings = {"block_rows": 5, "batch_size": 32, "mc_dropout": 3, "seed": 4}
    local = predict_to_file(bundles, elements, tmp_path / "local.tif", threads=1, **settings)

    def engine(*args: object, **kwargs: object) -> object:
        return predict_map_on_cluster(client, *args, **kwargs)  # type: ignore[arg-type]

    remote = predict_to_file(bundles, elements, tmp_path / "remote.tif", engine=engine, **settings)  # type: ignore[arg-type]
    with rasterio.open(local[0]) as a, rasterio.open(remote[0]) as b:
        assert b.count == 2  # probability and std
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.profile == b.profile


def test_cluster_counts_the_members_of_a_seed_ensemble_file(client: object, elements: Path) -> None:
    """A multi-member model file (``gkdcn train --seeds N``) is N models on both engines."""
    ensemble = ModelBundle.ensemble([_bundle("cnn", "reflect", seed=s) for s in (1, 2, 3)])
    with open_elements(elements) as source:
        local = predict_map(ensemble, source, block_rows=5, batch_size=32, threads=1)
        remote = predict_map_on_cluster(client, ensemble, source, block_rows=5, batch_size=32)  # type: ignore[arg-type]
    assert local.info["models"] == remote.info["models"] == 3
    np.testing.assert_array_equal(remote.mean, local.mean)


# --------------------------------------------------------------------------------------------
# the command line


def test_cli_predict_on_a_cluster_equals_local(
    client: object, elements: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.pt"
    _bundle("dcn", "reflect", seed=5).save(model)
    common = [str(model), str(elements), "--device", "cpu", "--block-rows", "6"]
    code, out = run_cli("predict", *common, "--out", str(tmp_path / "local.tif"))
    assert code == 0, out
    # The running test cluster, reached by its tcp:// address as a real cluster would be.
    address = client.scheduler.address  # type: ignore[attr-defined]
    code, out = run_cli(
        "predict", *common, "--out", str(tmp_path / "remote.tif"), "--scheduler", address
    )
    assert code == 0, out
    with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "remote.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ("somewhere:8786", "expected tcp://HOST:PORT"),
        ("local:0", "local:N needs a number of workers N >= 1"),
        (None, "cannot reach the Dask scheduler"),
        ("local:2", 'pip install "gkdcn[cluster]"'),
    ],
)
def test_cli_scheduler_errors_are_one_line_before_any_work(
    elements: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scheduler: str | None,
    message: str,
) -> None:
    import socket

    if scheduler is None:
        with socket.socket() as probe:  # a free loopback port nobody listens on
            probe.bind(("127.0.0.1", 0))
            scheduler = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    if message.startswith("pip"):
        monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were absent
    model = tmp_path / "model.pt"
    _bundle("cnn", "zero", seed=1).save(model)
    out = tmp_path / "map.tif"
    code, output = run_cli(
        "predict", str(model), str(elements), "--out", str(out), "--scheduler", scheduler
    )
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# a comparison on the cluster


def _tiny_comparison(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    from gkdcn.compare import make_plan
    from gkdcn.data.study import load_study
    from helpers import tiny_comparison_config

    root = tmp_path_factory.mktemp("compare") / "study"
    study = load_study(tiny_comparison_config(root, epochs=1, seeds=1))
    return study, make_plan(study.config)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, Path]:
    """The same tiny comparison run by the local runner (undisturbed): the reference."""
    from gkdcn.compare import run_comparison

    study, plan = _tiny_comparison(tmp_path_factory)
    out = tmp_path_factory.mktemp("local") / "run"
    run_comparison(study, out, plan, workers=1)  # type: ignore[arg-type]
    # The data files go away: cluster runs of the loaded study send it as data, not as paths.
    base = Path(study.config.base_dir)  # type: ignore[attr-defined]
    base.rename(base.with_name("moved-away"))
    return study, plan, out


def _tables(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "tables").glob("*.csv"))}


def _results(run: Path) -> dict[str, dict]:
    import json

    out = {}
    for path in sorted(run.rglob("result.json")):
        result = json.loads(path.read_text())
        result.pop("seconds")
        out[path.relative_to(run).as_posix()] = result
    return out


def test_comparison_on_a_cluster_equals_the_local_run_table_for_table(
    client: object, local_run: tuple[object, object, Path], tmp_path: Path
) -> None:
    from gkdcn.compare import run_comparison

    study, plan, reference = local_run
    out = tmp_path / "run"
    run_comparison(study, out, plan, scheduler=client)  # type: ignore[arg-type]
    tables = _tables(out)
    assert {"authors_runs.csv", "lodo_summary.csv", "lodo_paired.csv"} <= set(tables)
    assert tables == _tables(reference)  # bit for bit
    assert _results(out) == _results(reference)
    with (
        rasterio.open(out / "authors/gk-dcn/seed0/probability.tif") as a,
        rasterio.open(reference / "authors/gk-dcn/seed0/probability.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())
    assert (out / "authors/gk-dcn/seed0/model.pt").stat().st_size > 1000


def test_a_worker_killed_mid_comparison_loses_no_result(
    client: object, local_run: tuple[object, object, Path], tmp_path: Path
) -> None:
    import threading

    from gkdcn.compare import run_comparison

    study, plan, reference = local_run
    out = tmp_path / "run"
    killed: list[str] = []

    def kill_one_busy_worker() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(out.rglob("result.json")):
            time.sleep(0.05)  # the first job has been written: the run is under way
        while time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]  # type: ignore[attr-defined]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]  # type: ignore[attr-defined]
                os.kill(pid, signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_busy_worker)
    killer.start()
    try:
        run_comparison(study, out, plan, scheduler=client)  # type: ignore[arg-type]
    finally:
        killer.join()
    assert killed, "no worker was busy to be killed"
    assert _tables(out) == _tables(reference)
    assert _results(out) == _results(reference)


def test_workers_with_another_torch_are_refused(
    client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    from gkdcn.cluster import check_workers

    me, real = os.getpid(), importlib.metadata.version

    def version(name: str) -> str:  # another torch here than on the workers
        return "0.0-test" if name == "torch" and os.getpid() == me else real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(GkdcnError, match=r"runs torch .*, this machine 0\.0-test") as info:
        check_workers(client)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_cli_compare_with_an_unreachable_scheduler_writes_nothing(tmp_path: Path) -> None:
    import socket

    district = tmp_path / "district"
    code, output = run_cli(
        "synth", str(district), "--height", "40", "--width", "48", "--layers", "6"
    )
    assert code == 0, output
    with socket.socket() as probe:  # a free loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    out = tmp_path / "run"
    config = str(district / "study.toml")
    code, output = run_cli("compare", config, "--out", str(out), "--quick", "--scheduler", address)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler" in lines[0], lines
    assert not out.exists()
    # --jobs means nothing on a cluster: said once, before the same one error line.
    code, output = run_cli("compare", config, "--out", str(out), "--quick", "--scheduler", address,
                           "--jobs", "2")  # fmt: skip
    assert code == 2
    lines = output.strip().splitlines()
    assert lines[0].startswith("note: --jobs 2 is not used with --scheduler"), lines
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
    assert not out.exists()
