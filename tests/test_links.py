"""`pvestrap link add|move` without a lab: the edit, the phases against a model of corosync, and
the findings of the new-network preflight from real tool output.

The model behaves as corosync 3.1.7 did in the lab (tests/lab/test_links_lab.py runs the real
thing): every node runs the config it last loaded; `corosync-cfgtool -R` makes every node load
its own file, and a node whose file changes a link's address in place refuses the reload and
keeps running the old config; link L between two nodes is connected when both run L at the
addresses the other expects, and nobody cut it.
"""

from __future__ import annotations

import json

import pytest

from pvestrap.apply.engine import Change, PlannedCommand, PlannedWait, StepFailed, run_steps
from pvestrap.apply.link_plan import LinkRequest, plan_change, steps
from pvestrap.apply.links import (COROSYNC_CONF, Cluster, LinkTimeouts, LinkVerifyFailed,
                                  MemberHost, Phase, PhaseStep)
from pvestrap.apply.remote import RemoteFile
from pvestrap.commands.link import parse_addresses
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import parse_cfgtool_nodes
from pvestrap.errors import UserError, ValidationFailed
from pvestrap.findings import Severity
from pvestrap.paths import PVE_COROSYNC_CONF
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.recorded import RecordingSystem
from pvestrap.verify import Observed, address_findings, convergence_findings, ping_findings

NAMES = ("pve1", "pve2", "pve3")
BAK = COROSYNC_CONF + ".bak"


def addr(link: int, index: int) -> str:
    return f"10.{link}.0.{index}"


def start_conf(links: int = 1) -> CorosyncConf:
    plan = ClusterPlan(
        cluster_name="lab",
        nodes=tuple(Node(n, i, {k: addr(k, i) for k in range(links)})
                    for i, n in enumerate(NAMES, 1)),
        links=tuple(Link(k, f"10.{k}.0.0/24") for k in range(links)))
    return CorosyncConf.create(plan)


def on(link: int) -> dict[str, str]:
    return {n: addr(link, i) for i, n in enumerate(NAMES, 1)}


class Model:
    """The members' files and what their corosync runs (see the module docstring)."""

    def __init__(self, conf: CorosyncConf, bak: str | None = None):
        text = conf.text()
        self.files = {n: {COROSYNC_CONF: text, **({BAK: bak} if bak else {})} for n in NAMES}
        self.running = {n: conf for n in NAMES}
        self.cut: set[frozenset[str]] = set()  # address pairs that cannot reach each other
        self.fail_write: set[str] = set()
        self.fail_restore: set[str] = set()
        self.calls: list[str] = []

    # -- MemberOps ---------------------------------------------------------------------------
    def replace(self, member, text):
        self.calls.append(f"replace {member.name}")
        if member.name in self.fail_write:
            return None, "No space left on device"
        files = self.files[member.name]
        states = tuple(RemoteFile(p, files[p].encode() if p in files else None,
                                  0o644 if p in files else None) for p in (COROSYNC_CONF, BAK))
        files[BAK] = files[COROSYNC_CONF]
        files[COROSYNC_CONF] = text
        return states, None

    def restore(self, member, states):
        self.calls.append(f"restore {member.name}")
        if member.name in self.fail_restore:
            return "connection refused"
        for state in states:
            if state.data is None:
                self.files[member.name].pop(state.path, None)
            else:
                self.files[member.name][state.path] = state.data.decode()
        return None

    def reload(self):
        self.calls.append("reload")
        for name in NAMES:
            new = CorosyncConf.parse(self.files[name][COROSYNC_CONF])
            old = self.running[name]
            moved = any(o.addresses.get(k) not in (None, n.addresses.get(k))
                        for o, n in zip(old.nodes, new.nodes)
                        for k in set(old.link_numbers) & set(new.link_numbers))
            if not moved:
                self.running[name] = new

    def corosync_state(self, member):
        me = self.running[member.name]
        mine = next(n for n in me.nodes if n.name == member.name)
        lines = [f"Local node ID {mine.nodeid}, transport knet"]
        for other in me.nodes:
            if other.name == member.name:
                continue
            theirs = self.running[other.name]
            lines.append(f"nodeid: {other.nodeid} reachable")
            for k in me.link_numbers:
                their_view = {n.name: n.addresses.get(k) for n in theirs.nodes}
                up = (k in theirs.link_numbers and their_view.get(member.name) ==
                      mine.addresses.get(k) and other.addresses.get(k) ==
                      their_view.get(other.name) and
                      frozenset((mine.addresses[k], other.addresses[k])) not in self.cut)
                lines.append(f"   LINK: {k} udp ({mine.addresses[k]}->{other.addresses[k]}) "
                             f"enabled{' connected' if up else ''} mtu: 1397")
        return f"totem.config_version (u64) = {me.config_version}\n", "\n".join(lines) + "\n"

    def read(self, member):
        return self.files[member.name].get(COROSYNC_CONF)


