"""`pvestrap wizard` in a real pseudo-terminal (pexpect), typed at like a person would.

The wizard runs inside lab nodes (their own network namespace, host name and /etc), so what it
detects (NICs, addresses, the spare eth9) is the lab's, never this machine's. The screen is read
with the terminal's escape sequences stripped; keys are sent as a terminal sends them.
"""

from __future__ import annotations

import os
import re
import sys
import time

import pexpect
import pytest

from pvestrap.answers import load
from pvestrap.plan import ClusterPlan, Datacenter, InterfaceStanza, Link, Node
from pvestrap.wizard.detect import read_keyboard

ENTER, DOWN, CTRL_C, CTRL_U = "\r", "\x1b[B", "\x03", "\x15"
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
               Node(n2, 2, {0: "10.254.0.2", 1: "10.254.90.2"}),
               Node(n3, 3, {0: "10.254.0.3", 1: "10.254.90.3"})),
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
