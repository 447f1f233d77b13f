"""Before a QDevice is set up: can every node reach the qnetd host, is everything installed and
running, and what do the votes give.

The admin guide ("Corosync External Vote Support") and pvecm's setup_qdevice ask for: a qnetd
host outside the cluster running corosync-qnetd, reachable over TCP 5403 from every node
(pve-facts.md) and over SSH as root from the node running the setup; corosync-qdevice on every
node; all nodes online; an even node count (an odd one only when forced, then lms with N-1
votes); no QDevice configured yet. These functions turn what was measured into findings, each
with its check id (what `--ignore` names); they read nothing themselves, so the command, first
boot and tests feed them.
"""

from __future__ import annotations

from typing import Mapping

from pvestrap.findings import Finding, fail, info, passed, warn
from pvestrap.qdevice import QNETD_PORT, VoteMath

CHECK_HOST = "qdevice-host"          # not a member; root SSH works
CHECK_PORT = "qdevice-port"          # TCP 5403 open from every node (state, RTT)
CHECK_QNETD = "qdevice-qnetd"        # corosync-qnetd installed and running on the host
CHECK_PACKAGE = "qdevice-package"    # corosync-qdevice installed on every node
CHECK_VOTES = "qdevice-votes"        # node count parity, vote math per outcome
CHECK_CONFIGURED = "qdevice-configured"  # no QDevice yet (conf section, certificate stores)
CHECKS = {
    CHECK_HOST: "the qnetd host is not a cluster member and root SSH to it works",
    CHECK_PORT: f"every node reaches the qnetd host on TCP {QNETD_PORT} (open/closed/filtered, "
                "RTT)",
    CHECK_QNETD: "corosync-qnetd is installed and running on the qnetd host",
    CHECK_PACKAGE: "corosync-qdevice is installed on every node",
    CHECK_VOTES: "an even node count; what survives the loss of a node, the QDevice, both",
    CHECK_CONFIGURED: "no QDevice is configured yet",
}
RTT_WARN_MS = 100.0  # qdevice's heartbeat is 8 s: latency matters little, but say when it is odd


def host_findings(host: str, members: Mapping[str, str], ssh_error: str | None) -> list[Finding]:
    """MEMBERS: address -> node name; SSH_ERROR: why `ssh root@HOST true` failed, or None."""
    if host in members:
        return [fail("qdevice-host-member", f"{host} is {members[host]}'s address: the qnetd "
                     "host must not be a cluster node", host, check=CHECK_HOST,
                     remedy="run corosync-qnetd on a host outside the cluster")]
    if ssh_error is not None:
        return [fail("qdevice-ssh-failed", f"root cannot log in to {host} over SSH: "
                     f"{ssh_error}", host, check=CHECK_HOST,
                     remedy=f"put this node's root key into {host}'s /root/.ssh/authorized_keys "
                            f"(`ssh-copy-id root@{host}`, as pvecm does) and accept its host key")]
    return [passed("qdevice-host-ok", f"{host} is outside the cluster and root SSH to it works",
                   host, CHECK_HOST)]


def port_findings(host: str, results: Mapping[str, tuple[str, float | None]]) -> list[Finding]:
    """RESULTS: node -> (open | closed | filtered | error text, RTT in ms of the TCP connect)."""
    out = []
    for node, (state, rtt) in sorted(results.items()):
        payload = {"node": node, "host": host, "port": QNETD_PORT, "state": state,
                   "rtt_ms": rtt}
        subject = f"{node}->{host}:{QNETD_PORT}"
        if state == "open":
            slow = rtt is not None and rtt > RTT_WARN_MS
            make = warn if slow else passed
            out.append(make("qdevice-port-open" if not slow else "qdevice-port-slow",
                            f"{node} reaches {host}:{QNETD_PORT}/tcp"
                            + (f" in {rtt:.2f} ms" if rtt is not None else ""), subject,
                            check=CHECK_PORT, payload=payload))
        else:
            why = {"closed": "closed (connection refused: is corosync-qnetd running?)",
                   "filtered": "filtered (no answer: a firewall drops it)"}.get(state, state)
            out.append(fail(f"qdevice-port-{state if state in ('closed', 'filtered') else 'error'}",
                            f"{node} cannot reach {host}:{QNETD_PORT}/tcp: {why}", subject,
                            check=CHECK_PORT, payload=payload,
                            remedy=f"allow TCP {QNETD_PORT} from every node to {host} and start "
                                   "corosync-qnetd there"))
    return out


