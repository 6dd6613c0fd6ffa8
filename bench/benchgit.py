"""Another commit's code beside this checkout's, for benchmarks that compare the two in one run."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:
    """Run git in this repository and return its output, stripped (raises on failure)."""
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def checkout(commit: str, folder: Path) -> Iterator[Path]:
    """``commit`` checked out into a temporary git worktree at ``folder`` (its ``src`` goes on a
    subprocess's ``PYTHONPATH``), removed again on the way out."""
    git("worktree", "add", "--detach", str(folder), commit)
    try:
        yield folder
    finally:
        git("worktree", "remove", "--force", str(folder))
