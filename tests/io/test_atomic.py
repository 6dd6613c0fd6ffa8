"""What ``--overwrite`` may replace (one rule, in ``gkdcn.io.atomic``), and output permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gkdcn.errors import GkdcnError, OutputExistsError
from gkdcn.io.atomic import (
    MARKER,
    atomic_dir,
    atomic_path,
    check_writable,
    file_mode,
    folder_mode,
    write_text,
)


def test_outputs_never_replace_or_hold_or_lie_inside_an_input(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (inputs / "layers").mkdir(parents=True)
    (inputs / "layers" / "Au.tif").write_bytes(b"x")
    for target, words in (
        (inputs / "layers" / "Au.tif", "is an input"),
        (inputs, "holds"),
        (inputs / "layers" / "map.tif", "lies inside"),
    ):
        with pytest.raises(GkdcnError, match=words):
            check_writable(target, True, inputs=[inputs / "layers", inputs / "layers" / "Au.tif"])
    check_writable(tmp_path / "out.tif", True, inputs=[inputs / "layers"])  # elsewhere: fine


def test_a_folder_is_replaced_only_if_empty_or_marked(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError):
        check_writable(target, False, folder=True)
    with (
        pytest.raises(GkdcnError, match="did not write"),
        atomic_dir(target, True, command="test") as tmp,
    ):
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no build folder left
    (target / "mine.txt").unlink()
    with atomic_dir(target, True, command="test") as tmp:
        (tmp / "new.txt").write_text("new")
    marker = (target / MARKER).read_text().splitlines()
    assert marker[0].startswith("written by gkdcn test") and marker[1:] == ["new.txt"]
    with atomic_dir(target, True, command="test") as tmp:  # marked: replaced again
        (tmp / "newer.txt").write_text("newer")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "newer.txt"]


def test_the_current_folder_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / MARKER).write_text("written by gkdcn prepare\n")
    monkeypatch.chdir(tmp_path / "sub")
    for target in (Path("."), Path("..")):
        with pytest.raises(GkdcnError, match="current folder"):
            check_writable(target, True, folder=True)


def test_a_file_output_that_is_a_folder_is_refused_by_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "ch").mkdir()
    with pytest.raises(GkdcnError, match="is a folder") as info:
        write_text(tmp_path / "ch", "x", overwrite=True)
    assert ".tmp" not in str(info.value)


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_modes_follow_the_umask(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        assert file_mode() == 0o666 & ~umask and folder_mode() == 0o777 & ~umask
        target = tmp_path / "f.txt"
        target.write_text("old")
        os.chmod(target, 0o644)
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("new")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_failed_write_removes_the_folders_it_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.txt"
    with pytest.raises(RuntimeError), atomic_path(target):
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_an_error_naming_the_temporary_file_names_the_output(tmp_path: Path) -> None:
    target = tmp_path / "map.tif"
    with pytest.raises(GkdcnError) as info, atomic_path(target) as tmp:
        raise OSError(f"{tmp}: No space left on device")  # how GDAL words a full disk
    assert str(info.value) == f"{target}: cannot write: No space left on device"
    assert list(tmp_path.iterdir()) == []
