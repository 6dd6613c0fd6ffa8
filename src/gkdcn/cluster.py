"""Run gkdcn's independent jobs, and large maps block by block, on a Dask cluster.

Optional: ``pip install "gkdcn[cluster]"`` (``dask[distributed]``). A cluster is named by a
``--scheduler`` string: ``tcp://HOST:PORT`` (a running ``dask scheduler``, workers started with
``dask worker tcp://HOST:PORT`` on each host, or by dask-jobqueue) or ``local:N`` (a
:class:`distributed.LocalCluster` of ``N`` single-threaded worker processes on this machine,
listening on the loopback address only).

Nothing travels as a path: the shared inputs (a comparison's prepared study, a map's models) are
scattered once to every worker as data, each job or block is one task carrying its own seed,
and its result (model bytes, scores, metrics, map rows) comes back to the client, which writes
it. Workers need no shared filesystem, and a worker that dies mid-task loses nothing: the
scheduler runs its tasks again elsewhere. Every task runs PyTorch on one thread, as the local
runner does, so results are bit-identical to a local run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from rasterio.windows import Window
from rich.progress import Progress

from gkdcn.errors import GkdcnError
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import ElementSource
from gkdcn.models.bundle import ModelBundle
from gkdcn.predict import (
    BlockPlan,
    BlockPrediction,
    PredictionResult,
    block_plan,
    members_of,
    prepare_prediction,
    row_blocks,
)
from gkdcn.runtime import reuse_freed_memory, torch_threads

if TYPE_CHECKING:  # the extra may be absent; every runtime import goes through _distributed()
    from distributed import Client

J = TypeVar("J")
C = TypeVar("C")
R = TypeVar("R")

INSTALL_HINT = 'pip install "gkdcn[cluster]"'
#: Seconds to wait for a scheduler before saying it cannot be reached (before any work starts).
CONNECT_TIMEOUT = 5.0
#: Times a task that raised is run again (a worker that died is handled by the scheduler itself).
TASK_RETRIES = 2
_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler``: a scheduler ``address``, or a local cluster of ``local`` workers."""

    address: str | None = None
    local: int | None = None

    @property
    def label(self) -> str:
        """The scheduler as the user wrote it: its address, or ``local:N``."""
        return self.address or f"local:{self.local}"


def parse_scheduler(spec: str) -> Scheduler:
    """``tcp://HOST:PORT`` (also tls://, ws://, ...) or ``local:N``; anything else is an error."""
    text = spec.strip()
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise GkdcnError(f"--scheduler {spec!r}: local:N needs a number of workers N >= 1")
        return Scheduler(local=int(count))
    protocol, sep, rest = text.partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or protocol not in _PROTOCOLS or not colon or not host or not port.isdigit():
        raise GkdcnError(
            f"--scheduler {spec!r}: expected tcp://HOST:PORT (a running `dask scheduler`) "
            "or local:N (N worker processes on this machine)"
        )
    return Scheduler(address=text)


def _distributed() -> Any:
    """The ``distributed`` package, or a one-line error saying what to install."""
    try:
        import distributed
    except ImportError:
        raise GkdcnError(
            f"--scheduler needs Dask's distributed scheduler, which is not installed: {INSTALL_HINT}"
        ) from None
    return distributed


