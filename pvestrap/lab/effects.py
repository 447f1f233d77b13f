"""Make a running lab's impairments what the state says, changing only what differs.

Loss, drop and reject become one nftables table per node; an MTU is set on the node's NIC;
the hosts mode rewrites the node's /etc/hosts; delay and jitter re-plumb the NIC's switch port
through the forwarder (one per lab, restarted with the new set of ports); a clock offset only
changes how node programs are started from now on (libfaketime); carrier off sets the NIC's
switch-side port down (after the relay, which sets the ports it re-plumbs up).
"""

from __future__ import annotations

import glob
import json
from dataclasses import replace
from typing import Iterable

from pvestrap.errors import OperationFailed, UserError
from pvestrap.lab import files, impair, names, proc, state
from pvestrap.lab.impair import Impairment

DEFAULT_MTU = 1500
FAKETIME_LIBS = ("/usr/lib/*/faketime/libfaketimeMT.so.1", "/usr/lib/faketime/libfaketimeMT.so.1",
                 "/usr/lib/*/faketime/libfaketime.so.1")


def faketime_env(offset: float) -> dict[str, str]:
    """Environment that makes a program see the clock OFFSET seconds off (nothing for 0)."""
    if not offset:
        return {}
    for pattern in FAKETIME_LIBS:
        found = sorted(glob.glob(pattern))
        if found:
            text = f"{offset:+.6f}".rstrip("0").rstrip(".")
            # Monotonic clocks are faked too: with FAKETIME_DONT_FAKE_MONOTONIC, libfaketime
            # 0.9.10 makes Python's time.sleep() fail with EINVAL (clock_nanosleep ABSTIME).
            return {"LD_PRELOAD": found[0], "FAKETIME": text}
    raise UserError("--clock needs libfaketime, which is not installed",
                    code="lab-faketime-missing", remedy="install it: apt-get install faketime")


def check_tools(items: Iterable[Impairment]) -> None:
    """Fail before changing anything when an impairment needs a missing tool."""
    for item in items:
        if item.kind == "clock":
            faketime_env(float(item.value))


def apply(st: state.LabState, old: tuple[Impairment, ...], new: tuple[Impairment, ...]) -> \
        state.LabState:
    """Bring the running lab from OLD to NEW impairments; return the new state (forwarder pid)."""
    layout = st.layout
    jobs = []
    for index in st.hosts:
        ruleset = impair.nft_ruleset(new, index)
        if ruleset != impair.nft_ruleset(old, index):
            jobs.append((["nsenter", "-t", str(st.holders[index]), "-n", "nft", "-f", "-"],
                         ruleset))
        mtu_lines = _mtu_lines(old, new, index)
        if mtu_lines:
            jobs.append(proc.ip_batch(mtu_lines, layout.node_name(index)))
        if impair.hosts_mode(new, index) != impair.hosts_mode(old, index):
            text = files.hosts(layout, st.nodes, index, impair.hosts_mode(new, index),
                               qnetd=st.qnetd)
            (st.root(index) / "etc/hosts").write_text(text)
    if jobs:
        proc.run_all(jobs)
    st = _relay(st, impair.relayed(old), impair.relayed(new))
    carrier = _carrier_lines(old, new)
    if carrier:
        proc.run_all([proc.ip_batch(carrier, layout.switch_ns)])
    return st


def _mtu_lines(old, new, index: int) -> list[str]:
    before = {i.target: int(i.value) for i in impair.of_node(old, index, "mtu")}
    after = {i.target: int(i.value) for i in impair.of_node(new, index, "mtu")}
    return [f"link set {nic} mtu {after.get(nic, DEFAULT_MTU)}"
            for nic in sorted(set(before) | set(after)) if before.get(nic) != after.get(nic)]


def _carrier_lines(old, new) -> list[str]:
    """Every port without carrier set down again (a relay may have set it up), the ports that
    got it back up."""
    off = {(i.node, i.target) for i in new if i.kind == "carrier"}
    back = {(i.node, i.target) for i in old if i.kind == "carrier"} - off
    return [f"link set {names.port_name(index, _link(nic))} {state}"
            for state, ports in (("down", off), ("up", back)) for index, nic in sorted(ports)]


def _link(nic: str) -> int | str:
    return names.SPARE_LINK if nic == names.SPARE_NIC else int(nic[3:])


def _relay(st: state.LabState, before: dict, after: dict) -> state.LabState:
    """Re-plumb the switch ports whose delay changed and restart the forwarder."""
    layout = st.layout
    switch_inode = st.netns.get(layout.switch_ns)
    running = proc.alive(st.forwarder, switch_inode)
    if before == after and (running or not after):
        return st
    if st.forwarder and running:
        proc.kill([st.forwarder])
    lines = []
    for (index, nic) in sorted(set(before) - set(after)):
        link = int(nic[3:])
        relay_a, _ = names.relay_names(index, link)
        lines += [f"link set {names.port_name(index, link)} promisc off master "
                  f"{names.bridge(link)}", f"link del {relay_a}"]
    for (index, nic) in sorted(set(after) - set(before)):
        link = int(nic[3:])
        relay_a, relay_b = names.relay_names(index, link)
        port = names.port_name(index, link)
        lines += [f"link add {relay_a} mtu {names.SWITCH_MTU} type veth peer name {relay_b} "
                  f"mtu {names.SWITCH_MTU}",
                  f"link set {relay_b} master {names.bridge(link)} up",
                  f"link set {relay_a} promisc on up",
                  f"link set {port} nomaster promisc on up"]
    if lines:
        proc.run_all([proc.ip_batch(lines, layout.switch_ns)])
    if not after:
        layout.forwarder_config.unlink(missing_ok=True)
        return _with_forwarder(st, None)
    ports = [{"a": names.port_name(index, int(nic[3:])),
              "b": names.relay_names(index, int(nic[3:]))[0],
              "delay_ms": delay, "jitter_ms": jitter}
             for (index, nic), (delay, jitter) in sorted(after.items())]
    layout.forwarder_config.write_text(json.dumps({"ports": ports}, indent=1))
    argv = ["nsenter", f"--net=/run/netns/{layout.switch_ns}",
            *proc.script("forwarder.py"), str(layout.forwarder_config)]
    try:
        pid = proc.spawn(argv, layout.state_dir / "forwarder.log", ready=True)
    except OperationFailed:
        state.save(_with_forwarder(st, None))
        raise
    return _with_forwarder(st, pid)


def _with_forwarder(st: state.LabState, pid: int | None) -> state.LabState:
    return replace(st, forwarder=pid)
