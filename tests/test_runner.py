"""The local engine's worker processes never outlive the command that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
from pathlib import Path
from gkdcn.runner import run_jobs

def slow(job, folder, progress):
    (Path(folder) / f"{os.getpid()}.pid").write_text("")
    time.sleep(120)

if __name__ == "__main__":
    run_jobs([0, 1], slow, sys.argv[1], workers=2)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left to collect


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_workers_end_with_the_command(how: signal.Signals, tmp_path: Path) -> None:
    # SIGTERM: the command stops its workers (as on Ctrl-C) and exits 128 + 15. SIGKILL: no
    # handler runs, so each worker notices its parent is gone. Before, both left the workers
    # blocked for ever on the pool's result pipe, each holding a PyTorch's memory.
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    folder = tmp_path / "pids"
    folder.mkdir()
    command = subprocess.Popen([sys.executable, str(script), str(folder)], cwd=tmp_path)
    try:
        assert _wait_for(lambda: len(list(folder.iterdir())) == 2, 120), "workers never started"
        workers = [int(p.stem) for p in folder.iterdir()]
        assert all(_alive(pid) for pid in workers)
        command.send_signal(how)
        status = command.wait(timeout=60)
        assert status == (128 + signal.SIGTERM if how == signal.SIGTERM else -signal.SIGKILL)
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 20)
    finally:
        command.kill()
        for path in folder.iterdir():
            if _alive(int(path.stem)):
                os.kill(int(path.stem), signal.SIGKILL)
