"""Nothing a user had is lost: ``--overwrite`` replaces only what gkdcn wrote.

Each case runs the real CLI the way a user would and checks, file by file, that the user's files
are still there, unchanged. The rule itself (what counts as gkdcn's) is tested on folders built
by hand at the end.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gkdcn.cli import app
from gkdcn.io.atomic import (
    MARKER,
    atomic_dir,
    atomic_path,
    clear_output_folder,
    foreign_files,
    mark_output,
    write_text,
)

runner = CliRunner()
SYNTH = ["--height", "32", "--width", "32", "--layers", "5", "--deposits", "4", "--seed", "3"]


def _gkdcn(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links not followed) with its bytes."""
    out: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _one_error(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    return errors[0]


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("district")
    code, output = _gkdcn("synth", root / "d", *SYNTH, "--samples", "300")
    assert code == 0, output
    return root / "d"


@pytest.fixture
def work(tmp_path: Path, district: Path) -> Path:
    """A private copy of the district in a fresh folder, which is also the current folder."""
    shutil.copytree(district, tmp_path / "d")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


COMPARE = ["--models", "knowledge", "--protocols", "authors", "--seeds", "1"]


def test_compare_overwrite_never_takes_a_folder_with_another_tools_run_json(work: Path) -> None:
    mine = work / "myproj"
    mine.mkdir()
    (mine / "run.json").write_text('{"tool": "other"}')
    (mine / "notes.txt").write_text("draft")
    before = _files(mine)
    code, output = _gkdcn("compare", "d/study.toml", "--out", mine, *COMPARE)
    assert code == 2
    line = _one_error(output)
    assert "myproj" in line and MARKER in line
    assert "--overwrite" not in line  # never invited on a folder that is not ours
    code, output = _gkdcn("compare", "d/study.toml", "--out", mine, *COMPARE, "--overwrite")
    assert code == 2, output
    _one_error(output)
    assert _files(mine) == before


def test_init_never_overwrites_the_inputs_it_found(work: Path) -> None:
    before = _files(work / "d")
    for name in ("deposits.csv", "faults.gpkg"):
        code, output = _gkdcn("init", "d", "--out", f"d/{name}", "--overwrite")
        assert code == 2, output
        assert "input" in _one_error(output)
    assert _files(work / "d") == before


def test_a_folder_output_never_deletes_a_users_dot_old_sibling(work: Path) -> None:
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "q")
    assert code == 0, output
    (work / ".q.old").mkdir()
    (work / ".q.old" / "keep.txt").write_text("x")
    (work / ".q.tmp").write_text("mine too")
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "q", "--overwrite")
    assert code == 0, output
    assert (work / ".q.old" / "keep.txt").read_text() == "x"
    assert (work / ".q.tmp").read_text() == "mine too"
    assert sorted(p.name for p in work.iterdir()) == [".q.old", ".q.tmp", "d", "q"]


def test_a_users_dot_old_file_beside_a_folder_output_is_left_alone(work: Path) -> None:
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "r")
    assert code == 0, output
    (work / ".r.old").write_text("a file of the user's")
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "r", "--overwrite")
    assert code == 0, output  # not "r: Not a directory"
    assert (work / ".r.old").read_text() == "a file of the user's"


def test_grid_never_replaces_the_folder_of_its_like_raster(work: Path) -> None:
    layers = work / "d" / "elements"
    like = sorted(layers.glob("*.tif"))[0]
    before = _files(layers)
    code, output = _gkdcn("grid", "d/samples.csv", "--like", like, "--out", layers, "--overwrite")
    assert code == 2, output
    assert "input" in _one_error(output)
    assert _files(layers) == before


@pytest.mark.parametrize("extra", ["notes.txt", "mine/keep.txt", "sub/deeper/keep.txt"])
def test_overwrite_refuses_a_marked_folder_holding_the_users_files(work: Path, extra: str) -> None:
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "p")
    assert code == 0, output
    added = work / "p" / extra
    added.parent.mkdir(parents=True, exist_ok=True)
    added.write_text("mine")
    before = _files(work / "p")
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "p", "--overwrite")
    assert code == 2, output
    line = _one_error(output)
    assert extra in line
    assert _files(work / "p") == before


def test_compare_overwrite_refuses_a_run_holding_the_users_files(work: Path) -> None:
    code, output = _gkdcn("compare", "d/study.toml", "--out", "run", *COMPARE)
    assert code == 0, output
    (work / "run" / "tables" / "my_notes.md").write_text("mine")
    code, output = _gkdcn("compare", "d/study.toml", "--out", "run", *COMPARE, "--overwrite")
    assert code == 2, output
    assert "tables/my_notes.md" in _one_error(output)
    assert (work / "run" / "tables" / "my_notes.md").read_text() == "mine"
    (work / "run" / "tables" / "my_notes.md").unlink()
    code, output = _gkdcn("compare", "d/study.toml", "--out", "run", *COMPARE, "--overwrite")
    assert code == 0, output  # once the user's file is gone, the run is replaced


