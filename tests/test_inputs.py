"""Every file input goes through one bounded reader: a device, a FIFO, a folder or a huge file is
refused with exit 2 naming the path and the reason, at once (no hang, no MemoryError), through
the real CLI of every command that reads a user's file."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pvestrap.errors import UserError
from pvestrap.inputs import MAX_INPUT_BYTES, read_input

PVESTRAP = [sys.executable, "-c", "import sys; from pvestrap.cli import main; sys.exit(main())"]

READERS = [
    ["answer", "validate", "{}"],
    ["conf", "lint", "{}"],
    ["conf", "fmt", "{}"],
    ["render", "--answers", "{}", "--node", "n1"],
    ["iso", "validate-answer", "{}"],
]


@pytest.fixture(params=["zero", "fifo", "folder", "huge"])
def bad_input(request, tmp_path):
    if request.param == "zero":
        return "/dev/zero", "not a regular file"
    if request.param == "fifo":
        path = tmp_path / "answers.fifo"
        os.mkfifo(path)
        return str(path), "not a regular file"
    if request.param == "folder":
        return str(tmp_path), "not a regular file|is a directory"  # click's own check, also 2
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# padding\n" * (MAX_INPUT_BYTES // 10 + 10))
    return str(path), "larger than"


@pytest.mark.parametrize("argv", READERS, ids=lambda a: " ".join(a[:2]))
def test_every_file_input_is_bounded(argv, bad_input):
    path, reason = bad_input
    proc = subprocess.run(PVESTRAP + [a.replace("{}", path) for a in argv], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert path in proc.stderr and re.search(reason, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_read_input_reads_a_regular_file_and_says_which_limit(tmp_path):
    small = tmp_path / "a.toml"
    small.write_bytes(b"x" * 100)
    assert read_input(small, "answer file") == b"x" * 100
    with pytest.raises(UserError, match=r"larger than 64 bytes .* answer file"):
        read_input(small, "answer file", limit=64)
    with pytest.raises(UserError, match="no such file"):
        read_input(tmp_path / "missing", "answer file")
