"""Every corosync 2.x / 3.0 / 3.1.x status format the project has a real sample of is read.

tests/data/status/corpus/index.toml names each sample's origin (corosync's sources and man
pages, public reports, the project's lab) and what a correct reading finds; the other files
under tests/data/status (the lab's and the real Proxmox stack's captures) must parse too. A
garbage input is a StatusUnparsable naming the tool and the line, never another exception.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pvestrap.corosync.status import (
    StatusUnparsable,
    parse_cfgtool_nodes,
    parse_cfgtool_status,
    parse_knet_stats,
    parse_members,
    parse_quorum_status,
)
from pvestrap.errors import PvestrapError

DATA = Path(__file__).parent / "data" / "status"
CORPUS = DATA / "corpus"
INDEX = tomllib.loads((CORPUS / "index.toml").read_text())
PARSERS = {"cfgtool-s": parse_cfgtool_status, "cfgtool-n": parse_cfgtool_nodes,
           "quorum": parse_quorum_status, "members": parse_members}


def test_the_corpus_is_wide_and_every_file_has_an_origin():
    files = {p.name for p in CORPUS.glob("*.txt")}
    assert files == set(INDEX), "every sample is listed in index.toml, and only those"
    assert all(entry["origin"] and entry["corosync"] for entry in INDEX.values())
    by_major = {v: sum(1 for e in INDEX.values() if e["corosync"].startswith(v))
                for v in ("1.4-2.4", "2.", "3.0", "3.1")}
    assert len(INDEX) >= 20 and by_major["3.0"] >= 5 and by_major["3.1"] >= 10
    assert by_major["2."] + by_major["1.4-2.4"] >= 8
    public = [e for e in INDEX.values() if "lab" not in e["origin"]]
    assert len(public) >= 20


def _down_cfgtool(status) -> list[str]:
    out = []
    for link in status.links:
        for p in link.peers:
            if not p.connected:
                out.append(f"{link.link}/{p.nodeid}" if p.nodeid is not None else
                           f"{link.link}/@{p.position}")
    return sorted(out)


@pytest.mark.parametrize("name", sorted(INDEX))
def test_corpus_sample_reads_as_expected(name):
    entry = INDEX[name]
    parsed = PARSERS[entry["kind"]]((CORPUS / name).read_text())
    if entry["kind"] == "cfgtool-s":
        assert parsed.local_nodeid == entry.get("local")
        assert [link.link for link in parsed.links] == entry["links"]
        assert all(link.address for link in parsed.links)
        assert _down_cfgtool(parsed) == sorted(entry.get("down", []))
        faulty = set(entry.get("faulty", [])) | {int(d.split("/")[0])
                                                 for d in entry.get("down", [])}
        assert [link.link for link in parsed.links if link.faulty] == sorted(faulty)
    elif entry["kind"] == "cfgtool-n":
        assert parsed.local_nodeid == entry["local"]
        assert {str(p.nodeid): [link.link for link in p.links] for p in parsed.peers} == \
            entry["peers"]
        assert sorted(f"{link.link}/{p.nodeid}" for p in parsed.peers for link in p.links
                      if not link.connected) == sorted(entry.get("down", []))
        assert all("->" in f"{link.local_address}->{link.remote_address}" and link.mtu
                   for p in parsed.peers for link in p.links)
    elif entry["kind"] == "quorum":
        assert parsed.quorate is entry["quorate"]
        assert len(parsed.nodes_only) == entry["members"]
        assert parsed.expected_votes == entry["expected"]
        assert any(m.is_qdevice for m in parsed.members) is entry["qdevice"]
        assert sum(m.local for m in parsed.members) == 1
        assert parsed.cluster_name == entry.get("cluster")
    else:
        assert len([m for m in parsed if not m.is_qdevice]) == entry["members"]
        assert sum(m.local for m in parsed) == 1


def _kind(path: Path):
    name = path.name
    for token, parser in (("cfgtool-s", parse_cfgtool_status), ("cfgtool-n", parse_cfgtool_nodes),
                          ("cmapctl-stats", parse_knet_stats),
                          ("pvecm-status", parse_quorum_status),
                          ("quorumtool-s", parse_quorum_status), ("pvecm-nodes", parse_members),
                          ("quorumtool-l", parse_members)):
        if token in name:
            return parser
    return None


CAPTURED = sorted(p for p in DATA.rglob("*.txt") if CORPUS not in p.parents and _kind(p))


# Real outputs that carry no status to read: the reader must say why, not guess.
REFUSED = {"pve9-pvecm-status-corosync-stopped-n3.txt": "corosync is not running"}


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: str(p.relative_to(DATA)))
def test_every_captured_output_parses(path):
    if path.name in REFUSED:
        with pytest.raises(StatusUnparsable, match=REFUSED[path.name]):
            _kind(path)(path.read_text())
        return
    assert _kind(path)(path.read_text())


GARBAGE = {
    "binary": "\x00\x01\x02garbage\xff\n\x7f",
    "empty": "",
    "html": "<html><body>502 Bad Gateway</body></html>\n",
    "error": "Cannot initialize CMAP service\n",
    "truncated-link": "Local node ID 1, transport knet\nLINK ID 0 udp\n\taddr\t= 10.0.0.1\n"
                      "\tstatus:\n\t\tnodeid:   2:\thalf-open\n",
    "other-tool": (DATA / "cmapctl-stats-2node.txt").read_text()[:400],
}


@pytest.mark.parametrize("parser", [parse_cfgtool_status, parse_cfgtool_nodes,
                                    parse_quorum_status, parse_members, parse_knet_stats],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_garbage_is_a_clear_error_never_a_traceback(parser, garbage):
    text = GARBAGE[garbage]
    try:
        parser(text)
    except StatusUnparsable as exc:
        assert isinstance(exc, PvestrapError) and exc.message.startswith("cannot read ")
        assert exc.remedy
    else:  # a few inputs are valid for a lenient reader: knet stats may be empty
        assert parser is parse_knet_stats and garbage in ("empty",)


def test_status_reads_a_corosync_2_ring_and_a_positional_3_0_output():
    from pvestrap.corosync.facade import CorosyncConf
    from pvestrap.verify import Observed, link_findings

    rings = parse_cfgtool_status((CORPUS / "2.x-cfgtool-s-ring0-faulty.txt").read_text())
    found = {f.code: f for f in link_findings(Observed(links=rings))}
    assert found["ring-faulty"].subject == "ring0" and found["ring-active"].subject == "ring1"
    conf = CorosyncConf.parse("nodelist {\n  node {\n    name: a\n    nodeid: 1\n"
                              "    ring0_addr: 10.0.0.1\n  }\n  node {\n    name: b\n"
                              "    nodeid: 2\n    ring0_addr: 10.0.0.2\n  }\n}\n")
    brief = parse_cfgtool_status((CORPUS / "3.0.4-cfgtool-bs.txt").read_text())
    found = link_findings(Observed(links=brief, conf=conf))
    down = [f for f in found if f.code == "knet-link-down"]
    assert sorted(f.subject for f in down) == ["b/link0", "b/link1"]
