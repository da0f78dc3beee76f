"""The notebooks in notebooks/: stored with their outputs, up to date with their generators, and runnable.

The stored outputs are what a reader sees on a code host or on opening a notebook, so they are checked
as stored (no kernel needed): every code cell ran, in order, at least one figure, no error. The
re-execution test runs each notebook again, in memory, with the same function as
``python notebooks/execute.py`` (which writes the outputs back); it never writes to the repository.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
GENERATED = [p for p in NOTEBOOKS if p.with_name(f"build_{p.stem}.py").exists()]

#: Absolute paths that would mean nothing on a reader's machine: temporary folders, home folders, this
#: checkout. Checked in the stored text outputs.
LOCAL_PATH = re.compile(r"(/tmp/|/var/folders/|/home/|/Users/|/root/|[A-Z]:\\Users|" + re.escape(
    str(NOTEBOOK_DIR.parent)) + ")")


def load_script(path: Path) -> ModuleType:
    """Import a script of notebooks/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"_notebooks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_outputs(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """Every output of every code cell, in order."""
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def output_text(out: dict[str, Any]) -> str:
    """The textual content of one output (stream text, traceback, text/* data), for searching."""
    parts = [out.get("text", ""), *out.get("traceback", [])]
    parts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "".join("".join(p) if isinstance(p, list) else str(p) for p in parts)


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebook in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_with_outputs(path: Path):
    """Stored as executed top to bottom, with a figure and no error; rerun ``python notebooks/execute.py``."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts}: not stored as one top-to-bottom run (python notebooks/execute.py)")
    outputs = code_outputs(nb)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name} stores an error: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, f"{path.name} stores no figure (image/png output)"
    local = [m.group(0) for o in outputs if (m := LOCAL_PATH.search(output_text(o)))]
    assert not local, f"{path.name}: outputs show local paths {local}"
    for cell in nb["cells"]:
        assert "execution" not in cell.get("metadata", {}), f"{path.name}: execution timestamps stored"


@pytest.mark.parametrize("path", GENERATED, ids=[p.name for p in GENERATED])
def test_generated_notebook_matches_its_generator(path: Path):
    """The stored cells are those of build_<name>.py: outputs of an edited generator are not stale."""
    pytest.importorskip("nbformat")
    built = load_script(path.with_name(f"build_{path.stem}.py")).build()
    stored = json.loads(path.read_text(encoding="utf-8"))

    def cells(nb: Any) -> list[tuple[str, str | None, str]]:
        return [(c["cell_type"], c.get("id"), "".join(c["source"])) for c in nb["cells"]]

    assert cells(stored) == cells(built), (
        f"{path.name} differs from build_{path.stem}.py: rerun python notebooks/execute.py {path.stem}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    runner = load_script(NOTEBOOK_DIR / "execute.py")
    nb = nbformat.read(path, as_version=4)
    runner.execute(nb, path.parent, timeout=600)  # in memory: the file is not written
    outputs = code_outputs(nb)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for o in outputs)