class PveModel(Model):
    """Model plus pmxcfs's cluster-wide copy: a changed /etc/pve/corosync.conf is copied to every
    member whose own file differs, unless that one has a higher config_version, and the writing
    node runs `corosync-cfgtool -R` (pve-cluster src/pmxcfs/dcdb.c, dcdb_sync_corosync_conf)."""

    def __init__(self, conf: CorosyncConf, bak: str | None = None):
        super().__init__(conf, bak)
        self.shared = conf.text()
        self.pmxcfs_copies: list[str] = []

    def replace_shared(self, text):
        self.calls.append("replace shared")
        states = (RemoteFile(PVE_COROSYNC_CONF, self.shared.encode(), 0o640),
                  RemoteFile(PVE_COROSYNC_CONF + ".bak", None, None))
        self._pmxcfs(text)
        return states, None

    def restore_shared(self, states):
        self.calls.append("restore shared")
        self._pmxcfs(states[0].data.decode())

    def _pmxcfs(self, text: str) -> None:
        self.shared, version = text, CorosyncConf.parse(text).config_version
        copied = False
        for name in NAMES:
            local = self.files[name][COROSYNC_CONF]
            if local != text and CorosyncConf.parse(local).config_version <= version:
                self.files[name][COROSYNC_CONF] = text
                self.pmxcfs_copies.append(name)
                copied = True
        if copied:
            self.reload()


def cluster_of(conf: CorosyncConf, verify: float = 5.0, pve: bool = False) -> Cluster:
    members = tuple(MemberHost(n, i, addr(0, i), local=(i == 1)) for i, n in enumerate(NAMES, 1))
    return Cluster(conf, conf.text(), Observed(), members,
                   LinkTimeouts(verify=verify, poll=0.5), PVE_COROSYNC_CONF if pve else None)


def run(model: Model, conf: CorosyncConf, request: LinkRequest):
    plan = plan_change(conf, conf.text(), request)
    system = RecordingSystem()
    cluster = cluster_of(conf, pve=isinstance(model, PveModel))
    return plan, run_steps(steps(cluster, plan, model), system)


def snapshot(model: Model) -> dict:
    return {n: dict(files) for n, files in model.files.items()}


# -- the edit --------------------------------------------------------------------------------------

def test_add_is_one_phase_with_the_next_config_version():
    conf = start_conf()
    plan = plan_change(conf, conf.text(), LinkRequest("add", 1, on(1), priority=10))
    assert [p.id for p in plan.phases] == ["add-link1"]
    assert plan.final.config_version == 2 and plan.final.link_numbers == (0, 1)
    assert plan.final.priorities == {0: 0, 1: 10}
    assert [n.addresses for n in plan.final.nodes] == \
        [{0: addr(0, i), 1: addr(1, i)} for i in (1, 2, 3)]
    change = plan.change(cluster_of(conf))
    assert (change.path, change.before, change.after) == \
        (COROSYNC_CONF, conf.text(), plan.final.text())


def test_move_is_drop_then_add_and_keeps_the_rest_of_the_file():
    conf = start_conf(links=2).set_priority(1, 7)
    plan = plan_change(conf, conf.text(), LinkRequest("move", 1, on(2)))
    dropped, final = (p.conf for p in plan.phases)
    assert [p.id for p in plan.phases] == ["drop-link1", "add-link1"]
    assert (dropped.config_version, dropped.link_numbers) == (2, (0,))
    assert (final.config_version, final.link_numbers) == (3, (0, 1))
    assert final.priorities[1] == 7
    assert final.text() == conf.set_link_addresses(1, on(2)).bump_version().bump_version().text()


