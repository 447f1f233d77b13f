"""`pvestrap wizard` in a real pseudo-terminal (pexpect), typed at like a person would.

The wizard runs inside lab nodes (their own network namespace, host name and /etc), so what it
detects (NICs, addresses, the spare eth9) is the lab's, never this machine's. The screen is read
with the terminal's escape sequences stripped; keys are sent as a terminal sends them.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time

import pexpect
import pytest
from labtesting import addresses, etc_hashes

from pvestrap.answers import load
from pvestrap.corosync.status import parse_cfgtool_status
from pvestrap.plan import ClusterPlan, Datacenter, InterfaceStanza, Link, Node
from pvestrap.wizard.detect import read_keyboard

ENTER, UP, DOWN, CTRL_C, CTRL_U = "\r", "\x1b[A", "\x1b[B", "\x03", "\x15"
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")


class Term:
    """A child process on a pty whose output is searched as plain text, in order."""

    def __init__(self, argv: list[str], env: dict[str, str], timeout: float = 30.0):
        env = {**env, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "NO_COLOR": "1"}
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8",
                                   dimensions=(50, 160), timeout=timeout)
        self.raw, self.pos, self.timeout = "", 0, timeout

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.raw)

    def expect(self, needle: str, timeout: float | None = None) -> str:
        """Wait until NEEDLE appears after the previous match; return the text up to it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            text = self.text
            found = text.find(needle, self.pos)
            if found >= 0:
                before, self.pos = text[self.pos:found], found + len(needle)
                return before
            if time.monotonic() > deadline or not self._read():
                raise AssertionError(f"{needle!r} did not appear; the screen ended with:\n"
                                     f"{text[-3000:]}")

    def _read(self) -> bool:
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=0.2)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            return False
        return True

    def send(self, *keys: str) -> None:
        for key in keys:
            self.child.send(key)
            time.sleep(0.05)

    def line(self, text: str) -> None:
        self.send(text, ENTER)

    def wait_exit(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self._read():
            if time.monotonic() > deadline:
                raise AssertionError(f"still running; the screen ended with:\n{self.text[-3000:]}")
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else \
            128 + (self.child.signalstatus or 0)


def wizard(lab, node, *args: str, env: dict[str, str] | None = None) -> Term:
    argv, environ = lab.command(node, [sys.executable, "-m", "pvestrap", "wizard", *args])
    return Term(argv, {**environ, **(env or {})})


def _cluster_name(lab) -> str:
    return f"wz{lab.prefix[-6:]}"


def _type_create_conversation(term: Term, lab, name: str) -> None:
    """role, a WRONG cluster name first, link0 on eth0, link1 on the free eth9 with a static
    address, link0 preferred, two other nodes, migration over link1's network."""
    n2, n3 = lab.node(2).name, lab.node(3).name
    term.expect("Create a new cluster, or join an existing one?")
    term.send(ENTER)
    term.expect("? Cluster name")
    term.line("bad_name")
    term.expect("not a valid cluster name: use letters, digits and inner hyphens")
    term.send(CTRL_U)
    term.line(name)
    term.expect("link0: this node's address")
    term.expect("10.254.0.1/24 on eth0")
    term.send(ENTER)
    term.expect("Add link1 for redundancy?")
    term.line("y")
    term.expect("link1: this node's address")
    term.expect("eth9: free NIC")
    term.send(DOWN, ENTER)  # 10.254.1.1 on eth1 is first; eth9 second
    term.expect("link1: static address for eth9")
    term.line("10.254.90.1")  # no prefix length: refused with the rule
    term.expect("give the prefix length too")
    term.send(CTRL_U)
    term.line("10.254.90.1/24")
    term.expect("Add link2 for redundancy?")
    term.send(ENTER)
    term.expect("Preferred link")
    term.send(ENTER)
    for name_, addrs in ((n2, ("10.254.0.2", "10.254.90.2")), (n3, ("10.254.0.3", "10.254.90.3"))):
        term.expect("Name of another node of the cluster")
        term.line(name_)
        term.expect("address on link0")
        term.line(addrs[0])
        term.expect("address on link1")
        term.line(addrs[1])
        term.expect(f"{name_}: its NIC for {addrs[1]}")  # link1 is a new network
        term.send(ENTER)  # the default: eth9, as on this node
    term.expect("Name of another node of the cluster")
    term.send(ENTER)
    term.expect("Migration network")
    term.send(DOWN, DOWN, ENTER)
    term.expect("Migration transport")
    term.send(ENTER)
    term.expect("Keyboard layout")
    term.send(ENTER)


@pytest.mark.lab
def test_save_answers_after_a_typed_create_conversation(lab, tmp_path):
    lb = lab(nodes=3, links=2)
    out = tmp_path / "cluster.toml"
    name = _cluster_name(lb)
    term = wizard(lb, 1, "--save-answers", str(out))
    _type_create_conversation(term, lb, name)
    term.expect(f"Saved the answer file for the whole cluster to {out}")
    assert term.wait_exit() == 0
    n1, n2, n3 = (lb.node(i).name for i in (1, 2, 3))
    keyboard = read_keyboard(str(lb.node(1).path("/etc/default/keyboard")))
    assert load(out) == ClusterPlan(
        cluster_name=name,
        nodes=(Node(n1, 1, {0: "10.254.0.1", 1: "10.254.90.1"},
                    interfaces=(InterfaceStanza("eth9", "10.254.90.1/24"),)),
               Node(n2, 2, {0: "10.254.0.2", 1: "10.254.90.2"},
                    interfaces=(InterfaceStanza("eth9", "10.254.90.2/24"),)),
               Node(n3, 3, {0: "10.254.0.3", 1: "10.254.90.3"},
                    interfaces=(InterfaceStanza("eth9", "10.254.90.3/24"),))),
        links=(Link(0, "10.254.0.0/24", 20), Link(1, "10.254.90.0/24", 10)),
        create_node=n1, backend="corosync",
        datacenter=Datacenter(keyboard=keyboard, migration_type="secure",
                              migration_network="10.254.90.0/24"))


@pytest.mark.lab
@pytest.mark.parametrize("where", ["Cluster name", "link0: this node's address"])
def test_ctrl_c_at_a_prompt_exits_130_with_nothing_written(lab, tmp_path, where):
    lb = lab(nodes=1, links=1)
    out = tmp_path / "never.toml"
    before = sorted(os.listdir(lb.node(1).path("/etc")))
    term = wizard(lb, 1, "--save-answers", str(out))
    term.expect("Create a new cluster")
    term.send(ENTER)
    if where != "Cluster name":
        term.expect("? Cluster name")
        term.line("prod")
    term.expect(where)
    term.send(CTRL_C)
    term.expect("interrupted: nothing changed")
    assert term.wait_exit() == 130
    assert not out.exists()
    assert sorted(os.listdir(lb.node(1).path("/etc"))) == before
    assert "Traceback" not in term.text


# -- full runs: create, then joins pasting the Join Information -----------------------------------

def join_information(lab, node) -> str:
    """The GUI's Join Information for NODE, built the way pve-manager builds it: the node's
    address and certificate fingerprint, its address on every link (peerLinks, ring_addr) and
    the totem section of the running cluster's corosync.conf.

    A lab node has no pveproxy: the fingerprint is that of a throwaway certificate made here
    with openssl, computed as `pvenode cert info` shows it (the corosync backend joins over SSH
    and never checks it; the parser still requires one)."""
    import base64
    import json
    import subprocess
    import tempfile

    from pvestrap.corosync.tree import parse

    conf = parse(lab.node(node).path("/etc/corosync/corosync.conf").read_text())
    totem_section = conf.section("totem")
    totem = {item.key: item.value for item in totem_section.items()}
    totem["interface"] = {i.get("linknumber"): {item.key: item.value for item in i.items()}
                          for i in totem_section.sections("interface")}
    me = next(n for n in conf.section("nodelist").sections("node")
              if n.get("name") == lab.node(node).name)
    links = {int(item.key[4:-5]): item.value for item in me.items()
             if re.fullmatch(r"ring\d+_addr", item.key)}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=pveproxy",
                        "-days", "1", "-keyout", f"{tmp}/key", "-out", f"{tmp}/cert"],
                       check=True, capture_output=True)
        shown = subprocess.run(["openssl", "x509", "-in", f"{tmp}/cert", "-noout",
                                "-fingerprint", "-sha256"], check=True, capture_output=True,
                               text=True).stdout
    blob = {"ipAddress": links[min(links)], "fingerprint": shown.strip().split("=", 1)[1],
            "peerLinks": {str(n): a for n, a in sorted(links.items())},
            "ring_addr": [a for _, a in sorted(links.items())], "totem": totem}
    return base64.b64encode(json.dumps(blob).encode()).decode()


