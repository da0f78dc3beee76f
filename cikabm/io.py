"""Atomic output: a run's directory, and single files, appear whole or not at all.

:func:`write_output_dir` fills a hidden temporary sibling of the target
directory and renames it into place only once every file is written, so a
failed or interrupted run never leaves a partial output directory behind.
:func:`atomic_write_text` and :func:`atomic_write_json` do the same for one
file (write a temporary sibling, then :func:`os.replace`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

__all__ = ["OutputBusyError", "atomic_write_json", "atomic_write_parquet", "atomic_write_text", "is_own_output",
           "output_lock", "parquet_provenance", "provenance", "to_jsonable", "write_output_dir", "writes_into_out"]

#: The key of :func:`provenance` in a Parquet file's schema metadata.
PARQUET_PROVENANCE_KEY = b"cikabm"

#: The folder in which a trial keeps its finished patients; it is a trial's own
#: only with the manifest the trial writes in it, so a user's folder of that
#: name is never taken for one.
CHUNK_DIR = ".chunks"
CHUNK_MANIFEST = "manifest.json"
#: What a region run writes into its folder (``cikabm run --out``; :meth:`cikabm.simulation.Results.write`).
RUN_OUTPUTS = ("timeseries.csv", "summary.json", "scenario.toml", "populations.png", "snapshots.png")
#: The lock file of a folder a command is writing into (see :func:`output_lock`); every command's own.
LOCK_NAME = ".cikabm.lock"


def is_own_output(path: Path, own: Sequence[str]) -> bool:
    """Whether ``path`` is a file a cikabm command wrote, by its name.

    ``own`` holds names or :mod:`fnmatch` patterns of the files a command
    writes into its output folder. This is the one rule of every command that
    writes a folder: an existing folder is reused only when each entry passes
    it, and when results are replaced, only entries that pass it are removed.

    Parameters
    ----------
    path : Path
        An entry of an output folder.
    own : sequence of str
        The command's own file names or patterns.

    Returns
    -------
    bool
    """
    if path.name == LOCK_NAME:
        return True
    if not any(fnmatchcase(path.name, pattern) for pattern in own):
        return False
    if path.name == CHUNK_DIR:
        return path.is_dir() and (path / CHUNK_MANIFEST).is_file()
    return True


class OutputBusyError(ValueError):
    """Another process is writing into the output folder."""


#: Folders this process holds the lock of: a nested holder shares it, the outermost releases it.
_HELD_LOCKS: set[Path] = set()


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the one-writer lock of folder ``out`` (created if missing) for the ``with`` block.

    A second process that asks for the lock of the same folder is refused at
    once with :class:`OutputBusyError`, so two trials never write into one
    folder. The lock is an advisory :func:`fcntl.flock` on ``out/.cikabm.lock``
    (released by the system if the holder dies); within one process it is
    re-entrant (a comparison holds it around the trial that holds it too).
    Where :mod:`fcntl` does not exist (Windows) nothing is locked.

    Raises
    ------
    OutputBusyError
        If another process holds the lock.

    Notes
    -----
    A folder (and its parents) that this call had to create is removed again
    if, when the block ends, it holds nothing but the lock file: a command
    that fails before writing leaves nothing behind.
    """
    out = Path(out).absolute()
    if out in _HELD_LOCKS:
        yield out
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield out
        return
    created = _missing_ancestors(out / LOCK_NAME)
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_NAME, "a+", encoding="utf-8")  # held until the block ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        _remove_created_dirs(created)  # nothing of ours is left if we made the folder just now
        raise OutputBusyError(f"--out {out}: {holder} is writing into this folder; wait for it to end or choose "
                              "another folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"cikabm process {os.getpid()}\n")
    handle.flush()
    _HELD_LOCKS.add(out)
    try:
        yield out
    finally:
        _HELD_LOCKS.discard(out)
        if created and [p.name for p in out.iterdir()] == [LOCK_NAME]:  # failed before writing: leave nothing
            (out / LOCK_NAME).unlink()
            _remove_created_dirs(created)
        handle.close()  # releases the lock


def writes_into_out(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: run ``func(first, out, ...)`` holding the :func:`output_lock` of ``out``."""
    import functools

    @functools.wraps(func)
    def locked(first: Any, out: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        with output_lock(out):
            return func(first, out, *args, **kwargs)

    return locked


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _missing_ancestors(path: Path) -> list[Path]:
    """Ancestors of ``path`` that do not exist yet, outermost first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing[::-1]


def _remove_created_dirs(created: list[Path]) -> None:
    """Remove directories this module created, innermost first, if still empty."""
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


def write_output_dir(out: str | os.PathLike[str], writer: Callable[[Path], None], *,
                     overwrite: bool = True, own: Sequence[str] | None = None,
                     on_kept: Callable[[list[str]], None] | None = None) -> Path:
    """Create (or replace) directory ``out`` atomically, filled by ``writer``.

    ``writer`` receives a fresh, empty temporary directory beside ``out`` (same
    parent, named ``.{name}.tmp-XXXX``) and writes every output file into it.
    Only when it returns is the directory renamed into place. If ``out``
    already exists it is first moved aside to a hidden trash sibling, the new
    directory takes its place, and the old one's own files (``own``) are
    deleted. Anything else in it (a file that appeared while ``writer`` ran) is
    moved into the new directory: what the command did not write is never
    deleted.

    Parameters
    ----------
    out : str or path-like
        The output directory. Missing parent directories are created (and
        removed again if the writer fails).
    writer : callable
        ``writer(tmpdir)`` fills ``tmpdir`` (a :class:`~pathlib.Path`).
    overwrite : bool, default True
        Replace an existing directory ``out``. If False an existing ``out``
        raises :class:`FileExistsError` before ``writer`` is called.
    own : sequence of str, optional
        Names or patterns of the files the command writes (see
        :func:`is_own_output`): the entries of an old ``out`` that are removed.
        Default: none, so every entry of an old ``out`` that the new one does
        not hold is kept.
    on_kept : callable, optional
        ``on_kept(names)`` is told the entries kept from the old ``out``, if any.

    Returns
    -------
    Path
        ``out``, now holding exactly what ``writer`` wrote.

    Raises
    ------
    FileExistsError
        If ``out`` exists and is not a directory (or is a symbolic link), or
        exists and ``overwrite`` is False.
    Exception
        Whatever ``writer`` raises. Then the temporary directory is removed and
        ``out`` is left as it was: never a partial output directory.

    Notes
    -----
    Each rename is atomic on POSIX file systems; replacing an existing
    directory takes two renames, between which ``out`` is briefly absent (the
    old contents are restored if the second rename fails). The new directory
    gets the usual permissions (``0o777`` less the umask), not the private
    ones of a temporary directory.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> def writer(d):
    ...     (d / "a.txt").write_text("hello")
    >>> write_output_dir(root / "run", writer).joinpath("a.txt").read_text()
    'hello'
    """
    out = Path(out).absolute()
    if out.name in ("", ".", ".."):
        raise ValueError(f"output directory {str(out)!r} has no name of its own")
    if out.exists() or out.is_symlink():
        if out.is_symlink():
            raise FileExistsError(f"{out} is a symbolic link; give the real directory")
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if not overwrite:
            raise FileExistsError(f"{out} exists (overwrite=False)")
    parent = out.parent
    created = _missing_ancestors(out)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except BaseException:
        _remove_created_dirs(created)
        raise
    try:
        writer(tmp)
        tmp.chmod(0o777 & ~_umask())
        kept = _swap_into_place(tmp, out, () if own is None else own)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created_dirs(created)
        raise
    if kept and on_kept is not None:
        on_kept(kept)
    return out


def _swap_into_place(new: Path, out: Path, own: Sequence[str]) -> list[str]:
    """Rename directory ``new`` to ``out``; an existing ``out`` loses its ``own`` files only.

    Returns the names of the entries carried over from the old ``out``. An
    entry whose name the new directory also holds is left in the hidden trash
    folder beside ``out`` (reported by name) rather than deleted.
    """
    if not out.exists():
        os.rename(new, out)
        return []
    trash_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.trash-", dir=out.parent))
    trash = trash_root / out.name
    try:
        os.rename(out, trash)
    except BaseException:
        trash_root.rmdir()
        raise
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(trash, out)  # put the old directory back
        trash_root.rmdir()
        raise
    kept: list[str] = []
    clashes = False
    for entry in sorted(trash.iterdir()):
        if is_own_output(entry, own):
            continue
        target = out / entry.name
        if target.exists() or target.is_symlink():
            clashes = True
            kept.append(f"{entry.name} (left in {trash_root})")
            continue
        os.rename(entry, target)
        kept.append(entry.name)
    if not clashes:
        shutil.rmtree(trash_root, ignore_errors=True)
    return kept


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically: a temporary sibling, then :func:`os.replace`.

    Readers see either the old file or the complete new one, never a part.

    Parameters
    ----------
    path : str or path-like
        The file; its directory must exist.
    text : str
        The content. Newlines are written as given (no translation).
    encoding : str, default "utf-8"

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


#: zlib level of every PNG the package writes: 1, the fastest, for slightly larger files than
#: Matplotlib's default 6 (the encoder is the largest single cost of writing a trial's figures).
PNG_COMPRESS_LEVEL = 1


def save_png(fig: Any, target: Any, *, dpi: float, **savefig_kw: Any) -> None:
    """Save a Matplotlib figure as PNG into ``target`` (a path or a binary file object).

    The one place figures are written: :data:`PNG_COMPRESS_LEVEL`, any other
    :meth:`matplotlib.figure.Figure.savefig` keywords passed on.
    """
    fig.savefig(target, format="png", dpi=dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL}, **savefig_kw)


def provenance() -> dict[str, Any]:
    """What made a result: the package version and the random-stream layout
    (:data:`cikabm.kernels.STREAM_VERSION`), written into every summary and table."""
    from cikabm import __version__
    from cikabm.kernels import STREAM_VERSION

    return {"cikabm_version": __version__, "stream_version": STREAM_VERSION}


def atomic_write_parquet(frame: Any, path: str | os.PathLike[str]) -> Path:
    """Write a DataFrame to Parquet atomically, :func:`provenance` in its schema metadata.

    Read it back with :func:`parquet_provenance`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[PARQUET_PROVENANCE_KEY] = json.dumps(provenance()).encode()
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def parquet_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The :func:`provenance` a Parquet file was written with (empty if none)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PARQUET_PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars and arrays, paths, tuples and sets into plain JSON types.

    Non-finite floats become ``None`` (JSON has no NaN or infinity).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    np = sys.modules.get("numpy")  # no NumPy object without NumPy loaded: this module does not import it
    if np is not None and isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if np is not None and isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON (see :func:`to_jsonable`) to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        The file; its directory must exist.
    obj : object
        Dicts, lists, numbers, strings, bools, None, numpy values.
    indent : int, default 2

    Returns
    -------
    Path
        ``path``.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)
