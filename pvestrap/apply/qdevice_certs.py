"""The QDevice's certificates, as pvecm's setup_qdevice makes them (pve-cluster,
src/PVE/CLI/pvecm.pm) with corosync-qnetd-certutil and corosync-qdevice-net-certutil: the qnetd CA,
every member's NSS database from it, the cluster certificate requested here and signed by the CA,
its pk12 imported on every other member. Each step's undo puts back what was there before.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pvestrap import qdevice as model
from pvestrap.apply.engine import Action, PlannedCommand
from pvestrap.apply.links import MemberHost
from pvestrap.apply.qdevice_change import (QDEVICE_CERTUTIL, QNETD_CERTUTIL, QdeviceChange, b64,
                                           dir_restore_script, dir_snapshot_script, each_member,
                                           parse_snapshot, raise_errors, run_on, with_file)
from pvestrap.apply.remote import RemoteFile, parse_show, show_script
from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.system import Secret, System


@dataclass(frozen=True)
class QnetdCaStep:
    change: QdeviceChange
    id: str = "qnetd-ca"

    @property
    def description(self) -> str:
        return f"the qnetd CA on {self.change.host} (corosync-qnetd-certutil -i)"

    def _exists(self, system: System) -> bool:
        out = self.change.qnetd(system).run(show_script([model.CA_CERT]), "look for the CA",
                                            mutates=False).stdout
        found = parse_show(out).get(model.CA_CERT)
        return found is not None and found.data is not None

    def plan(self, system: System) -> list[Action]:
        if self._exists(system):
            return []
        return [PlannedCommand(self.change.qnetd(system).shown(f"{QNETD_CERTUTIL} -i"))]

    def apply(self, system: System) -> bool:
        if self._exists(system):
            return False
        self.change.qnetd(system).run(f"{QNETD_CERTUTIL} -i", "initialise the qnetd CA")
        return True

    def undo(self, system: System, memo: bool) -> None:
        if memo:
            self.change.qnetd(system).run(f"rm -rf {model.QNETD_DB}", "remove the qnetd CA")


@dataclass(frozen=True)
class NodeDbStep:
    """Every member's certificate store, initialised from the qnetd CA. A store that exists
    already is refused (pvecm: "QDevice certificate store already initialised") unless forced;
    undo puts /etc/corosync/qdevice back as it was on every member."""

    change: QdeviceChange
    force: bool = False
    id: str = "node-certdb"

    @property
    def description(self) -> str:
        return "every member's QDevice certificate store from the qnetd CA"

    def plan(self, system: System) -> list[Action]:
        script = f"if [ -d {model.NODE_DB} ]; then echo exists; else echo none; fi"
        found = each_member(self.change.cluster.members, lambda m: run_on(
            self.change, system, m, script, "look for a certificate store", mutates=False))
        raise_errors(found, "looking for certificate stores", "qdevice-unreachable")
        existing = sorted(n for n, out in found.items() if "exists" in out)
        if existing and not self.force:
            raise OperationFailed("QDevice certificate store already initialised on "
                                  f"{', '.join(existing)} ({model.NODE_DB})",
                                  code="qdevice-certdb-exists",
                                  remedy="remove it there, or pass --force to replace it")
        return [PlannedCommand(("ssh", f"root@{m.name}", f"{QDEVICE_CERTUTIL} -i -c "
                                "qnetd-cacert.crt")) for m in self.change.cluster.members]

    def apply(self, system: System) -> dict[str, str | None]:
        ca = self.change.qnetd(system).read_files([model.CA_CERT], "read the qnetd CA")
        data = ca[model.CA_CERT].data
        if data is None:
            raise OperationFailed(f"{self.change.host} has no {model.CA_CERT}",
                                  code="qdevice-no-ca")
        script = (dir_snapshot_script(model.QDEVICE_DIR) + f"; rm -rf {model.NODE_DB}; "
                  + with_file(f"{QDEVICE_CERTUTIL} -i -c \"$f\" >&2"))
        results = each_member(self.change.cluster.members, lambda m: parse_snapshot(run_on(
            self.change, system, m, script, "initialise the certificate store", input=b64(data))))
        memo = {n: r for n, r in results.items() if not isinstance(r, PvestrapError)}
        if len(memo) != len(results):
            self.undo(system, memo)
            raise_errors(results, "initialising the certificate stores", "qdevice-certdb-failed")
        return memo

    def undo(self, system: System, memo: dict[str, str | None]) -> None:
        by_name = {m.name: m for m in self.change.cluster.members}

        def put_back(m: MemberHost) -> None:
            script, stdin = dir_restore_script(model.QDEVICE_DIR, memo[m.name])
            run_on(self.change, system, m, script, "put the certificate store back", input=stdin)

        raise_errors(each_member([by_name[n] for n in memo], put_back),
                     "putting the certificate stores back", "qdevice-restore-failed")


@dataclass(frozen=True)
class ClusterCertStep:
    """This member's request, signed by the qnetd CA, imported here (pk12 exported)."""

    change: QdeviceChange
    id: str = "cluster-cert"

    @property
    def description(self) -> str:
        return (f"the cluster certificate: requested here, signed by the qnetd CA on "
                f"{self.change.host}, imported here")

    def plan(self, system: System) -> list[Action]:
        name = shlex.quote(self.change.name)
        crt = f"{model.NODE_DB}/cluster-{self.change.name}.crt"
        return [PlannedCommand((QDEVICE_CERTUTIL, "-r", "-n", self.change.name)),
                PlannedCommand(self.change.qnetd(system).shown(
                    f"{QNETD_CERTUTIL} -s -c qdevice-net-node.crq -n {name}")),
                PlannedCommand((QDEVICE_CERTUTIL, "-M", "-c", crt))]

    def apply(self, system: System) -> RemoteFile:
        change, local = self.change, self.change.local
        crt = model.cluster_cert(change.name)
        name = shlex.quote(change.name)
        out = run_on(change, system, local, f"{QDEVICE_CERTUTIL} -r -n {name} >&2; "
                     + show_script([model.CRQ]), "request the cluster certificate")
        crq = parse_show(out).get(model.CRQ)
        if crq is None or crq.data is None:
            raise OperationFailed("corosync-qdevice-net-certutil -r made no request",
                                  code="qdevice-crq-missing")
        qnetd = change.qnetd(system)
        before = qnetd.read_files([crt], "read the cluster certificate")[crt]
        try:
            signed = qnetd.run(with_file(f"{QNETD_CERTUTIL} -s -c \"$f\" -n {name} >&2; "
                                         + show_script([crt])), "sign the cluster certificate",
                               input=b64(crq.data)).stdout
            cert = parse_show(signed).get(crt)
            if cert is None or cert.data is None:
                raise OperationFailed("the qnetd host signed no certificate",
                                      code="qdevice-crt-missing")
            target = f"{model.NODE_DB}/cluster-{change.name}.crt"
            run_on(change, system, local, with_file(
                f"cp \"$f\" {shlex.quote(target)}; {QDEVICE_CERTUTIL} -M -c "
                f"{shlex.quote(target)} >&2"), "import the cluster certificate",
                input=b64(cert.data))
        except PvestrapError:
            self.undo(system, before)
            raise
        return before

    def undo(self, system: System, memo: RemoteFile) -> None:
        self.change.qnetd(system).put_files([memo], "put the cluster certificate back")


@dataclass(frozen=True)
class ImportStep:
    """The pk12 (certificate and key) imported on every other member; the key travels on
    stdin only and is never shown."""

    change: QdeviceChange
    id: str = "import-cert"

    @property
    def description(self) -> str:
        return "the cluster certificate and key imported on every other member"

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("ssh", f"root@{m.name}", f"{QDEVICE_CERTUTIL} -m -c "
                                "qdevice-net-node.p12")) for m in self.change.others]

    def apply(self, system: System) -> None:
        found = self.change.cluster.access(system, self.change.local).run(
            show_script([model.P12]), "read the pk12", mutates=False).stdout
        p12 = parse_show(found).get(model.P12)
        if p12 is None or p12.data is None:
            raise OperationFailed(f"{model.P12} is missing here", code="qdevice-p12-missing")
        key = Secret(b64(p12.data))
        results = each_member(self.change.others, lambda m: run_on(
            self.change, system, m, with_file(f"{QDEVICE_CERTUTIL} -m -c \"$f\" >&2"),
            "import the cluster certificate", input=key))
        raise_errors(results, "importing the cluster certificate", "qdevice-import-failed")

    def undo(self, system: System, memo: None) -> None:
        return None  # the stores go back with node-certdb's undo
