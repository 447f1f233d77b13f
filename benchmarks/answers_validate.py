#!/usr/bin/env python3
"""How long `answer validate` takes on a 1 MiB answer file with errors, next to the floor.

    .venv/bin/python benchmarks/answers_validate.py [--repeat N]

The file is the example cluster file plus an unknown key and a ~1 MB multi-line string: once a
file has a finding, every finding's key is mapped to its line (pvestrap.toml_lines), which used to
re-parse the value once per line (a 40 KB file took 38 s). Side by side in one run: tomllib alone
parsing the same text (the floor: the loader cannot be faster), then pvestrap's whole load (parse,
schema, every finding located). The target is under 1 s for the whole load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tomllib

from pvestrap import answers
from pvestrap.errors import AnswerFileInvalid

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback


def big_file(size: int = answers.MAX_CHARS - 64) -> str:
    head = answers.example() + '\n[cluster_notes]\ntext = """\n'
    tail = '\n"""\nunknown_key = 1\n'
    line = "a line with ] and } and [brackets] in it"
    body = "\n".join([line] * ((size - len(head) - len(tail)) // (len(line) + 1)))
    return head + body + tail


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    text = big_file()

    def validate() -> None:
        try:
            answers.loads(text, "big.toml")
        except AnswerFileInvalid as exc:
            assert any(f.payload.get("line") for f in exc.findings), "findings carry lines"
        else:
            raise SystemExit("the benchmark file was accepted: it must have findings")

    try:
        floor = timed(lambda: tomllib.loads(text), args.repeat)
        whole = timed(validate, args.repeat)
    except Exception as exc:  # a benchmark that cannot measure says why, without a traceback
        print(f"cannot measure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"answer file: {len(text) / 1024:.0f} KiB, {text.count(chr(10))} lines, median of "
          f"{args.repeat}")
    print(f"  tomllib.loads (floor)          {floor * 1000:8.1f} ms")
    print(f"  answers.loads with findings    {whole * 1000:8.1f} ms   x{whole / floor:.2f} of "
          "the floor")
    print(f"  target < 1 s: {'met' if whole < 1.0 else 'MISSED'}")
    return 0 if whole < 1.0 else 1


if __name__ == "__main__":
    guard.run(main)
