"""Atomic output: write to a temporary sibling, then rename, so no half-written file ever appears."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gkdcn.errors import GkdcnError, OutputExistsError


def check_writable(target: str | Path, overwrite: bool) -> None:
    """Fail early (before any work) if ``target`` exists without ``overwrite`` or its folder is unwritable."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputExistsError(target)
    parent = target.parent if str(target.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise GkdcnError(f"{probe}: is a file, not a folder; cannot write {target}")
    if not os.access(probe, os.W_OK):
        raise GkdcnError(f"{parent}: folder is not writable")


@contextlib.contextmanager
def atomic_path(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it into place only if the block succeeds.

    The temporary file keeps ``target``'s suffix so that format drivers (GDAL, matplotlib)
    recognise it. On any exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    check_writable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if target.exists() and not overwrite:  # appeared while we worked
            raise OutputExistsError(target)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: build it aside, then swap it in whole."""
    target = Path(target)
    check_writable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise OutputExistsError(target)
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str, overwrite: bool = False) -> None:
    """Write a text file atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