def _create(lab, token: str, name: str, save: str) -> Term:
    term = wizard(lab, 1, env={"PVESTRAP_PROBE_TOKEN": token})
    term.expect("Create a new cluster, or join an existing one?")
    term.send(ENTER)
    term.expect("? Cluster name")
    term.line("Bad.Name")
    term.expect("not a valid cluster name: use letters, digits and inner hyphens")
    term.send(CTRL_U)
    term.line(name)
    term.expect("link0: this node's address")
    term.send(ENTER)
    term.expect("Add link1 for redundancy?")
    term.line("y")
    term.expect("link1: this node's address")
    term.send(ENTER)  # 10.254.1.1 on eth1
    term.expect("Add link2 for redundancy?")
    term.send(ENTER)
    term.expect("Preferred link")
    term.send(ENTER)
    for node in (2, 3):
        term.expect("Name of another node of the cluster")
        term.line(lab.node(node).name)
        for link in (0, 1):
            term.expect(f"address on link{link}")
            term.line(f"10.254.{link}.{node}")
    term.expect("Name of another node of the cluster")
    term.send(ENTER)
    for question in ("Migration network", "Migration transport", "Keyboard layout"):
        term.expect(question)
        term.send(ENTER)
    term.expect("= SUMMARY =", timeout=90)
    term.expect("FAILURES: 0")
    term.expect("+ conf: write /etc/corosync/corosync.conf")
    term.expect("Apply this plan now?")
    term.line("y")
    term.expect("[applied] wait-quorum", timeout=120)
    term.expect("Save the whole-cluster answer file")
    term.send(CTRL_U)
    term.line(save)
    term.expect(f"Saved the answer file for the whole cluster to {save}")
    assert term.wait_exit() == 0, term.text[-3000:]
    return term


