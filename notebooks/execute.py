"""Execute every notebook in notebooks/ and store its outputs in place.

Run from anywhere: ``python notebooks/execute.py`` (all notebooks) or
``python notebooks/execute.py dosing_schedules`` (some of them, by name).

For each notebook, a generator ``build_<name>.py`` next to it, if there is one,
first rebuilds the cells (its ``build()`` function; the generator is the source,
the .ipynb is what readers open). The notebook then runs top to bottom with
nbclient in a fresh ``python3`` kernel whose working directory is notebooks/,
and the file is written back with its outputs, only if every cell ran without
an error: a failed notebook is left as it was and the exit status is 1.

Stored outputs are kept reproducible so that a rerun gives a small diff: no
execution timestamps in the cell metadata (execution counts stay), figures as
PNG from matplotlib's inline backend at a fixed dpi whatever the environment
sets (the CI sets ``MPLBACKEND=Agg``, which would show no figure at all). The
outputs are checked for absolute paths of this machine (the repository, the
home and temporary folders), which a reader elsewhere could not use, and for
at least one figure: a notebook that fails a check is written all the same,
with a warning, and the exit status is 1.

This script needs nbclient, nbformat and ipykernel (``pip install -e ".[notebooks]"``),
not cikabm itself: the notebooks import cikabm in their own kernel.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOK_DIR.parent

#: Kernel options: PNG figures only, at a dpi that a user's matplotlibrc cannot change (100 keeps the
#: largest notebook well under 1.5 MB).
KERNEL_ARGUMENTS = ["--InlineBackend.figure_formats=png", "--InlineBackend.rc={'figure.dpi': 100}"]
#: Per-cell limit; the longest cell (230 patients x 3 arms) takes a few minutes on 2 busy cores.
CELL_TIMEOUT_S = 1800


def kernel_env() -> dict[str, str]:
    """The environment of the notebook kernel: ours, with matplotlib's inline backend forced.

    The inline backend is what embeds figures as ``image/png`` outputs; an inherited ``MPLBACKEND``
    (Agg on the CI) would replace it and every ``plt.show()`` would only warn.
    """
    return {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def build_notebook(generator: Path) -> nbformat.NotebookNode:
    """The notebook that ``generator`` (a ``build_<name>.py`` script) builds, from its ``build()``."""
    spec = importlib.util.spec_from_file_location(f"_notebook_builder_{generator.stem}", generator)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {generator}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in a fresh kernel started in ``cwd``; outputs are stored in ``nb`` itself.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first cell that fails. The file on disk
    is not touched: writing it is the caller's choice (the test suite executes without writing).
    """
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,  # iopub/shell timestamps in each cell's metadata would change on every run
        extra_arguments=list(KERNEL_ARGUMENTS),
    )
    client.execute(env=kernel_env())
    return nb


def strip_volatile(nb: nbformat.NotebookNode) -> None:
    """Remove metadata that changes on every run and says nothing about the results."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps, in case a client recorded them anyway
    nb.metadata.pop("widgets", None)  # widget state: ids that are new in every kernel


def output_texts(nb: nbformat.NotebookNode) -> Iterable[tuple[int, str]]:
    """(cell index, text) of every textual output: streams, tracebacks and text/* data."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if "text" in out:
                yield i, out["text"]
            for tb in out.get("traceback", []):
                yield i, tb
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    yield i, data if isinstance(data, str) else str(data)


def local_paths_in_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """Places where an output shows an absolute path of this machine (repository, home, temp folder)."""
    prefixes = {str(REPO_ROOT), str(Path.home()), tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir())}
    prefixes.discard("/")  # a home or temp folder of "/" would match every path
    found = []
    for i, text in output_texts(nb):
        for prefix in sorted(prefixes, key=len, reverse=True):
            if prefix in text:
                line = next(line for line in text.splitlines() if prefix in line)
                found.append(f"cell {i}: {line.strip()[:160]}")
                break
    return found


def count_outputs(nb: nbformat.NotebookNode) -> tuple[int, int]:
    """(figures, error outputs) stored in ``nb``."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    errors = sum(o.get("output_type") == "error" for o in outputs)
    return figures, errors


def select_notebooks(names: Sequence[str]) -> list[Path]:
    """The notebooks to run: all in notebooks/, or those named (with or without ``.ipynb``)."""
    if not names:
        # A generator whose notebook does not exist yet makes one.
        stems = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
        stems |= {p.stem.removeprefix("build_") for p in NOTEBOOK_DIR.glob("build_*.py")}
        return [NOTEBOOK_DIR / f"{stem}.ipynb" for stem in sorted(stems)]
    paths = [NOTEBOOK_DIR / (Path(n).stem + ".ipynb") for n in names]
    missing = [p.name for p in paths if not p.exists() and not (NOTEBOOK_DIR / f"build_{p.stem}.py").exists()]
    if missing:
        raise SystemExit(f"no such notebook in {NOTEBOOK_DIR.name}/: {', '.join(missing)}")
    return paths


def run_one(path: Path, build: bool, timeout: int) -> bool:
    """Rebuild (if it has a generator), execute and write back one notebook; True if it ran cleanly."""
    generator = path.with_name(f"build_{path.stem}.py")
    rel = path.relative_to(REPO_ROOT)
    if build and generator.exists():
        nb = build_notebook(generator)
        source = f"built by {generator.name}"
    else:
        nb = nbformat.read(path, as_version=4)
        source = "as stored"
    print(f"{rel} ({source}) ...", flush=True)
    started = time.perf_counter()
    try:
        execute(nb, path.parent, timeout=timeout)
    except nbclient.exceptions.CellExecutionError as exc:
        print(f"  FAILED after {time.perf_counter() - started:.0f} s, {rel} left unchanged:\n{exc}", file=sys.stderr)
        return False
    elapsed = time.perf_counter() - started
    strip_volatile(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    figures, errors = count_outputs(nb)
    print(f"  {elapsed:.0f} s, {figures} figures, {path.stat().st_size / 1e6:.2f} MB", flush=True)
    problems = local_paths_in_outputs(nb)
    if figures == 0 or errors:
        problems.append(f"{figures} figures and {errors} error outputs (expected at least one figure, no error)")
    for problem in problems:
        print(f"  WARNING {rel}: {problem}", file=sys.stderr)
    return not problems


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: rebuild, execute and store the notebooks; exit status 1 if any failed or needs a look."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="names of notebooks in notebooks/ (default: all)")
    parser.add_argument("--no-build", action="store_true", help="execute the stored cells, do not rerun build_*.py")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="limit per cell in seconds")
    args = parser.parse_args(argv)
    ok = True
    started = time.perf_counter()
    for path in select_notebooks(args.notebooks):
        ok &= run_one(path, build=not args.no_build, timeout=args.timeout)
    print(f"total {time.perf_counter() - started:.0f} s{'' if ok else '; see the messages above'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