def test_asking_for_what_is_there_plans_nothing():
    conf = start_conf(links=2)
    assert plan_change(conf, conf.text(), LinkRequest("add", 1, on(1))).phases == ()
    assert plan_change(conf, conf.text(), LinkRequest("move", 1, on(1))).phases == ()


@pytest.mark.parametrize("request_, codes", [
    (LinkRequest("add", 1, {**on(1), "pve3": addr(0, 3)}), ["address-duplicate"]),
    (LinkRequest("add", 1, {"pve1": addr(1, 1), "pve2": addr(1, 2)}), ["link-address-missing"]),
    (LinkRequest("add", 1, {**on(1), "pve9": "10.1.0.9"}), ["node-unknown"]),
    (LinkRequest("add", 8, on(1)), ["link-number-out-of-range"]),
    (LinkRequest("add", 1, on(1), network="10.9.0.0/24"),
     ["link-address-outside-network"] * 3),
    (LinkRequest("add", 1, {**on(1), "pve2": "pve2.example"}), ["address-not-ip"]),
    (LinkRequest("add", 1, on(1), network="10.1.0.0/33"), ["network-invalid"]),
    (LinkRequest("add", 0, on(1)), ["link-exists"]),
    (LinkRequest("move", 0, on(1)), ["link-last"]),
    (LinkRequest("move", 2, on(1)), ["link-unknown"]),
])
def test_bad_requests_are_refused_with_every_problem(request_, codes):
    conf = start_conf()
    with pytest.raises(ValidationFailed) as err:
        plan_change(conf, conf.text(), request_)
    assert [f.code for f in err.value.findings] == codes
    assert err.value.exit_code == 2


def test_parse_addresses():
    assert parse_addresses(["pve1=10.1.0.1", " pve2 = 10.1.0.2"]) == \
        {"pve1": "10.1.0.1", "pve2": "10.1.0.2"}
    for bad in (["pve1"], ["=10.1.0.1"], ["pve1="], ["pve1=a", "pve1=b"]):
        with pytest.raises(UserError):
            parse_addresses(bad)


# -- phases against the model ----------------------------------------------------------------------

def test_add_writes_every_member_reloads_once_and_ends_converged():
    conf = start_conf()
    model = Model(conf)
    plan, outcome = run(model, conf, LinkRequest("add", 1, on(1)))
    assert outcome.applied == ("add-link1",)
    assert model.calls.count("reload") == 1
    for name in NAMES:
        assert model.files[name] == {COROSYNC_CONF: plan.final.text(), BAK: conf.text()}
        assert model.running[name] == plan.final


def test_move_in_two_phases_is_taken_where_one_phase_is_refused():
    conf = start_conf(links=2)
    model = Model(conf)
    plan, outcome = run(model, conf, LinkRequest("move", 1, on(2)))
    assert outcome.applied == ("drop-link1", "add-link1")
    assert all(model.running[n] == plan.final for n in NAMES)
    assert all(model.files[n][BAK] == plan.phases[0].conf.text() for n in NAMES)

    # the admin guide's single edit: corosync keeps the old addresses, so it never converges
    model = Model(conf)
    direct = Phase("move-in-place", "edit ring1_addr", conf.set_link_addresses(1, on(2))
                   .bump_version())
    step = PhaseStep(direct, cluster_of(conf, verify=2.0), conf.text(), model)
    with pytest.raises(StepFailed) as err:
        run_steps([step], RecordingSystem())
    problems = err.value.cause.problems  # n1..n3 still run 10.1.0.x, the file says 10.2.0.x
    assert {f.code for f in problems} == {"conf-version-not-running", "knet-link-address-stale"}
    assert snapshot(model) == snapshot(Model(conf))
    assert all(model.running[n] == conf for n in NAMES)