def _join(lab, node: int, token: str, blob: str, peers: tuple[int, ...]) -> Term:
    term = wizard(lab, node, env={"PVESTRAP_PROBE_TOKEN": token})
    term.expect("Create a new cluster, or join an existing one?")
    term.send(DOWN, ENTER)
    term.expect("How do you want to name the cluster?")
    term.send(ENTER)  # paste the Join Information
    term.expect("Paste the Join Information")
    term.line(blob)
    for link in (0, 1):
        term.expect(f"link{link}: this node's address")
        term.expect(f"10.254.{link}.{node}/24 on eth{link}")
        term.send(ENTER)  # the default: the address on the network of the node joined
    for i, peer in enumerate(peers, 1):
        term.expect("Host name of the cluster node you join" if i == 1 else
                    "Name of another node of the cluster")
        term.line(lab.node(peer).name)
        for link in (0, 1):
            term.expect(f"address on link{link}")
            if i == 1:
                term.send(ENTER)  # filled in from the Join Information
            else:
                term.line(f"10.254.{link}.{peer}")
    term.expect("Name of another node of the cluster")
    term.send(ENTER)
    term.expect("This node's nodeid")
    term.send(ENTER)
    term.expect("= SUMMARY =", timeout=90)
    term.expect("FAILURES: 0")
    term.expect("Apply this plan now?")
    term.line("y")
    term.expect("[applied]", timeout=120)
    term.expect("Save the whole-cluster answer file", timeout=120)
    term.send(CTRL_U, ENTER)
    assert term.wait_exit() == 0, term.text[-3000:]
    return term


def _quorum(lab, node) -> str:
    return lab.exec(node, ["corosync-quorumtool", "-s"]).stdout


