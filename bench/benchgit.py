"""Another commit's code beside this checkout's, for benchmarks that compare the two in one run."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:
    """Run git in this repository and return its output, stripped.

    A failure (an unknown commit, say) ends the benchmark with git's own one-line reason.
    """
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise SystemExit(f"error: git {' '.join(args)}: {reason}")
    return proc.stdout.strip()


def short_commit(commit: str) -> str:
    """``commit``'s short hash; an unknown one ends the benchmark before anything is timed."""
    return git("rev-parse", "--short", "--verify", f"{commit}^{{commit}}")


@contextlib.contextmanager
def checkout(commit: str, folder: Path) -> Iterator[Path]:
    """Check ``commit`` out into a temporary git worktree at ``folder``.

    Its ``src`` goes on a subprocess's ``PYTHONPATH``; the worktree is removed on the way out.
    """
    git("worktree", "add", "--detach", str(folder), commit)
    try:
        yield folder
    finally:
        git("worktree", "remove", "--force", str(folder))
