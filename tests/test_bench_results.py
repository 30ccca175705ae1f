"""Benchmark sections in RESULTS.md: one layout, whoever writes the block."""

from __future__ import annotations

from pathlib import Path

from benchmarks._results import replace_section, write_section

BEGIN, END = "<!-- x:begin -->", "<!-- x:end -->"


def test_a_block_is_replaced_in_place_with_one_layout() -> None:
    text = f"# B\n\nabove\n{BEGIN}\nold\n{END}\n\n\n## next\n"
    for body in ("new\n", "\nnew", "new"):  # the body's surrounding newlines do not matter
        assert replace_section(text, BEGIN, END, body) == (
            f"# B\n\nabove\n{BEGIN}\nnew\n{END}\n\n## next\n"
        )
    # a block at the end of the file: nothing after its end marker's line
    assert replace_section(f"# B\n{BEGIN}\nold\n{END}\n", BEGIN, END, "new") == (
        f"# B\n{BEGIN}\nnew\n{END}\n"
    )


def test_a_missing_block_goes_after_its_anchor_or_at_the_end(tmp_path: Path) -> None:
    text = "# B\n<!-- a:end -->\n## notes\n"
    assert replace_section(text, BEGIN, END, "new", after="<!-- a:end -->") == (
        f"# B\n<!-- a:end -->\n{BEGIN}\nnew\n{END}\n\n## notes\n"
    )
    assert replace_section("# B\n\nkept\n\n", BEGIN, END, "new", after="<!-- absent -->") == (
        f"# B\n\nkept\n\n{BEGIN}\nnew\n{END}\n"
    )
    path = tmp_path / "RESULTS.md"  # no file yet
    write_section(path, BEGIN, END, "one\n")
    write_section(path, BEGIN, END, "two\n")
    assert path.read_text() == f"# Benchmarks\n\n{BEGIN}\ntwo\n{END}\n"