@pytest.mark.lab
@pytest.mark.slow
def test_create_then_two_joins_pasting_the_join_information_end_quorate(lab, tmp_path):
    """The wizard on n1 creates (a wrong cluster name typed first), n2 and n3 join by pasting
    the Join Information; all three quorate. Then the answer file the wizard saved, fed to
    `pvestrap apply` on a fresh lab of the same names, gives byte-identical corosync.conf."""
    lb = lab(nodes=3, links=2)
    lb.start("sshd")  # the corosync backend joins over SSH, as pvecm add --use_ssh does
    token = secrets.token_hex(16)
    name = _cluster_name(lb)
    saved = str(tmp_path / "wizard.toml")
    _create(lb, token, name, saved)
    blob = join_information(lb, 1)
    _join(lb, 2, token, blob, peers=(1,))
    third = _join(lb, 3, token, blob, peers=(1, 2))
    # the joiner probed the node it joins through that node's responder, beside corosync
    assert re.search(r"PASS: \S+-n3->\S+-n1/link0:5405", third.text)
    status = _quorum(lb, 1)
    assert re.search(r"Quorate:\s+Yes", status) and re.search(r"Total votes:\s+3", status)
    for node in (1, 2, 3):
        assert lb.node(node).name in status
    plan = load(saved)
    assert [n.name for n in plan.nodes] == [lb.node(i).name for i in (1, 2, 3)]
    assert plan.cluster_name == name and plan.link_numbers == (0, 1)
    by_wizard = {i: lb.node(i).path("/etc/corosync/corosync.conf").read_bytes()
                 for i in (1, 2, 3)}

    lb.down()
    fresh = lab(nodes=3, links=2, prefix=lb.prefix)
    fresh.start("sshd")
    for node in (1, 2, 3):
        done = fresh.exec(node, [sys.executable, "-m", "pvestrap", "apply", "--answers", saved,
                                 "--yes"], timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"Total votes:\s+3", _quorum(fresh, 1))
    assert {i: fresh.node(i).path("/etc/corosync/corosync.conf").read_bytes()
            for i in (1, 2, 3)} == by_wizard


@pytest.mark.lab
def test_a_preflight_fail_is_answered_by_going_back_to_another_link_address(lab):
    lb = lab(nodes=1, links=1)
    term = wizard(lb, 1)
    term.expect("Create a new cluster, or join an existing one?")
    term.send(ENTER)
    term.expect("? Cluster name")
    term.line(_cluster_name(lb))
    term.expect("link0: this node's address")
    term.expect("type another address")
    term.send(DOWN, DOWN, ENTER)  # eth0's address, the free eth9, then "type another"
    term.expect("link0: address")
    term.line("10.254.0.99")  # not on this node
    term.expect("Add link1 for redundancy?")
    term.send(ENTER)
    term.expect("Name of another node of the cluster")
    term.send(ENTER)
    for question in ("Migration network", "Migration transport", "Keyboard layout"):
        term.expect(question)
        term.send(ENTER)
    term.expect("FAIL: ", timeout=90)
    term.expect("link0 address 10.254.0.99 is not configured on any interface")
    term.expect("The preflight found problems. What now?")
    before = term.expect("run the preflight again")
    assert "go back: change this node's link0 address (now 10.254.0.99)" in before
    term.send(ENTER)  # the first offer: go back to link0
    term.expect("link0: this node's address")
    term.expect("type another address")
    term.send(UP, UP, ENTER)  # the old answer is the default; 10.254.0.1 on eth0 is first
    term.expect("= SUMMARY =", timeout=90)
    term.expect("FAILURES: 0")
    term.expect("Apply this plan now?")
    term.line("n")
    term.expect("Not applied: nothing changed.")
    term.expect("Save the whole-cluster answer file")
    term.send(CTRL_U, ENTER)
    assert term.wait_exit() == 0
    assert not lb.node(1).path("/etc/corosync/authkey").exists()


# -- the free NIC end to end: a new cluster network on the spare NICs -----------------------------

NEW_NET = "10.254.90"


