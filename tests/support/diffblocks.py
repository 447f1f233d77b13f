"""The unified diffs in a command's output, for tests that compare what two commands show.

`pvestrap render --diff` prints diffs only; `pvestrap apply --dry-run` prints them between step
lines, and a step line (`+ conf: ...`) looks like an added line: a diff is read by its hunk
headers' line counts, never by guessing where it ends.
"""

from __future__ import annotations

import re

from pvestrap.paths import AUTHKEY

HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff_blocks(text: str) -> list[str]:
    """Every unified diff of a node's own file (`+++ b/PATH`) in TEXT, in order."""
    lines = text.splitlines(keepends=True)
    blocks, i = [], 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines)
                and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        block, i = lines[i:i + 2], i + 2
        while i < len(lines) and HUNK.match(lines[i]):
            block, i = _hunk(lines, i, block)
        if block[1].startswith("+++ b/"):
            blocks.append("".join(block))
    return blocks


def _hunk(lines: list[str], i: int, block: list[str]) -> tuple[list[str], int]:
    found = HUNK.match(lines[i])
    assert found is not None
    old, new = (int(n) if n is not None else 1 for n in found.groups())
    block = [*block, lines[i]]
    i += 1
    while i < len(lines) and (old > 0 or new > 0 or lines[i].startswith("\\")):
        line = lines[i]
        block.append(line)
        i += 1
        if line.startswith(" "):
            old, new = old - 1, new - 1
        elif line.startswith("-"):
            old -= 1
        elif line.startswith("+"):
            new -= 1
    return block, i


def diff_path(block: str) -> str:
    """The file a diff block changes (`/etc/...`)."""
    return block.split("\n")[1][len("+++ b"):]


def same_diffs(rendered: str, planned: str, ordered: bool = True) -> list[str]:
    """The dry run's (PLANNED) diffs of the node's own files are render's (RENDERED), in the
    same order (unless not ORDERED: apply's network phase comes before the cluster steps),
    plus at most the corosync backend's new authkey (a secret, shown as `<secret>`, that
    render never produces); returns the paths."""
    shown = [b for b in diff_blocks(planned) if diff_path(b) != AUTHKEY]
    wanted = diff_blocks(rendered)
    assert (shown == wanted) if ordered else (sorted(shown) == sorted(wanted))
    assert "".join(diff_blocks(rendered)) == rendered  # render printed diffs and nothing else
    return [diff_path(b) for b in shown]
