"""key_lines: the line of every key of a TOML text, in one pass however long the values are."""

from __future__ import annotations

import tomllib

from pvestrap.toml_lines import key_lines

TEXT = '''# a comment with ] and } and """
[cluster]
name = "prod"  # ] in a comment
notes = """
line with ] and }
and a \\""" escaped closer
"""
raw = \'\'\'
[not a header]
\'\'\'
ports = [
  1, # ]
  2,
]
after = "x]"

[[nodes]]
name = "a"
[[nodes]]
name = "b"
'''


def test_lines_of_keys_after_long_and_tricky_values():
    assert tomllib.loads(TEXT)["cluster"]["after"] == "x]"
    where = key_lines(TEXT)
    assert where["cluster.name"] == 3
    assert where["cluster.notes"] == 4
    assert where["cluster.raw"] == 8
    assert where["cluster.ports"] == 11 and where["cluster.ports[1]"] == 11
    assert where["cluster.after"] == 15
    assert where["nodes[0].name"] == 18 and where["nodes[1].name"] == 20


def test_a_huge_multi_line_value_is_scanned_once():
    """Was a tomllib parse per line of the value (quadratic: 40 KB took 38 s)."""
    body = "\n".join("x ] } ]" for _ in range(20_000))
    text = f'a = """\n{body}\n"""\nb = 1\n'
    where = key_lines(text)
    assert where == {"a": 1, "b": 20_003}
