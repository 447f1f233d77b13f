"""datacenter.cfg values as Proxmox VE's schema takes them
(pve-cluster src/PVE/DataCenterConfig.pm).

The literal cases are PVE's rules written out; where Proxmox's source is at hand
(PVESTRAP_PVE_SOURCES, default the shared oracle folder: pve-cluster-*.tar.gz), the language list,
the next-id bounds and the MAC prefix rule are also read from DataCenterConfig.pm itself and
compared, so a change on Proxmox's side shows up here.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import re
import tarfile

import pytest

from pvestrap import answers
from pvestrap.datacenter_schema import (LANGUAGES, MAC_PREFIX, MAC_PREFIX_PVE8, NEXT_ID_LOWER,
                                        NEXT_ID_UPPER, mac_prefix_problem)
from pvestrap.errors import ValidationFailed

SOURCES = pathlib.Path(os.environ.get("PVESTRAP_PVE_SOURCES", "/work/shared/oracle/proxmox"))


def with_datacenter(lines: str, pve_version: str | None = None) -> str:
    text = re.sub(r"(?m)^(language|mac_prefix|next_id|pve_version) = .*\n", "",
                  answers.example())
    text = text.replace("[datacenter]\n", f"[datacenter]\n{lines}\n", 1)
    if pve_version:
        text = text.replace("[cluster]\n", f'[cluster]\npve_version = "{pve_version}"\n', 1)
    return text


def codes(text: str) -> list[tuple[str, str]]:
    try:
        answers.loads(text)
    except ValidationFailed as exc:
        return [(f.code, f.subject) for f in exc.findings]
    return []


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_pve_knows_is_accepted(language):
    plan = answers.loads(with_datacenter(f'language = "{language}"'))
    assert plan.datacenter.language == language


@pytest.mark.parametrize("language", ["pt-br", "pt", "zh", "zh-cn", "EN", "en_US", "ko", "uk",
                                      "no", ""])
def test_any_other_language_is_refused_with_the_list(language):
    with pytest.raises(ValidationFailed) as info:
        answers.loads(with_datacenter(f'language = "{language}"'))
    [f] = info.value.findings
    assert (f.code, f.subject) == ("language-invalid", "datacenter.language")
    assert f.payload["allowed"] == list(LANGUAGES)
    assert "pt_BR" in f.remedy and "zh_TW" in f.remedy


@pytest.mark.parametrize("lines, expected", [
    ("next_id = { lower = 5000, upper = 5000 }", []),          # lower = upper: PVE allows it
    ("next_id = { lower = 5001, upper = 5000 }", [("next-id-invalid", "datacenter.next_id")]),
    ("next_id = { lower = 100 }", []),
    ("next_id = { lower = 1000000 }", []),                     # equal to the default upper
    ("next_id = { lower = 1000001 }", [("next-id-invalid", "datacenter.next_id")]),
    ("next_id = { upper = 100 }", []),                         # equal to the default lower
    ("next_id = { lower = 99 }", [("next-id-invalid", "datacenter.next_id.lower")]),
    ("next_id = { lower = 999999999, upper = 1000000000 }", []),
    ("next_id = { lower = 1000000000, upper = 1000000000 }",
     [("next-id-invalid", "datacenter.next_id.lower")]),
    ("next_id = { upper = 1000000001 }", [("next-id-invalid", "datacenter.next_id.upper")]),
])
def test_next_id_bounds_are_pves(lines, expected):
    assert codes(with_datacenter(lines)) == expected


@pytest.mark.parametrize("prefix, ok9, ok8", [
    ("BC:24:11", True, True), ("bc:24:11", True, True), ("02", True, True),
    ("02:", True, True), ("BC:24:11:", True, True), ("BC:24:11:A", True, False),
    ("BC:2", True, False), ("BC:24:11:A:", False, False), ("BC:24:11:AB", False, False),
    ("BD:24:11", False, False), ("B", False, False), ("BC:24:1", True, False),
    ("BC-24-11", False, False), ("", False, False),
])
def test_mac_prefix_is_pves_rule_for_the_planned_release(prefix, ok9, ok8):
    for version, ok in (("9.2", ok9), ("8.4", ok8), (None, ok9)):
        found = codes(with_datacenter(f'mac_prefix = "{prefix}"', version))
        assert found == ([] if ok else [("mac-prefix-invalid", "datacenter.mac_prefix")]), version


def test_a_multicast_prefix_is_named_as_such():
    assert "multicast" in mac_prefix_problem("BD:24:11")


# -- compared with Proxmox's source --------------------------------------------------------------

def _datacenter_configs() -> list[tuple[str, str]]:
    found = []
    for archive in sorted(SOURCES.glob("pve-cluster-*.tar.gz")):
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers()
                          if m.name.endswith("src/PVE/DataCenterConfig.pm"))
            found.append((archive.name, tar.extractfile(member).read().decode()))
    if not found:
        pytest.skip(f"no pve-cluster source in {SOURCES}")
    return found


def test_the_language_list_is_pves():
    for name, source in _datacenter_configs():
        block = re.search(r"language => \{.*?enum => \[(.*?)\]", source, re.S).group(1)
        assert tuple(re.findall(r"'([A-Za-z_]+)'", block)) == LANGUAGES, name


def test_the_next_id_bounds_are_pves():
    for name, source in _datacenter_configs():
        block = re.search(r"my \$next_id_format = \{(.*?)\n\};", source, re.S).group(1)
        for key, ours in (("lower", NEXT_ID_LOWER), ("upper", NEXT_ID_UPPER)):
            part = re.search(rf"{key} => \{{(.*?)\}}", block, re.S).group(1)
            numbers = [eval(re.search(rf"{k} => ([0-9* -]+[0-9])", part).group(1))  # noqa: S307
                       for k in ("min", "max", "default")]
            assert tuple(numbers) == ours, (name, key)


def test_the_mac_prefix_rule_agrees_with_pves_on_every_short_string():
    alphabet = "0aBf:9-"
    corpus = ["".join(p) for n in range(1, 7) for p in itertools.product(alphabet, repeat=n)]
    corpus += ["BC:24:11", "BC:24:11:A", "BC:24:11:A:", "BC:24:11:AB", "bc:24:11:0:"]
    for name, source in _datacenter_configs():
        perl = re.search(r"\$mac_prefix !~ m/(.*?)/i", source).group(1)
        theirs = re.compile(perl, re.I)
        ours = MAC_PREFIX_PVE8 if "8." in _version(source) else MAC_PREFIX
        disagree = [s for s in corpus if bool(theirs.match(s)) != bool(ours.match(s))]
        assert disagree == [], (name, disagree[:5])


def _version(source: str) -> str:
    return "9." if "(?::[a-f0-9]?)?" in source else "8."
