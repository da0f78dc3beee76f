"""The generated parts of ``docs/model.md``: its parameter tables.

The model description (``docs/model.md``) is written by hand, except the
tables of its "Parameters" section, which come from the parameter definitions
(:func:`cikabm.params.parameter_rows`) so that they cannot drift from the
code. Each table sits between two marker lines::

    <!-- params: tumour. -->
    | name | meaning | unit | default | range | source |
    ...
    <!-- /params -->

The opening marker names one or more dotted prefixes, separated by commas
(``<!-- params: product.,dosing. -->``). A prefix ending in ``.`` selects every
parameter whose name starts with it; any other prefix selects the parameter of
that exact name and those below it (``arms`` selects ``arms`` and
``arms[].name``). Rows keep the order of the definitions.

Run ``python -m cikabm.modeldoc`` (from the repository root) to rewrite the
tables in place; :func:`render_model_doc` does the same on a string.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cikabm.params import markdown_table, parameter_rows

#: The opening marker of a generated table: ``<!-- params: PREFIX[,PREFIX...] -->``.
OPEN_MARKER = re.compile(r"^<!-- params: (?P<prefixes>[^>]*?) -->$")
#: The closing marker of a generated table.
CLOSE_MARKER = "<!-- /params -->"

def parse_prefixes(text: str) -> list[str]:
    """The prefixes of an opening marker's list, e.g. ``"product., dosing."`` -> ``["product.", "dosing."]``."""
    prefixes = [p.strip() for p in text.split(",")]
    if not prefixes or any(not p for p in prefixes):
        raise ValueError(f"params marker {text!r}: give one or more comma-separated prefixes")
    return prefixes


def _selects(prefix: str, name: str) -> bool:
    if prefix.endswith("."):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + "[]")


def matching_rows(prefixes: Iterable[str], rows: Sequence[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """The parameter rows selected by any of ``prefixes``, in definition order, each once.

    Raises ``ValueError`` for a prefix that selects nothing (a misspelt marker).
    """
    rows = parameter_rows() if rows is None else rows
    prefixes = list(prefixes)
    for prefix in prefixes:
        if not any(_selects(prefix, r["name"]) for r in rows):
            raise ValueError(f"params marker: prefix {prefix!r} matches no parameter")
    return [r for r in rows if any(_selects(p, r["name"]) for p in prefixes)]


def parameter_table(prefixes: Iterable[str], rows: Sequence[dict[str, str]] | None = None) -> str:
    """A Markdown table (name, meaning, unit, default, range, source) of the parameters under ``prefixes``.

    Returns the table's lines joined by newlines, without a final newline.
    """
    return markdown_table(matching_rows(prefixes, rows), code_names=True)


def render_model_doc(text: str, rows: Sequence[dict[str, str]] | None = None) -> str:
    """``text`` with every block between a params marker and the next ``<!-- /params -->`` regenerated.

    Everything outside the blocks is returned unchanged. Raises ``ValueError``
    for an opening marker without its closing one, or one inside a block.
    """
    rows = parameter_rows() if rows is None else rows
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        match = OPEN_MARKER.match(line.rstrip("\r\n"))
        i += 1
        if match is None:
            continue
        j = i
        while j < len(lines) and lines[j].rstrip("\r\n") != CLOSE_MARKER:
            if OPEN_MARKER.match(lines[j].rstrip("\r\n")):
                raise ValueError(f"line {j + 1}: a params marker inside the block opened on line {i}")
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i}: params marker without a closing {CLOSE_MARKER!r}")
        newline = "\r\n" if line.endswith("\r\n") else "\n"
        table = parameter_table(parse_prefixes(match.group("prefixes")), rows)
        out.append(table.replace("\n", newline) + newline)
        out.append(lines[j])
        i = j + 1
    return "".join(out)


def update_model_doc(path: str | Path = "docs/model.md") -> bool:
    """Regenerate the parameter tables of ``path`` in place; True if the file changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = render_model_doc(text)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cikabm.modeldoc [PATH]``: regenerate the tables of PATH (default docs/model.md)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: python -m cikabm.modeldoc [PATH]  (default: docs/model.md)", file=sys.stderr)
        return 2
    path = Path(args[0]) if args else Path("docs/model.md")
    changed = update_model_doc(path)
    print(f"{path}: {'parameter tables regenerated' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