def test_a_link_that_does_not_come_up_is_rolled_back_byte_for_byte():
    conf = start_conf()
    model = Model(conf, bak="an older backup\n")
    model.cut.add(frozenset((addr(1, 1), addr(1, 3))))
    before = snapshot(model)
    with pytest.raises(StepFailed) as err:
        run(model, conf, LinkRequest("add", 1, on(1)))
    cause = err.value.cause
    assert isinstance(cause, LinkVerifyFailed) and err.value.step_id == "add-link1"
    assert sorted((f.code, f.subject) for f in cause.problems) == [
        ("knet-link-down", "pve1->pve3/link1"), ("knet-link-down", "pve3->pve1/link1")]
    assert snapshot(model) == before
    assert all(model.running[n] == conf for n in NAMES)
    assert model.calls.count("reload") == 2  # the change, then the way back


def test_a_failed_second_phase_undoes_the_first_too():
    conf = start_conf(links=2)
    model = Model(conf)
    model.cut.add(frozenset((addr(2, 2), addr(2, 3))))  # the new network
    before = snapshot(model)
    with pytest.raises(StepFailed) as err:
        run(model, conf, LinkRequest("move", 1, on(2)))
    assert err.value.step_id == "add-link1" and err.value.undone == ("drop-link1",)
    assert snapshot(model) == before
    assert all(model.running[n] == conf for n in NAMES)


def test_moving_a_link_that_is_down_can_be_rolled_back_to_it_down():
    conf = start_conf(links=2)
    model = Model(conf)
    model.cut |= {frozenset((addr(1, 1), addr(1, 2))), frozenset((addr(2, 1), addr(2, 2)))}
    before = snapshot(model)
    with pytest.raises(StepFailed) as err:
        run(model, conf, LinkRequest("move", 1, on(2)))
    assert err.value.undone == ("drop-link1",) and not err.value.undo_failures
    assert snapshot(model) == before


def test_a_member_that_cannot_be_written_stops_before_any_reload():
    conf = start_conf()
    model = Model(conf)
    model.fail_write.add("pve2")
    before = snapshot(model)
    with pytest.raises(StepFailed) as err:
        run(model, conf, LinkRequest("add", 1, on(1)))
    assert err.value.cause.code == "members-update-failed"
    assert "pve2: No space left on device" in err.value.cause.message
    assert "reload" not in model.calls
    assert snapshot(model) == before


def test_a_rollback_that_cannot_put_a_file_back_says_so():
    conf = start_conf()
    model = Model(conf)
    model.cut.add(frozenset((addr(1, 1), addr(1, 2))))
    model.fail_restore.add("pve3")
    with pytest.raises(StepFailed) as err:
        run(model, conf, LinkRequest("add", 1, on(1)))
    cause = err.value.cause
    assert cause.code == "link-rollback-failed"
    assert "pve3: connection refused" in cause.message
    assert isinstance(cause.__cause__, LinkVerifyFailed)


# -- Proxmox VE: pmxcfs's copy ---------------------------------------------------------------------

def test_on_proxmox_ve_the_cluster_copy_is_written_after_every_member_and_pmxcfs_copies_nothing():
    conf = start_conf()
    model = PveModel(conf)
    plan, outcome = run(model, conf, LinkRequest("add", 1, on(1)))
    assert outcome.applied == ("add-link1",)
    assert model.calls[3:] == ["replace shared", "reload"]  # the 3 members first, in any order
    assert model.shared == plan.final.text() and model.pmxcfs_copies == []
    assert all(model.files[n][COROSYNC_CONF] == plan.final.text() for n in NAMES)
    assert all(model.running[n] == plan.final for n in NAMES)
    change = plan.change(cluster_of(conf, pve=True))
    assert (change.path, change.mode) == (PVE_COROSYNC_CONF, 0o640)


def test_on_proxmox_ve_a_rollback_puts_the_cluster_copy_back_without_pmxcfs_copying():
    conf = start_conf(links=2)
    model = PveModel(conf, bak="an older backup\n")
    model.cut.add(frozenset((addr(2, 2), addr(2, 3))))  # the new network
    before = snapshot(model)
    with pytest.raises(StepFailed) as err:
        run(model, conf, LinkRequest("move", 1, on(2)))
    assert err.value.step_id == "add-link1" and err.value.undone == ("drop-link1",)
    assert snapshot(model) == before and model.shared == conf.text()
    assert model.pmxcfs_copies == []  # pmxcfs never saw a file its members did not have
    assert all(model.running[n] == conf for n in NAMES)
    last = max(i for i, c in enumerate(model.calls) if c.startswith("restore pve"))
    assert model.calls[last + 1] == "restore shared"


