"""Benchmark sections in ``benchmarks/RESULTS.md``: each benchmark writes its own block between
its two marker lines and leaves the rest of the file alone.

One layout for every block: the begin marker, the body (its surrounding newlines trimmed), the
end marker, then one blank line before whatever follows; a new block goes after one blank line.
"""

from __future__ import annotations

from pathlib import Path

NEW_FILE = "# Benchmarks\n\n"


def replace_section(text: str, begin: str, end: str, body: str, after: str | None = None) -> str:
    """``text`` with the block between the ``begin`` and ``end`` markers holding ``body``; a
    missing block goes right after the line holding ``after`` (when given and found), else at
    the end."""
    block = f"{begin}\n{body.strip(chr(10))}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + _then(rest.split(end, 1)[1])
    if after and after in text:
        head, rest = text.split(after, 1)
        return head + after + "\n" + block + _then(rest)
    return text.rstrip("\n") + "\n\n" + block


def _then(tail: str) -> str:
    """What follows a block: one blank line, then ``tail`` (nothing when ``tail`` is empty)."""
    tail = tail.lstrip("\n")
    return "\n" + tail if tail else ""


def write_section(path: Path, begin: str, end: str, body: str, after: str | None = None) -> None:
    """Write ``body`` between ``begin`` and ``end`` in ``path`` (:func:`replace_section`; a
    missing file starts as ``# Benchmarks``)."""
    text = path.read_text() if path.exists() else NEW_FILE
    path.write_text(replace_section(text, begin, end, body, after))
