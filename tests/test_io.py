"""Atomic output: a directory or file appears whole, or not at all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import cikabm.io as cio
from cikabm.io import atomic_write_json, atomic_write_text, write_output_dir


class Boom(RuntimeError):
    pass


def _fill(files: dict[str, str]):
    def writer(d: Path) -> None:
        for name, text in files.items():
            (d / name).write_text(text)

    return writer


def _failing_writer(d: Path) -> None:
    (d / "half.csv").write_text("time,n\n0,")
    raise Boom("disk on fire")


def test_writes_directory(tmp_path: Path):
    out = write_output_dir(tmp_path / "run", _fill({"a.txt": "A", "b.txt": "B"}))
    assert out == (tmp_path / "run").absolute()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    assert os.listdir(tmp_path) == ["run"]  # no temp or trash siblings left


def test_new_directory_has_normal_permissions(tmp_path: Path):
    out = write_output_dir(tmp_path / "run", _fill({"a.txt": "A"}))
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask


def test_failing_writer_leaves_nothing(tmp_path: Path):
    with pytest.raises(Boom):
        write_output_dir(tmp_path / "run", _failing_writer)
    assert os.listdir(tmp_path) == []


def test_interrupt_leaves_nothing(tmp_path: Path):
    def writer(d: Path) -> None:
        (d / "x").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_output_dir(tmp_path / "run", writer)
    assert os.listdir(tmp_path) == []


def test_failing_writer_keeps_existing_output(tmp_path: Path):
    out = tmp_path / "run"
    write_output_dir(out, _fill({"old.txt": "old"}))
    with pytest.raises(Boom):
        write_output_dir(out, _failing_writer)
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert os.listdir(out) == ["old.txt"]
    assert (out / "old.txt").read_text() == "old"


def test_overwrite_replaces_contents(tmp_path: Path):
    out = tmp_path / "run"
    write_output_dir(out, _fill({"old.txt": "old", "same.txt": "1"}), own=("*.txt",))
    write_output_dir(out, _fill({"new.txt": "new", "same.txt": "2"}), own=("*.txt",))
    assert sorted(os.listdir(out)) == ["new.txt", "same.txt"]  # the stale own file is gone
    assert (out / "same.txt").read_text() == "2"
    assert os.listdir(tmp_path) == ["run"]


def test_a_file_that_appears_while_writing_is_kept(tmp_path: Path):
    """Only the command's own files of the old folder go; a user's file written meanwhile stays."""
    out = tmp_path / "run"
    write_output_dir(out, _fill({"summary.json": "1", "old.png": "stale"}), own=("summary.json", "*.png"))
    kept: list[list[str]] = []

    def writer(tmp: Path) -> None:
        (out / "notes.md").write_text("written by the user during the run")
        (out / "drafts").mkdir()
        (tmp / "summary.json").write_text("2")

    write_output_dir(out, writer, own=("summary.json", "*.png"), on_kept=kept.append)
    assert sorted(os.listdir(out)) == ["drafts", "notes.md", "summary.json"]
    assert (out / "notes.md").read_text() == "written by the user during the run"
    assert (out / "summary.json").read_text() == "2"
    assert kept == [["drafts", "notes.md"]]
    assert os.listdir(tmp_path) == ["run"]  # no trash left behind


def test_without_own_patterns_nothing_old_is_deleted(tmp_path: Path):
    out = tmp_path / "run"
    write_output_dir(out, _fill({"a.txt": "a"}))
    write_output_dir(out, _fill({"b.txt": "b"}))
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt"]


def test_is_own_output_takes_a_chunks_folder_only_with_its_manifest(tmp_path: Path):
    chunks = tmp_path / cio.CHUNK_DIR
    chunks.mkdir()
    assert not cio.is_own_output(chunks, (cio.CHUNK_DIR,))
    (chunks / cio.CHUNK_MANIFEST).write_text("{}")
    assert cio.is_own_output(chunks, (cio.CHUNK_DIR,))
    assert cio.is_own_output(tmp_path / "km_os.png", ("km_*.png",))
    assert not cio.is_own_output(tmp_path / "km_os.png.bak", ("km_*.png",))


def test_no_overwrite_refuses_before_writing(tmp_path: Path):
    out = tmp_path / "run"
    write_output_dir(out, _fill({"old.txt": "old"}))
    called = []
    with pytest.raises(FileExistsError):
        write_output_dir(out, lambda d: called.append(d), overwrite=False)
    assert not called
    assert os.listdir(out) == ["old.txt"]


def test_existing_file_is_not_replaced(tmp_path: Path):
    target = tmp_path / "run"
    target.write_text("precious")
    with pytest.raises(FileExistsError, match="not a directory"):
        write_output_dir(target, _fill({"a": "a"}))
    assert target.read_text() == "precious"
    assert os.listdir(tmp_path) == ["run"]


def test_symlink_is_not_replaced(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(FileExistsError, match="symbolic link"):
        write_output_dir(link, _fill({"a": "a"}))
    assert link.is_symlink() and os.listdir(real) == []


def test_missing_parents_created_and_removed_on_failure(tmp_path: Path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(Boom):
        write_output_dir(out, _failing_writer)
    assert os.listdir(tmp_path) == []
    write_output_dir(out, _fill({"f": "f"}))
    assert (out / "f").read_text() == "f"


def test_failed_swap_restores_old_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "run"
    write_output_dir(out, _fill({"old.txt": "old"}))
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # moving the new directory into place
            raise OSError("simulated failure")
        return real_rename(src, dst)

    monkeypatch.setattr(cio.os, "rename", flaky_rename)
    with pytest.raises(OSError, match="simulated"):
        write_output_dir(out, _fill({"new.txt": "new"}))
    monkeypatch.undo()
    assert os.listdir(out) == ["old.txt"]
    assert os.listdir(tmp_path) == ["run"]


def test_atomic_write_text(tmp_path: Path):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second\r\nline\n")
    assert path.read_bytes() == b"second\r\nline\n"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_atomic_write_text_failure_keeps_old(tmp_path: Path):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "µ", encoding="ascii")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_atomic_write_json_numpy_and_nonfinite(tmp_path: Path):
    path = tmp_path / "s.json"
    atomic_write_json(path, {"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(3), "nan": float("nan"),
                             "inf": np.inf, "t": (1, 2), "p": Path("a/b")})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"n": 3, "x": 0.5, "a": [0, 1, 2], "nan": None, "inf": None, "t": [1, 2],
                                "p": "a/b"}


def test_save_png_keeps_every_pixel_of_matplotlibs_own_png(tmp_path: Path):
    """The faster zlib level changes the bytes, not the image: same pixels and dpi as Matplotlib's default."""
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(3.0, 2.0))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1.0, 0.6, 0.4], drawstyle="steps-post")
    ax.set_title("KM")
    cio.save_png(fig, tmp_path / "ours.png", dpi=90)
    fig.savefig(tmp_path / "default.png", dpi=90)
    with Image.open(tmp_path / "ours.png") as ours, Image.open(tmp_path / "default.png") as default:
        assert ours.format == "PNG"
        assert ours.size == default.size == (270, 180)
        assert np.array_equal(np.asarray(ours), np.asarray(default))
        assert ours.info["dpi"] == pytest.approx(default.info["dpi"])