def test_on_proxmox_ve_a_member_that_cannot_be_written_leaves_the_cluster_copy_alone():
    conf = start_conf()
    model = PveModel(conf)
    model.fail_write.add("pve3")
    with pytest.raises(StepFailed):
        run(model, conf, LinkRequest("add", 1, on(1)))
    assert "replace shared" not in model.calls and model.shared == conf.text()
    assert all(model.files[n][COROSYNC_CONF] == conf.text() for n in NAMES)


def test_on_proxmox_ve_a_cluster_copy_that_differs_is_refused_by_the_preflight():
    from pvestrap.apply.link_plan import shared_findings

    conf = start_conf()
    newer = conf.bump_version().text()
    system = RecordingSystem(files={PVE_COROSYNC_CONF: newer})
    found = shared_findings(system, cluster_of(conf, pve=True))
    assert [(f.code, f.severity, f.payload["path"]) for f in found] == \
        [("conf-differs", Severity.FAIL, PVE_COROSYNC_CONF)]
    assert shared_findings(RecordingSystem(files={PVE_COROSYNC_CONF: conf.text()}),
                           cluster_of(conf, pve=True)) == []
    assert shared_findings(system, cluster_of(conf)) == []  # not Proxmox VE


def test_the_cluster_copy_is_written_under_pmxcfs_lock_on_corosync_conf(tmp_path):
    import subprocess

    from pvestrap.apply.links import CFS_LOCK, cfs_locked

    assert CFS_LOCK == "/etc/pve/priv/lock/file-corosync_conf"  # cfs_lock_file's lock id
    lock, seen = tmp_path / "priv" / "lock" / "file-corosync_conf", tmp_path / "seen"
    inner = f"test -d {lock} && echo held > {seen}"
    ran = subprocess.run(["sh", "-c", cfs_locked(inner, 1.0, str(lock))], capture_output=True)
    assert ran.returncode == 0 and seen.read_text() == "held\n" and not lock.exists()

    lock.mkdir()  # another writer holds it
    held = subprocess.run(["sh", "-c", cfs_locked(f"echo no > {seen}", 0.3, str(lock))],
                          capture_output=True, text=True)
    assert held.returncode == 75 and "stays held" in held.stderr
    assert seen.read_text() == "held\n" and lock.is_dir()  # not run, the holder's lock kept


def test_the_plan_shows_every_members_file_the_reload_and_the_wait():
    conf = start_conf()
    plan = plan_change(conf, conf.text(), LinkRequest("add", 1, on(1)))
    model = Model(conf)
    actions = steps(cluster_of(conf), plan, model)[0].plan(RecordingSystem())
    assert [a.path for a in actions if isinstance(a, Change)] == \
        [f"{n}:{COROSYNC_CONF}" for n in NAMES]
    assert [a.argv for a in actions if isinstance(a, PlannedCommand)] == \
        [("corosync-cfgtool", "-R")]
    assert [a.timeout for a in actions if isinstance(a, PlannedWait)] == [5.0]
    assert model.calls == []  # planning touches nothing


# -- findings of the preflight and of the convergence, from real tool output -----------------------

IP_JSON = json.dumps([
    {"ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "operstate": "UNKNOWN",
     "mtu": 65536, "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "eth1", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500,
     "operstate": "UP", "addr_info": [{"family": "inet", "local": "10.1.0.1", "prefixlen": 24}]},
    {"ifname": "eth2", "flags": ["BROADCAST", "MULTICAST"], "mtu": 1500, "operstate": "DOWN",
     "addr_info": [{"family": "inet", "local": "10.2.0.1", "prefixlen": 24}]}])


def test_address_findings_from_ip_json():
    ok = address_findings("pve1", 1, "10.1.0.1", IP_JSON)
    assert [(f.code, f.payload["interface"], f.payload["prefixlen"]) for f in ok] == \
        [("link-address-on-node", "eth1", 24)]
    assert [f.code for f in address_findings("pve1", 2, "10.2.0.1", IP_JSON)] == \
        ["link-interface-down"]
    assert [f.code for f in address_findings("pve1", 1, "10.1.0.9", IP_JSON)] == \
        ["link-address-not-on-node"]
    assert [f.code for f in address_findings("pve1", 1, "10.1.0.1", "Error")] == \
        ["link-address-unknown"]