def _create_on_the_spare_nic(lab, token: str, name: str, save: str) -> Term:
    """n1's wizard: create, link0 = the free eth9 with a new static address, the two others'
    addresses on that network (their NIC: eth9 too, the default), apply, save."""
    term = wizard(lab, 1, env={"PVESTRAP_PROBE_TOKEN": token})
    term.expect("Create a new cluster, or join an existing one?")
    term.send(ENTER)
    term.expect("? Cluster name")
    term.line(name)
    term.expect("link0: this node's address")
    term.expect("eth9: free NIC")
    term.send(DOWN, ENTER)  # 10.254.0.1 on eth0 is first; eth9 second
    term.expect("link0: static address for eth9")
    term.line(f"{NEW_NET}.1/24")
    term.expect("Add link1 for redundancy?")
    term.send(ENTER)
    for node in (2, 3):
        term.expect("Name of another node of the cluster")
        term.line(lab.node(node).name)
        term.expect("address on link0")
        term.line(f"{NEW_NET}.{node}")
        term.expect(f"{lab.node(node).name}: its NIC for {NEW_NET}.{node}")
        term.send(ENTER)  # eth9
    term.expect("Name of another node of the cluster")
    term.send(ENTER)
    for question in ("Migration network", "Migration transport", "Keyboard layout"):
        term.expect(question)
        term.send(ENTER)
    term.expect("[link-address-planned]", timeout=90)  # not a FAIL: apply configures it
    term.expect("[link-port-pending]")  # probed once it exists
    term.expect("= SUMMARY =")
    term.expect("FAILURES: 0")
    # apply's network phase first, shown and confirmed on its own; then the cluster's steps
    term.expect("+ network:write-interfaces")
    term.expect("+auto eth9")
    term.expect("Apply this plan now?")
    term.line("y")
    term.expect("[applied] network:wait-address", timeout=60)
    term.expect("+ conf: write /etc/corosync/corosync.conf")
    term.expect("Apply this plan now?")
    term.line("y")
    term.expect("[applied] wait-quorum", timeout=180)
    term.expect("Save the whole-cluster answer file")
    term.send(CTRL_U)
    term.line(save)
    term.expect(f"Saved the answer file for the whole cluster to {save}")
    assert term.wait_exit() == 0, term.text[-3000:]
    return term


def _apply(lab, node: int, answers: str) -> str:
    done = lab.exec(node, [sys.executable, "-m", "pvestrap", "apply", "--answers", answers,
                           "--yes"], timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.lab
@pytest.mark.slow
def test_wizard_free_nic_new_network_then_apply_on_the_others_ends_quorate_on_it(lab, tmp_path):
    """Issue 11's first Done-when: the wizard on n1 puts link0 on the spare eth9 with a static
    address on a network that exists nowhere yet, applies (its network phase configures eth9)
    and saves the answer file; n2 and n3 run `pvestrap apply --yes` with it, their eth9
    configured by apply. A quorate 3-node cluster whose link0 is the new network on eth9
    (`corosync-cfgtool -s`), eth0 untouched; a second apply on every node plans nothing."""
    lb = lab(nodes=3, links=1)
    lb.start("sshd")  # the corosync backend joins over SSH, as pvecm add --use_ssh does
    mgmt = {i: addresses(lb, i, "eth0") for i in (1, 2, 3)}
    assert all(addresses(lb, i, "eth9") == [] for i in (1, 2, 3))
    saved = str(tmp_path / "wizard.toml")
    _create_on_the_spare_nic(lb, secrets.token_hex(16), _cluster_name(lb), saved)
    plan = load(saved)
    assert [(n.name, n.addresses, n.interfaces) for n in plan.nodes] == [
        (lb.node(i).name, {0: f"{NEW_NET}.{i}"}, (InterfaceStanza("eth9", f"{NEW_NET}.{i}/24"),))
        for i in (1, 2, 3)]
    for node in (2, 3):
        _apply(lb, node, saved)
    status = _quorum(lb, 1)
    assert re.search(r"Quorate:\s+Yes", status) and re.search(r"Total votes:\s+3", status)
    for i in (1, 2, 3):
        assert addresses(lb, i, "eth9") == [f"{NEW_NET}.{i}/24"]
        assert addresses(lb, i, "eth0") == mgmt[i]
        shown = lb.exec(i, ["corosync-cfgtool", "-s"]).stdout
        link0 = parse_cfgtool_status(shown).link(0)
        assert link0 is not None and link0.address == f"{NEW_NET}.{i}", shown
        assert len(link0.peers) == 3 and all(p.connected for p in link0.peers), shown
        assert "iface eth9 inet static" in lb.node(i).path("/etc/network/interfaces").read_text()
    before = etc_hashes(lb)
    for i in (1, 2, 3):
        again = _apply(lb, i, saved)
        assert "nothing to do, already as planned" in again, again[-2000:]
        assert "+ network:" not in again, again[-2000:]
    assert etc_hashes(lb) == before
