"""Atomic output: write to a temporary sibling, then rename, so no half-written file ever appears.

One rule decides what ``--overwrite`` may replace (:func:`check_writable`):

- never an input of the same command, a folder holding one, or anything inside an input folder;
- never the current folder (or one holding it);
- a folder output only if it is empty or carries :data:`MARKER` (written into every folder gkdcn
  creates as an output, naming the command), so a folder of the user's files is never deleted;
- a file output only if it is a file (not a folder).

Outputs get the permissions ``open()`` would give under the current umask: the temporary files
of :mod:`tempfile` are private (0600 / 0700), so they are widened before the rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from gkdcn.errors import GkdcnError, InputError, OutputExistsError

MARKER = ".gkdcn-output"
"""File written into every folder gkdcn creates as an output; its text names the command."""


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # portable fallback: set and restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode ``mkdir()`` gives a new folder under the current umask."""
    return 0o777 & ~_umask()


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and path.is_relative_to(folder)


def check_not_input(target: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse ``target`` if it is, holds, or lies inside one of the command's ``inputs``."""
    target = Path(target)
    resolved = target.resolve()
    sources = [(item, Path(item).resolve()) for item in inputs]
    for _, source in sources:  # the most direct reason first
        if resolved == source:
            raise GkdcnError(f"{target}: is an input of this command; choose another output")
    for item, source in sources:
        if _inside(source, resolved):
            raise GkdcnError(
                f"{target}: holds {item}, an input of this command; choose another output"
            )
    for item, source in sources:
        if source.is_dir() and _inside(resolved, source):
            raise GkdcnError(
                f"{target}: lies inside {item}, an input folder of this command "
                "(it would be read as input next time); choose another output"
            )


def check_writable(
    target: str | Path,
    overwrite: bool,
    *,
    inputs: Iterable[str | Path] = (),
    folder: bool = False,
    own: bool = False,
) -> None:
    """Fail early (before any work) if ``target`` may not be written.

    ``folder``: the output is a whole folder (replaced only if empty or marked with
    :data:`MARKER`); otherwise a file. ``inputs``: the paths the command reads, which its outputs
    must never replace or lie inside. ``own``: the caller recognised the folder as its own output
    by an older sign (a comparison's ``run.json``, written before markers existed). Also refuses
    a target whose folder is unwritable.
    """
    target = Path(target)
    check_not_input(target, inputs)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(target)
        _check_replaceable(target, folder, own)
    parent = target.parent if str(target.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise GkdcnError(f"{probe}: is a file, not a folder; cannot write {target}")
    if not os.access(probe, os.W_OK):
        raise GkdcnError(f"{parent}: folder is not writable")


def _check_replaceable(target: Path, folder: bool, own: bool = False) -> None:
    """What ``--overwrite`` may replace: see the module docstring."""
    resolved = target.resolve()
    if resolved == Path.cwd().resolve() or _inside(Path.cwd().resolve(), resolved):
        raise GkdcnError(
            f"{target}: is the current folder (or holds it); --overwrite never replaces it"
        )
    if not folder:
        if target.is_dir():
            raise GkdcnError(f"{target}: is a folder, not a file; choose another output")
        return
    if not target.is_dir():
        raise GkdcnError(f"{target}: is a file, not a folder; choose another output")
    if own or (target / MARKER).is_file() or not any(target.iterdir()):
        return
    raise GkdcnError(
        f"{target}: folder holds files gkdcn did not write (no {MARKER} marker); "
        "--overwrite replaces only a folder gkdcn wrote; choose another output"
    )


def mark_output(folder: str | Path, command: str) -> None:
    """Mark ``folder`` as an output of ``command`` (so a later ``--overwrite`` may replace it)."""
    Path(folder, MARKER).write_text(f"written by gkdcn {command}\n", encoding="utf-8")


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p`` that returns the folders it created (deepest last), to undo on failure."""
    created: list[Path] = []
    probe = folder
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created[::-1]


def _remove_empty(folders: list[Path]) -> None:
    for path in reversed(folders):
        with contextlib.suppress(OSError):
            path.rmdir()


def _renamed_error(exc: OSError, tmp: Path, target: Path) -> OSError | GkdcnError:
    """An error about the temporary ``tmp`` reworded to name ``target`` (users never see temps)."""
    for name in (exc.filename, exc.filename2):
        if not isinstance(name, str | bytes | os.PathLike):
            continue
        path = Path(os.fsdecode(name))
        if path == tmp or path.is_relative_to(tmp):
            where = target / path.relative_to(tmp) if path != tmp else target
            return InputError(where, f"cannot write: {exc.strerror or exc}")
    text = str(exc)
    if str(tmp) in text or tmp.name in text:  # e.g. GDAL's messages name the file it wrote
        plain = text.replace(str(tmp), str(target)).replace(tmp.name, target.name)
        plain = plain.splitlines()[0].removeprefix(f"{target}: ")
        return InputError(target, f"cannot write: {plain}")
    return exc


@contextlib.contextmanager
def atomic_path(
    target: str | Path, overwrite: bool = False, *, inputs: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it into place only if the block succeeds.

    The temporary file keeps ``target``'s suffix so that format drivers (GDAL, matplotlib)
    recognise it. On any exception the temporary file (and any folder created for it) is removed
    and ``target`` is untouched. The file gets the mode ``open()`` would give.
    """
    target = Path(target)
    check_writable(target, overwrite, inputs=inputs)
    created = _make_parents(target.parent)
    done = False
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            if target.exists() and not overwrite:  # appeared while we worked
                raise OutputExistsError(target)
            if target.is_dir():
                raise GkdcnError(f"{target}: is a folder, not a file; choose another output")
            os.chmod(tmp, file_mode())
            os.replace(tmp, target)
        except OSError as exc:
            raise _renamed_error(exc, tmp, target) from None
        done = True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if not done:
            _remove_empty(created)


@contextlib.contextmanager
def atomic_dir(
    target: str | Path,
    overwrite: bool = False,
    *,
    inputs: Iterable[str | Path] = (),
    command: str = "output",
) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: build it aside, then swap it in whole.

    The folder is marked with :data:`MARKER` (naming ``command``) so that a later
    ``--overwrite`` may replace it; an existing folder is replaced only under the rule of
    :func:`check_writable`.
    """
    target = Path(target)
    check_writable(target, overwrite, inputs=inputs, folder=True)
    created = _make_parents(target.parent)
    done = False
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            yield tmp
            mark_output(tmp, command)
            os.chmod(tmp, folder_mode())
            if target.exists():
                if not overwrite:
                    raise OutputExistsError(target)
                _check_replaceable(target, folder=True)  # may have changed while we worked
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            raise _renamed_error(exc, tmp, target) from None
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_empty(created)


def write_text(
    path: str | Path,
    text: str,
    overwrite: bool = False,
    *,
    inputs: Iterable[str | Path] = (),
) -> None:
    """Write a text file atomically."""
    with atomic_path(path, overwrite, inputs=inputs) as tmp:
        tmp.write_text(text, encoding="utf-8")