PING_OK = """PING 10.1.0.2 (10.1.0.2) from 10.1.0.1 : 56(84) bytes of data.

--- 10.1.0.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 402ms
rtt min/avg/max/mdev = 0.045/0.061/0.080/0.014 ms
"""
PING_LOSSY = PING_OK.replace("3 received, 0%", "2 received, 33.3333%")
PING_NONE = """PING 10.1.0.2 (10.1.0.2) from 10.1.0.1 : 56(84) bytes of data.

--- 10.1.0.2 ping statistics ---
3 packets transmitted, 0 received, 100% packet loss, time 2046ms
"""
PING_BIND = "ping: bind icmp socket: Cannot assign requested address\n"


@pytest.mark.parametrize("output, code, loss, rtt", [
    (PING_OK, "link-peer-reachable", 0.0, 0.061),
    (PING_LOSSY, "link-peer-loss", 33.3333, 0.061),
    (PING_NONE, "link-peer-unreachable", 100.0, None),
    (PING_BIND, "link-peer-unreachable", None, None),
])
def test_ping_findings(output, code, loss, rtt):
    (found,) = ping_findings("pve1", "pve2", 1, "10.1.0.1", "10.1.0.2", output)
    assert (found.code, found.subject) == (code, "pve1->pve2/link1")
    assert (found.payload["loss_pct"], found.payload["rtt_avg_ms"]) == (loss, rtt)


def test_convergence_findings_name_stale_addresses_and_links_left_behind():
    conf = start_conf(links=2)
    peers = parse_cfgtool_nodes(
        "Local node ID 1, transport knet\n"
        "nodeid: 2 reachable\n"
        "   LINK: 0 udp (10.0.0.1->10.0.0.2) enabled connected mtu: 1397\n"
        "   LINK: 1 udp (10.1.0.1->10.9.0.2) enabled connected mtu: 1397\n"
        "nodeid: 3 reachable\n"
        "   LINK: 0 udp (10.0.0.1->10.0.0.3) enabled connected mtu: 1397\n"
        "   LINK: 1 udp (10.1.0.1->10.1.0.3) enabled connected mtu: 1397\n"
        "   LINK: 2 udp (10.2.0.1->10.2.0.3) enabled connected mtu: 1397\n")
    found = convergence_findings("pve1", conf, 1, peers)
    assert [(f.code, f.subject) for f in found] == [
        ("knet-link-address-stale", "pve1->pve2/link1"),
        ("knet-link-not-removed", "pve1->pve3/link2")]
    assert found[0].payload["address"] == "10.9.0.2"
    assert [f.code for f in convergence_findings("pve1", conf, 2, peers)][0] == \
        "conf-version-not-running"
    assert [f.code for f in convergence_findings("pve1", conf, 1, None)] == \
        ["knet-status-unavailable"]
    assert all(f.severity is Severity.FAIL for f in found)


def test_remove_link_drops_every_address_and_the_interface_a_move_keeps_the_rest():
    text = start_conf(links=2).set_priority(1, 5).text().replace(
        "    ring1_addr: 10.1.0.2\n", "    # the storage network\n    ring1_addr: 10.1.0.2\n")
    conf = CorosyncConf.parse(text)
    dropped = conf.remove_link(1)
    assert dropped.link_numbers == (0,) and dropped.priorities == {0: 0}
    assert "ring1_addr" not in dropped.text() and "linknumber: 1" not in dropped.text()
    assert "knet_link_priority" not in dropped.text()
    assert "# the storage network" not in dropped.text()  # it went with its item
    assert dropped.config_version == conf.config_version  # the caller bumps it
    final = plan_change(conf, text, LinkRequest("move", 1, on(2))).final
    assert "    # the storage network\n    ring1_addr: 10.2.0.2\n" in final.text()
    assert final.priorities[1] == 5
    with pytest.raises(ValidationFailed) as err:
        dropped.remove_link(0)
    assert [f.code for f in err.value.findings] == ["link-last"]
