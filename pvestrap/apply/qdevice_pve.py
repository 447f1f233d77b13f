"""`pvestrap qdevice setup/remove` on Proxmox VE: `pvecm qdevice setup HOST [--network CIDR]
[--force]` / `pvecm qdevice remove`, which do the certificates, /etc/pve/corosync.conf (pmxcfs
hands it to every member) and the daemons themselves (pve-cluster, src/PVE/CLI/pvecm.pm).

The plan shows /etc/pve/corosync.conf as pvecm will write it (the device section in its sorted
layout, config_version + 1); the refusals pvecm would print come first, before any command:
no cluster, a QDevice already configured, and (in the command's preflight, as a finding with the
vote math) an odd node count without --force. The steps are the
pvecm command (undo: the opposite pvecm command) and a bounded wait until `pvecm status` shows
the votes as planned.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pvestrap import qdevice as model
from pvestrap.apply.engine import Action, PlannedCommand, PlannedWait, unsettled
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import StatusUnparsable, parse_quorum_status
from pvestrap.errors import OperationFailed, PvestrapError, UserError
from pvestrap.render import Change
from pvestrap.system import System

PVE_CONF = "/etc/pve/corosync.conf"


@dataclass(frozen=True)
class PveChange:
    qdevice: model.QDevice
    setup: bool
    force: bool
    before_text: str
    after: CorosyncConf
    math: model.VoteMath | None
    verify_s: float = 60.0
    poll_s: float = 0.5

    def diff(self) -> Change:
        return Change(PVE_CONF, self.before_text, self.after.canonical(), 0o640)

    @property
    def setup_argv(self) -> tuple[str, ...]:
        q = self.qdevice
        return ("pvecm", "qdevice", "setup", q.host, *(("--network", q.network) if q.network
                                                         else ()),
                *(("--force",) if self.force else ()))

    @property
    def expected_votes(self) -> int:
        return self.math.expected if self.math else sum(
            n.votes if isinstance(n.votes, int) else 1 for n in self.after.nodes)


def _conf(system: System) -> tuple[str, CorosyncConf]:
    text = system.read_text(PVE_CONF)
    if text is None:  # pvecm's check_conf_exists
        raise UserError(f"Error: Corosync config '{PVE_CONF}' does not exist - is this node "
                        "part of a cluster?", code="not-a-cluster-member")
    return text, CorosyncConf.parse(text, PVE_CONF)


def read_setup(system: System, q: model.QDevice, force: bool = False,
               verify_s: float = 60.0) -> PveChange:
    text, conf = _conf(system)
    addresses = [a for n in conf.nodes for a in n.addresses.values()]
    model.check(q, addresses, [n.nodeid for n in conf.nodes if isinstance(n.nodeid, int)])
    if model.configured(conf) is not None:
        raise OperationFailed("QDevice already configured!", code="qdevice-configured",
                              remedy="remove it first: pvestrap qdevice remove")
    count = len(conf.nodes)
    if q.algorithm not in (None, model.default_algorithm(count)) or q.tie_breaker != "lowest":
        raise UserError("pvecm qdevice setup picks the algorithm by node count and has no "
                        "tie-breaker option", code="qdevice-pvecm-option",
                        remedy="leave --algorithm and --tie-breaker out on Proxmox VE")
    # an odd count without --force is the preflight's to refuse (qdevice-odd-nodes), as pvecm
    # refuses it; with --force, pvecm sets up lms
    q = replace(q, algorithm=model.default_algorithm(count), tie_breaker="lowest")
    votes = [n.votes if isinstance(n.votes, int) else 1 for n in conf.nodes]
    return PveChange(q, True, force, text, model.with_device(conf, q),
                     model.vote_math(votes, q.algorithm or "ffsplit"), verify_s)


def read_remove(system: System, verify_s: float = 60.0) -> PveChange:
    text, conf = _conf(system)
    device = model.configured(conf)
    if device is None:
        raise OperationFailed("No QDevice configured!", code="qdevice-not-configured",
                              remedy="nothing to remove")
    q = model.QDevice(device.get("host") or "", device.get("algorithm"))
    return PveChange(q, False, len(conf.nodes) % 2 == 1, text, model.without_device(conf),
                     None, verify_s)


@dataclass(frozen=True)
class PvecmStep:
    change: PveChange

    @property
    def id(self) -> str:
        return "pvecm-qdevice-" + ("setup" if self.change.setup else "remove")

    @property
    def description(self) -> str:
        return ("set up" if self.change.setup else "remove") + \
            f" the QDevice {self.change.qdevice.host} with pvecm"

    def _argvs(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        remove = ("pvecm", "qdevice", "remove")
        return (self.change.setup_argv, remove) if self.change.setup else \
            (remove, self.change.setup_argv)

    def plan(self, system: System) -> list[Action]:
        argv, undo = self._argvs()
        return [self.change.diff(), PlannedCommand(argv, undo_argv=undo)]

    def apply(self, system: System) -> None:
        system.run(self._argvs()[0], timeout=300)

    def undo(self, system: System, memo: None) -> None:
        system.run(self._argvs()[1], timeout=300)


@dataclass(frozen=True)
class PveVerifyStep:
    change: PveChange
    id: str = "verify"

    @property
    def description(self) -> str:
        return (f"pvecm status quorate with {self.change.expected_votes} expected votes, "
                + ("with" if self.change.setup else "without") + " the Qdevice flag")

    def plan(self, system: System) -> list[Action]:
        return [PlannedWait(self.description, self.change.verify_s)]

    def problems(self, system: System) -> list[str]:
        try:
            out = system.run(["pvecm", "status"], check=False, mutates=False, timeout=30).stdout
            status = parse_quorum_status(out, "pvecm status")
        except (PvestrapError, StatusUnparsable) as exc:
            return [getattr(exc, "message", str(exc))]
        found = [] if status.quorate else ["not quorate"]
        if ("Qdevice" in status.flags) != self.change.setup:
            found.append("Qdevice flag " + ("missing" if self.change.setup else "still there"))
        if status.expected_votes != self.change.expected_votes:
            found.append(f"expected votes {status.expected_votes}, not "
                         f"{self.change.expected_votes}")
        return found

    def apply(self, system: System) -> None:
        seen = unsettled(system, lambda: self.problems(system), self.change.verify_s,
                         self.change.poll_s, "pvecm status")
        if seen is not None:
            raise OperationFailed("pvecm status did not settle: " + "; ".join(seen),
                                  code="qdevice-verify-failed")

    def undo(self, system: System, memo: None) -> None:
        return None


def steps(change: PveChange) -> list:
    return [PvecmStep(change), PveVerifyStep(change)]
