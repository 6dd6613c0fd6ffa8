"""Atomic output: write to a temporary sibling, then rename, so no half-written file ever appears.

One rule decides what ``--overwrite`` may replace (:func:`check_writable`):

- never an input of the same command, a folder holding one, or anything inside an input folder;
- never the current folder (or one holding it);
- a folder output only if it is empty, or carries :data:`MARKER` and holds nothing but what gkdcn
  wrote there. The marker (written into every folder gkdcn creates as an output) names the command
  and lists every file gkdcn wrote in the folder; each atomic write inside a marked folder adds
  itself to the list (:func:`record_output`). A file the list does not name, a link, or a folder
  of them is the user's, and its presence makes ``--overwrite`` refuse the folder, naming it;
  empty folders hold nothing and may go;
- a file output only if it is a file (not a folder).

Replaced folders are swapped aside under a unique temporary name (never a fixed ``.NAME.old``,
which could be the user's). A target that is a link to a folder is written where it points; the
link itself is kept.

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
"""File written into every folder gkdcn creates as an output: its first line names the command,
each further line is a path (relative, POSIX) that gkdcn wrote in the folder."""

_MARKER_HEADER = "written by gkdcn "
_MARKER_LISTS = "; the files it wrote follow"
"""Ends the first line of a marker that lists its files (older markers named the command only)."""
_LISTED_AT_MOST = 3
"""How many of the user's files a refusal names before it counts the rest."""


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
) -> None:
    """Fail early (before any work) if ``target`` may not be written.

    ``folder``: the output is a whole folder (replaced only under the rule of the module
    docstring); otherwise a file. ``inputs``: the paths the command reads, which its outputs
    must never replace or lie inside. Also refuses a target whose folder is unwritable.
    """
    target = Path(target)
    check_not_input(target, inputs)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(target)
        _check_replaceable(target, folder)
    parent = target.parent if str(target.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise GkdcnError(f"{probe}: is a file, not a folder; cannot write {target}")
    if not os.access(probe, os.W_OK):
        raise GkdcnError(f"{parent}: folder is not writable")


def _check_replaceable(target: Path, folder: bool) -> None:
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
    if target.is_symlink() and not target.exists():
        raise GkdcnError(f"{target}: is a link to {os.readlink(target)}, which does not exist")
    if not target.is_dir():
        raise GkdcnError(f"{target}: is a file, not a folder; choose another output")
    if not any(target.iterdir()):
        return
    if not (target / MARKER).is_file():
        raise GkdcnError(
            f"{target}: folder holds files gkdcn did not write (no {MARKER} marker); "
            "--overwrite replaces only a folder gkdcn wrote; choose another output"
        )
    foreign = foreign_files(target)
    if foreign and not _marker_lists_files(target):
        raise GkdcnError(
            f"{target}: its {MARKER} marker lists no files (an older gkdcn wrote it), so gkdcn "
            "cannot tell its files from yours; delete the folder yourself, or choose another output"
        )
    if foreign:
        named = ", ".join(foreign[:_LISTED_AT_MOST])
        more = len(foreign) - _LISTED_AT_MOST
        rest = f" and {more} more" if more > 0 else ""
        raise GkdcnError(
            f"{target}: holds files gkdcn did not write ({named}{rest}); --overwrite never "
            "deletes them: move them out of the folder, or choose another output"
        )


def _read_marker(folder: Path) -> set[str] | None:
    """The paths the marker of ``folder`` lists, or None where it has no readable marker."""
    try:
        lines = (folder / MARKER).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or not lines[0].startswith(_MARKER_HEADER):
        return None
    return {line.rstrip("/") for line in lines[1:] if line.strip()}


def _marker_lists_files(folder: Path) -> bool:
    """Whether the marker of ``folder`` is of the kind that lists the files gkdcn wrote."""
    try:
        with (folder / MARKER).open(encoding="utf-8") as fh:
            return fh.readline().rstrip("\n").endswith(_MARKER_LISTS)
    except (OSError, UnicodeDecodeError):
        return False


def _owned_chain(folder: Path, root: Path, manifests: dict[Path, set[str] | None]) -> bool:
    """Whether the marked ``folder`` (inside ``root``) is listed by each marked folder above it."""
    if folder == root:
        return True
    parent = _marked_ancestor(folder.parent, root, manifests)
    if parent is None:
        return False
    listed = manifests[parent] or set()
    return folder.relative_to(parent).as_posix() in listed and _owned_chain(parent, root, manifests)


def _marked_ancestor(
    folder: Path, root: Path, manifests: dict[Path, set[str] | None]
) -> Path | None:
    """The nearest folder from ``folder`` up to ``root`` that has a marker (cached)."""
    probe = folder
    while True:
        if probe not in manifests:
            manifests[probe] = _read_marker(probe)
        if manifests[probe] is not None:
            return probe
        if probe == root:
            return None
        probe = probe.parent


def foreign_files(folder: str | Path) -> list[str]:
    """The files, links and unreadable entries inside ``folder`` that gkdcn did not write.

    An entry is gkdcn's when the nearest marked folder above it lists it, and that folder is
    itself listed by each marked folder up to ``folder``. Links are never followed. Paths come
    back relative to ``folder`` (POSIX), sorted.
    """
    root = Path(folder)
    manifests: dict[Path, set[str] | None] = {}
    foreign: list[str] = []

    def judge(path: Path) -> None:
        marked = _marked_ancestor(path.parent, root, manifests)
        if (
            marked is None
            or path.relative_to(marked).as_posix() not in (manifests[marked] or set())
            or not _owned_chain(marked, root, manifests)
        ):
            foreign.append(path.relative_to(root).as_posix())

    def on_error(exc: OSError) -> None:
        if exc.filename is not None:
            foreign.append(Path(os.fsdecode(exc.filename)).relative_to(root).as_posix())

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        here = Path(dirpath)
        for name in filenames:
            if name != MARKER:
                judge(here / name)
        for name in list(dirnames):
            if (here / name).is_symlink():
                judge(here / name)  # a link to a folder: never followed, never gkdcn's
                dirnames.remove(name)
    return sorted(foreign)


def record_output(path: str | Path) -> None:
    """List ``path`` in the marker of the nearest marked folder above it, if there is one.

    Every atomic write calls this, so a marked folder's marker names each file gkdcn put there
    and ``--overwrite`` can tell them from the user's.
    """
    path = Path(path).absolute()
    probe = path.parent
    while True:
        marker = probe / MARKER
        if marker.is_file():
            with contextlib.suppress(OSError), marker.open("a", encoding="utf-8") as fh:
                fh.write(path.relative_to(probe).as_posix() + "\n")
            return
        if probe.parent == probe:
            return
        probe = probe.parent


def _list_tree(folder: Path) -> list[str]:
    """Every file below ``folder`` (links included, never followed), relative, POSIX, sorted."""
    listed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        links = [name for name in dirnames if (here / name).is_symlink()]
        for name in [*filenames, *links]:
            if not (here == folder and name == MARKER):
                listed.append((here / name).relative_to(folder).as_posix())
    return sorted(listed)


def clear_output_folder(folder: str | Path) -> None:
    """Empty a folder gkdcn wrote, keeping the folder itself (and a link to it).

    Refuses, before deleting anything, under the rule of :func:`check_writable` (the user's
    files inside, no marker, the current folder).
    """
    folder = Path(folder)
    _check_replaceable(folder, folder=True)
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def mark_output(folder: str | Path, command: str, files: Iterable[str] = ()) -> None:
    """Mark ``folder`` as an output of ``command`` whose gkdcn-written files are ``files``.

    Files written into it later add themselves (:func:`record_output`); the folder itself is
    listed in the marker of the nearest marked folder above it.
    """
    _write_marker(Path(folder), command, files)
    record_output(folder)


def _write_marker(folder: Path, command: str, files: Iterable[str] = ()) -> None:
    lines = [f"{_MARKER_HEADER}{command}{_MARKER_LISTS}", *files]
    (folder / MARKER).write_text("\n".join(lines) + "\n", encoding="utf-8")


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
        record_output(target)
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

    The folder is marked with :data:`MARKER` (naming ``command`` and listing every file built)
    so that a later ``--overwrite`` may replace it; an existing folder is replaced only under the
    rule of :func:`check_writable`, and set aside under a unique name until the new one is in.
    A ``target`` that is a link to a folder is written where the link points.
    """
    target = Path(target)
    check_writable(target, overwrite, inputs=inputs, folder=True)
    if target.is_symlink():
        target = target.resolve()
    created = _make_parents(target.parent)
    done = False
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            _write_marker(tmp, command)  # writes inside find this marker, not one further up
            yield tmp
            _write_marker(tmp, command, _list_tree(tmp))
            os.chmod(tmp, folder_mode())
            if target.exists():
                if not overwrite:
                    raise OutputExistsError(target)
                _check_replaceable(target, folder=True)  # may have changed while we worked
                old = Path(
                    tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
                )
                os.replace(target, old)  # onto the empty folder just made: ours, unique
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            raise _renamed_error(exc, tmp, target) from None
        record_output(target)
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