def qnetd_findings(host: str, installed: bool, running: bool, status: str = "") -> list[Finding]:
    payload = {"host": host, "installed": installed, "running": running}
    if not installed:
        return [fail("qnetd-missing", f"corosync-qnetd is not installed on {host}", host,
                     check=CHECK_QNETD, payload=payload,
                     remedy=f"apt-get install corosync-qnetd on {host}")]
    if not running:
        return [fail("qnetd-not-running", f"corosync-qnetd does not run on {host}", host,
                     check=CHECK_QNETD, payload=payload,
                     remedy=f"systemctl enable --now corosync-qnetd on {host}")]
    return [passed("qnetd-running", f"corosync-qnetd runs on {host}", host, CHECK_QNETD,
                   payload={**payload, "status": status})]


def package_findings(installed: Mapping[str, bool]) -> list[Finding]:
    missing = sorted(n for n, ok in installed.items() if not ok)
    if missing:
        return [fail("qdevice-package-missing", "corosync-qdevice is not installed on "
                     + ", ".join(missing), ",".join(missing), check=CHECK_PACKAGE,
                     payload={"missing": missing},
                     remedy="apt-get install corosync-qdevice on every node")]
    return [passed("qdevice-package-installed", "corosync-qdevice is installed on every node "
                   f"({len(installed)})", None, CHECK_PACKAGE,
                   payload={"nodes": sorted(installed)})]


def vote_findings(math: VoteMath, forced: bool) -> list[Finding]:
    """Parity (the guide's rule) and one finding per outcome, with the numbers."""
    payload = math.as_dict()
    out: list[Finding] = []
    if math.nodes % 2:
        make = warn if forced else fail
        out.append(make("qdevice-odd-nodes", f"{math.nodes} nodes: odd node counts are not "
                        f"officially supported; the QDevice gets {math.qdevice_votes} votes "
                        "(lms) and once it fails no single node may fail", None,
                        check=CHECK_VOTES, payload=payload,
                        remedy="use a QDevice with an even node count only (--force overrides)"))
    else:
        out.append(passed("qdevice-even-nodes", f"{math.nodes} nodes: the QDevice adds "
                          f"{math.qdevice_votes} vote ({math.algorithm})", None, CHECK_VOTES,
                          payload=payload))
    for o in math.outcomes:
        out.append(info("qdevice-vote-outcome", f"lose {o.lost}: {o.votes} of {math.expected} "
                        f"votes, quorum {math.quorum}: "
                        + ("quorate" if o.quorate else "NOT quorate"), o.lost, CHECK_VOTES,
                        payload={"lost": o.lost, "votes": o.votes, "quorate": o.quorate,
                                 "expected_votes": math.expected, "quorum": math.quorum}))
    return out


def configured_findings(device: Mapping[str, str] | None, stores: list[str],
                        forced: bool = False) -> list[Finding]:
    """DEVICE: the quorum.device keys of corosync.conf; STORES: nodes with a certificate store."""
    if device is not None:
        return [fail("qdevice-configured", f"a QDevice is configured already (host "
                     f"{device.get('host')}, {device.get('algorithm')})", None,
                     check=CHECK_CONFIGURED, payload=dict(device),
                     remedy="remove it first: pvestrap qdevice remove")]
    if stores:
        make = warn if forced else fail
        return [make("qdevice-certdb-exists", "a QDevice certificate store exists on "
                     + ", ".join(stores), ",".join(stores), check=CHECK_CONFIGURED,
                     payload={"nodes": stores},
                     remedy="remove /etc/corosync/qdevice there, or pass --force to replace it")]
    return [passed("qdevice-none", "no QDevice is configured", None, CHECK_CONFIGURED)]
