"""Run independent jobs, each on one CPU thread, several at once: one runner, two engines.

The local engine is a pool of spawned worker processes on this machine; the cluster engine
(:mod:`gkdcn.cluster`, with a Dask client) sends each job to any Dask cluster. Either way a job
*returns* its result and this process hands it to ``on_done`` as it arrives, so whoever writes
the results (e.g. a comparison's run folder) does it here, never on the workers.

A comparison is hundreds of small trainings. Side by side they use the cores better than one
after another with PyTorch's threads waiting on each other: on 2 cores, two single-threaded
leave-one-out folds at once finished 1.4x more folds per minute than one fold on two threads.
Every job runs on one thread whatever the number of workers, so results are identical for any
``workers``: thread count changes floating-point summation order, worker count does not.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import threadpoolctl
from rich.progress import Progress

from gkdcn.errors import GkdcnError, Terminated
from gkdcn.runtime import reuse_freed_memory, set_threads, torch_threads

if TYPE_CHECKING:
    from distributed import Client

J = TypeVar("J")
C = TypeVar("C")
R = TypeVar("R")

#: Default cap on worker processes: each holds its own PyTorch (~0.5-0.8 GB resident).
MAX_DEFAULT_WORKERS = 4

# The context a worker process received at start (set once per worker by ``_init_worker``).
_worker_state: dict[str, Any] = {}


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """The worker count the command line uses without ``--jobs``.

    The available cores, at most :data:`MAX_DEFAULT_WORKERS`.
    """
    return min(available_cores(), MAX_DEFAULT_WORKERS)


def check_workers(workers: int) -> None:
    """Refuse a worker count below 1 (before any work starts)."""
    if workers < 1:
        raise GkdcnError(f"--jobs must be at least 1, got {workers}")


def resolve_workers(workers: int, n_jobs: int, device: str = "cpu") -> int:
    """Worker processes to use.

    ``workers``, never more than there are jobs; 1 on a GPU, which the jobs would otherwise share.
    """
    check_workers(workers)
    if device != "cpu":
        return 1
    return max(1, min(workers, n_jobs))


def single_thread() -> contextlib.AbstractContextManager[None]:
    """PyTorch on one CPU thread inside the block (the previous count restored after)."""
    return torch_threads(1)


def run_jobs(
    jobs: Sequence[J],
    run: Callable[[J, C, Progress | None], R],
    context: C,
    *,
    workers: int = 1,
    client: Client | None = None,
    progress: Progress | None = None,
    on_done: Callable[[J, R], None] | None = None,
) -> None:
    """Call ``run(job, context, progress)`` for every job, each on one thread.

    ``on_done(job, result)`` is called in this process as each one ends (in any order).

    Engines: with a Dask ``client`` (see :func:`gkdcn.cluster.open_client`) every job is a task
    on that cluster (``context`` is sent once to every worker; a worker that dies has its jobs
    run again elsewhere); else with ``workers`` > 1 the jobs are shared by that many spawned
    processes here; else they run one after another in this process. ``run``, ``context`` and
    the results must pickle for the first two (inner progress bars are not shown from workers).
    A failing job stops the rest and its error is raised here; so does Ctrl-C. As with any
    spawned process, a script calling this with ``workers`` > 1 or a local cluster needs an
    ``if __name__ == "__main__":`` guard (the workers import the script).
    """

    def done(job: J, result: R) -> None:
        if on_done is not None:
            on_done(job, result)

    if client is not None:
        from gkdcn.cluster import run_jobs_on_cluster

        run_jobs_on_cluster(client, jobs, run, context, on_result=done, name=_name)
        return
    if workers <= 1 or len(jobs) <= 1 or not _can_spawn():
        with single_thread():
            for job in jobs:
                done(job, run(job, context, progress))
        return
    pool = ProcessPoolExecutor(
        workers,
        # fork is unsafe once PyTorch's OpenMP threads exist
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(run, context, os.getpid()),
    )
    futures = {pool.submit(_run_in_worker, job): job for job in jobs}
    try:
        with _terminate_as_exit():
            for future in as_completed(futures):
                done(futures[future], future.result())
    except BrokenProcessPool:
        _stop(pool)
        raise GkdcnError(
            "worker processes stopped unexpectedly (out of memory, or a Python script that runs "
            'gkdcn without an `if __name__ == "__main__":` guard); finished trainings are '
            "kept: run again, with --jobs 1 (workers=1) if it recurs"
        ) from None
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Make SIGTERM stop the pool's workers as Ctrl-C does, inside the block.

    SIGTERM (``kill``, a batch scheduler's time limit) raises :class:`Terminated` (a SystemExit)
    inside the block, so the pool's workers are stopped as on Ctrl-C. Python's default is to die at
    once, and the workers, each holding both ends of the pool's result pipe, would wait on it for
    ever.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _name(job: Any) -> str:
    """A job's name in the Dask dashboard: its ``label`` if it has one."""
    return str(getattr(job, "label", None) or job)


def _can_spawn() -> bool:
    """False when spawned workers could not re-import ``__main__`` (e.g. a script on stdin)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or Path(path).is_file()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the running workers now."""
    pool.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    # Before 3.14 the pool has no public way to end its workers; they are this process's
    # children, and run_jobs runs one pool at a time, so end those.
    processes = multiprocessing.active_children()
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def _init_worker(run: Callable[..., Any], context: Any, parent: int) -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it (and stops us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    set_threads(1)
    reuse_freed_memory()
    # numpy's BLAS (OpenBLAS: one spinning thread per core) too, as Dask's nanny does for its
    # workers: with 2 workers on 2 cores their BLAS threads otherwise fight over the cores and
    # two workers can be slower than one. Summation order of a
    # BLAS call does not depend on its thread count here (tables identical, tested).
    _worker_state["blas"] = threadpoolctl.threadpool_limits(1)
    _worker_state["run"] = run
    _worker_state["context"] = context


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """End this worker when the process that started it is gone.

    The parent may be killed with SIGKILL, say, which no handler sees: an orphaned worker would
    finish its training, then block for ever on the result pipe, holding its memory.
    """
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _run_in_worker(job: Any) -> Any:
    return _worker_state["run"](job, _worker_state["context"], None)