def test_compare_overwrite_through_a_linked_run_folder(work: Path) -> None:
    code, output = _gkdcn("compare", "d/study.toml", "--out", "real", *COMPARE)
    assert code == 0, output
    (work / "link").symlink_to(work / "real", target_is_directory=True)
    code, output = _gkdcn("compare", "d/study.toml", "--out", "link", *COMPARE, "--overwrite")
    assert code == 0, output
    assert (work / "link").is_symlink()
    assert (work / "real" / "summary.json").is_file()


def test_folder_outputs_through_a_link_write_where_it_points(work: Path) -> None:
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "realp")
    assert code == 0, output
    (work / "linkp").symlink_to(work / "realp", target_is_directory=True)
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "linkp", "--overwrite")
    assert code == 0, output
    assert (work / "linkp").is_symlink()
    assert (work / "realp" / "metadata.json").is_file()
    dangling = work / "gone"
    dangling.symlink_to(work / "nowhere", target_is_directory=True)
    code, output = _gkdcn("prepare", "d/study.toml", "--out", "gone", "--overwrite")
    assert code == 2, output
    assert "does not exist" in _one_error(output)


def test_demo_overwrite_refuses_a_folder_holding_the_users_files(tmp_path: Path) -> None:
    from gkdcn.demo import run_demo  # the demo is long: only its claim of the folder is tried

    out = tmp_path / "demo"
    out.mkdir()
    mark_output(out, "demo")
    (out / "mine.txt").write_text("mine")
    with pytest.raises(Exception, match=r"mine\.txt"):
        run_demo(out, overwrite=True)
    assert (out / "mine.txt").read_text() == "mine"


# -- the rule, on folders built by hand ---------------------------------------------------------


def test_atomic_writes_list_themselves_in_the_marked_folder_above(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    mark_output(run, "compare")
    write_text(run / "a" / "b.txt", "x")
    with atomic_path(run / "c.csv") as tmp:
        tmp.write_text("y")
    with atomic_dir(run / "nested", command="explain") as tmp:
        (tmp / "inner.json").write_text("{}")
    assert foreign_files(run) == []
    (run / "nested" / "user.txt").write_text("mine")
    (run / "a" / "user.txt").write_text("mine")
    os.symlink(tmp_path, run / "a" / "link")
    assert foreign_files(run) == ["a/link", "a/user.txt", "nested/user.txt"]


def test_a_marked_folder_the_parent_never_listed_is_the_users(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    mark_output(run, "compare")
    copied = run / "copied_output"  # a gkdcn output the user copied in by hand
    copied.mkdir()
    (copied / MARKER).write_text(
        "written by gkdcn prepare; the files it wrote follow\nmetadata.json\n"
    )
    (copied / "metadata.json").write_text("{}")
    assert foreign_files(run) == ["copied_output/metadata.json"]


def test_clear_output_folder_empties_only_a_folder_wholly_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mark_output(out, "demo")
    write_text(out / "x" / "y.txt", "z")
    (out / "empty").mkdir()  # empty folders hold nothing and may go
    clear_output_folder(out)
    assert list(out.iterdir()) == []
    mark_output(out, "demo")
    (out / "mine.txt").write_text("m")
    with pytest.raises(Exception, match=r"mine\.txt"):
        clear_output_folder(out)
    assert (out / "mine.txt").exists()


def test_a_marker_from_an_older_gkdcn_lists_nothing_and_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    (out / MARKER).write_text("written by gkdcn prepare\n")
    (out / "metadata.json").write_text("{}")
    with pytest.raises(Exception, match="lists no files"):
        clear_output_folder(out)
    assert (out / "metadata.json").exists()


def test_a_run_that_failed_before_any_job_finished_takes_the_corrected_retry(work: Path) -> None:
    code, output = _gkdcn("compare", "d/study.toml", "--out", "run", *COMPARE)
    assert code == 0, output
    for result in (work / "run").rglob("result.json"):  # as if it had failed before any job
        result.unlink()
    (work / "run" / "summary.json").unlink()
    code, output = _gkdcn("compare", "d/study.toml", "--out", "run", *COMPARE[:-1], "2")
    assert code == 0, output  # other settings, nothing finished to lose: no --overwrite needed
    code, output = _gkdcn("compare", "d/study.toml", "--out", "run", *COMPARE)
    assert code == 2, output  # but a run with results is never replaced without --overwrite
    assert "other settings" in _one_error(output)


def test_init_writes_its_config_into_a_folder_that_is_also_the_element_folder(
    work: Path,
) -> None:
    flat = work / "flat"
    flat.mkdir()
    for tif in (work / "d" / "elements").glob("*.tif"):
        shutil.copy(tif, flat / tif.name)
    for name in ("deposits.csv", "faults.gpkg"):
        shutil.copy(work / "d" / name, flat / name)
    code, output = _gkdcn("init", flat)
    assert code == 0, output
    assert (flat / "study.toml").is_file()