@contextlib.contextmanager
def open_client(
    scheduler: str | Scheduler, *, timeout: float = CONNECT_TIMEOUT
) -> Iterator[Client]:
    """A connected :class:`distributed.Client` for ``scheduler``.

    The client is closed, and a local cluster shut down, on leaving the block.

    A scheduler that does not answer within ``timeout`` seconds is a one-line error before
    any work (the engines then check the workers: :func:`check_workers`).
    """
    dd = _distributed()
    spec = parse_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
    with contextlib.ExitStack() as stack:
        if spec.local is not None:
            cluster = stack.enter_context(
                dd.LocalCluster(
                    n_workers=spec.local,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            address = cluster.scheduler_address
        else:
            address = spec.address
        try:
            client = stack.enter_context(dd.Client(address, timeout=timeout, set_as_default=False))
        except (OSError, TimeoutError) as exc:
            raise GkdcnError(
                f"{spec.label}: cannot reach the Dask scheduler within {timeout:g} s "
                f"({type(exc).__name__}); is `dask scheduler` running there and the port open?"
            ) from None
        yield client


def check_workers(client: Client) -> None:
    """Refuse workers that lack gkdcn or run another gkdcn / PyTorch version than the client.

    Their results would not be the client's (a one-line error naming one such worker). Only the
    workers connected now are checked (the engines call this before sending work).
    """
    for package in ("gkdcn", "torch"):
        here = importlib.metadata.version(package)
        # importlib.metadata.version pickles by reference to the standard library, so it runs
        # even on a worker where gkdcn is missing (and then says so).
        there = client.run(importlib.metadata.version, package, on_error="return")
        for worker, version in sorted(there.items()):
            if isinstance(version, BaseException):
                raise GkdcnError(
                    f"Dask worker {worker} has no {package} installed (workers need "
                    f"{package}=={here}, as here)"
                )
            if version != here:
                raise GkdcnError(
                    f"Dask worker {worker} runs {package} {version}, this machine {here}: "
                    "install the same version on every worker"
                )


def n_workers(client: Client) -> int:
    """Workers connected to the scheduler now."""
    return len(client.nthreads())


def _one_thread(function: Callable[..., R], *args: Any) -> R:
    """Call ``function(*args)`` with PyTorch on one CPU thread.

    That is the local runner's rule, so the floating-point summation order, and hence every result,
    is the same as there.
    """
    reuse_freed_memory()  # Dask's nanny pins glibc's thresholds low
    with torch_threads(1):
        return function(*args)


def run_jobs_on_cluster(
    client: Client,
    jobs: Sequence[J],
    run: Callable[[J, C, None], R],
    context: C,
    *,
    on_result: Callable[[J, R], None],
    name: Callable[[J], str] = str,
    retries: int = TASK_RETRIES,
) -> None:
    """Run ``run(job, context, None)`` for every job on the cluster.

    The third argument is the local runner's progress display, which a remote job cannot show;
    ``on_result(job, result)`` is called here.

    ``context`` is sent once to every worker (``scatter(broadcast=True)``), each job is one task
    (``run`` and the jobs must pickle; ``run`` by reference, so workers need gkdcn installed);
    results arrive in any order and ``on_result`` is called in this process as each one comes
    in, so finished work is kept even if the run stops later. A job that raises is retried
    ``retries`` times, then its error is raised here and the other tasks are cancelled; a task
    whose workers died repeatedly is one :class:`~gkdcn.errors.GkdcnError`.
    """
    if not jobs:
        return
    dd = _distributed()
    check_workers(client)
    shared = client.scatter(context, broadcast=True, hash=False)
    futures = {}
    for i, job in enumerate(jobs):
        key = f"gkdcn-job-{i}-{name(job)}-{time.time_ns()}".replace(" ", "_")
        future = client.submit(
            _one_thread, run, job, shared, None, key=key, pure=False, retries=retries
        )
        futures[future.key] = (future, job)
    try:
        for future in dd.as_completed([f for f, _ in futures.values()], loop=client.loop):
            _, job = futures.pop(future.key)
            on_result(job, _result(dd, future, name(job)))
    finally:
        client.cancel([f for f, _ in futures.values()] + [shared], force=True)


def _result(dd: Any, future: Any, name: str) -> Any:
    try:
        return future.result()
    except dd.KilledWorker:
        raise GkdcnError(
            f"{name}: the Dask workers running it died repeatedly (out of memory?); finished "
            "results are kept: run again"
        ) from None


# --------------------------------------------------------------------------------------------
# large maps


def predict_map_on_cluster(
    client: Client,
    bundle_or_bundles: ModelBundle | Sequence[ModelBundle],
    source: ElementSource,
    *,
    batch_size: int = 1024,
    block_rows: int = 64,
    device: str = "cpu",
    mc_dropout: int = 0,
    seed: int = 0,
    threads: int | None = None,
    progress: Progress | None = None,
    in_flight: int | None = None,
) -> PredictionResult:
    """:func:`gkdcn.predict.predict_map` with its row blocks as tasks on the cluster.

    This process reads each block's rows (with the window's halo) and sends them as data, at
    most ``in_flight`` blocks at a time (default: twice the workers, plus two) so memory stays
    bounded on both sides; the workers run :meth:`gkdcn.predict.BlockPlan.predict_block` on
    one thread, and the rows are put in place here as they come back. The map is identical to
    ``predict_map(..., threads=1)`` with the same settings. ``threads`` is accepted for the
    signature's sake and ignored (each task uses one thread).
    """
    del threads
    dd = _distributed()
    bundles = (
        [bundle_or_bundles]
        if isinstance(bundle_or_bundles, ModelBundle)
        else list(bundle_or_bundles)
    )
    plan = prepare_prediction(
        bundles, source, batch_size=batch_size, block_rows=block_rows, mc_dropout=mc_dropout,
        device="cpu",
    )  # fmt: skip
    check_workers(client)
    grid = source.grid
    height, width = grid.shape
    mean = np.full((height, width), np.nan, dtype=np.float32)
    std = np.full((height, width), np.nan, dtype=np.float32) if plan.n_samples > 1 else None
    valid = np.zeros((height, width), dtype=bool)
    blocks = row_blocks(height, block_rows)
    limit = in_flight or 2 * max(1, n_workers(client)) + 2
    task = progress.add_task("predicting", total=height, info="") if progress is not None else None
    started = time.perf_counter()
    shared = client.scatter(
        (bundles, list(source.names), grid, mc_dropout, device), broadcast=True, hash=False
    )
    pending: dict[Any, Any] = {}
    running = dd.as_completed(loop=client.loop)
    n_windows = 0
    try:
        queue = iter(blocks)
        for r0, r1 in queue:
            running.add(
                _submit_block(client, shared, source, plan, r0, r1, batch_size, seed, pending)
            )
            if len(pending) >= limit:
                break
        for future in running:
            pending.pop(future.key)
            block: BlockPrediction = _result(dd, future, f"rows {future.key}")
            valid[block.r0 : block.r1] = block.valid
            mean[block.r0 : block.r1] = block.mean
            if std is not None and block.std is not None:
                std[block.r0 : block.r1] = block.std
            n_windows += block.windows
            if progress is not None and task is not None:
                progress.update(task, advance=block.r1 - block.r0, info=f"{n_windows} cells")
            for r0, r1 in queue:
                running.add(
                    _submit_block(client, shared, source, plan, r0, r1, batch_size, seed, pending)
                )
                break
    finally:
        client.cancel([*pending.values(), shared], force=True)
    seconds = time.perf_counter() - started
    info = {
        "models": len(members_of(bundles)),  # as the local path counts: every member
        "kind": bundles[0].kind,
        "mc_dropout": mc_dropout,
        "samples_per_cell": plan.n_samples,
        "window": plan.window,
        "padding": plan.padding,
        "device": device,
        "threads": 1,
        "batch_size": batch_size,
        "block_rows": block_rows,
        "windows": n_windows,
        "seconds": seconds,
        "windows_per_second": n_windows / seconds if seconds > 0 else float("nan"),
        "scheduler": client.scheduler.address,
        "workers": n_workers(client),
    }
    return PredictionResult(
        mean=mean, std=std, valid=valid, grid=grid, names=list(bundles[0].channels), info=info
    )


def _submit_block(
    client: Client,
    shared: Any,
    source: ElementSource,
    plan: BlockPlan,
    r0: int,
    r1: int,
    batch_size: int,
    seed: int,
    pending: dict[Any, Any],
) -> Any:
    lo, hi = plan.read_rows(r0, r1)
    raw = source.read(Window(0, lo, plan.width, hi - lo))
    future = client.submit(
        _one_thread, _predict_block, shared, raw, r0, r1, batch_size, seed,
        key=f"gkdcn-rows-{r0}-{r1}-{time.time_ns()}", pure=False, retries=TASK_RETRIES,
    )  # fmt: skip
    pending[future.key] = future
    return future


def _predict_block(
    shared: tuple[list[ModelBundle], list[str], Grid, int, str],
    raw: np.ndarray,
    r0: int,
    r1: int,
    batch_size: int,
    seed: int,
) -> BlockPrediction:
    """One block on a worker (the networks are rebuilt per block: milliseconds, no state)."""
    bundles, names, grid, mc_dropout, device = shared
    plan = block_plan(bundles, names, grid, mc_dropout=mc_dropout, device=device)
    return plan.predict_block(raw, r0, r1, batch_size, seed)
