"""TEST STAND-IN support: `pvecm qdevice setup ADDRESS` / `pvecm qdevice remove`. NOT PROXMOX.

As strict as pve-cluster's src/PVE/CLI/pvecm.pm (setup_qdevice, remove_qdevice): the address
must be an IP (format 'ip'), --network a CIDR, the node must be in a cluster, every member
online; "QDevice already configured!" and an odd node count refuse unless --force (which then
picks lms); an existing certificate store refuses unless --force (which deletes it). Setup
writes the device section the way pvecm does (model net, tls on, votes 1 only for ffsplit) with
config_version + 1; remove deletes it and /etc/corosync/qdevice.

What is SIMULATED: the SSH to the qnetd host and the members, the certificates (a marker file
in the node's store) and corosync-qdevice itself (the simulated cluster counts the QDevice's
votes as soon as it is configured).
"""

from __future__ import annotations

import ipaddress
import shutil
import sys

import _standin as S

STORE = "/etc/corosync/qdevice/net/nssdb"


def _verify(opts: dict) -> None:
    errors = []
    try:
        ipaddress.ip_address(opts.get("address", ""))
    except ValueError:
        errors.append("address: invalid format - value does not look like a valid IP address")
    if "network" in opts:
        try:
            ipaddress.ip_network(opts["network"], strict=False)
            if "/" not in opts["network"]:
                raise ValueError
        except ValueError:
            errors.append("network: invalid format - value does not look like a valid CIDR "
                          "network")
    if errors:
        raise S.Die("400 Parameter verification failed.\n" + "\n".join(errors))


def _online(cluster: dict) -> None:
    for name in sorted(n["name"] for n in cluster["nodes"]):
        if name in cluster.get("offline", ()):
            raise S.Die(f"All nodes must be online! Node {name} is offline, aborting.")


def setup(args: list[str], local_cluster) -> int:
    opts = S.parse_options(args, {"network": "str", "force": "bool"}, ["address"])
    _verify(opts)
    cluster = local_cluster()
    _online(cluster)
    force = bool(opts.get("force"))
    if cluster.get("qdevice") and not force:
        raise S.Die("QDevice already configured!")
    algorithm = "ffsplit"
    if len(cluster["nodes"]) & 1:
        if not force:
            raise S.Die("Clusters with an odd node count are not officially supported!")
        algorithm = "lms"
    store = S.under(STORE)
    if store.is_dir():
        if not force:
            raise S.Die("QDevice certificate store already initialised, set force to delete!")
        shutil.rmtree(store)
    for line in ("INFO: initializing qnetd server", "INFO: copying CA cert and initializing on "
                 "all nodes", "INFO: generating cert request", "INFO: copying exported cert "
                 "request to qnetd server", "INFO: sign and export cluster cert",
                 "INFO: copy exported CRT", "INFO: import certificate",
                 "INFO: copy and import pk12 cert to all nodes"):
        print(f"\n{line}", flush=True)
    store.mkdir(parents=True)
    (store / "cert9.db").write_text("stand-in: simulated NSS database\n")
    if cluster.get("qdevice"):  # pvecm: "must not be forced!"
        raise S.Die("Qdevice already configured, must be removed before setting up new one!")
    print("\nINFO: add QDevice to cluster configuration", flush=True)
    cluster["qdevice"] = {"host": opts["address"], "algorithm": algorithm}
    cluster["config_version"] += 1
    _save(cluster)
    for node in sorted(n["name"] for n in cluster["nodes"]):
        print(f"\nINFO: start and enable corosync qdevice daemon on node '{node}'...")
    return 0


def remove(args: list[str], local_cluster) -> int:
    S.parse_options(args, {}, [])
    cluster = local_cluster()
    _online(cluster)
    if not cluster.get("qdevice"):
        raise S.Die("No QDevice configured!")
    del cluster["qdevice"]
    cluster["config_version"] += 1
    _save(cluster)
    shutil.rmtree(S.under("/etc/corosync/qdevice"), ignore_errors=True)
    print("\nRemoved Qdevice.")
    return 0


def _save(cluster: dict) -> None:
    S.save_cluster(cluster)
    S.write_node_files(cluster, bytes.fromhex(cluster.get("authkey_hex") or "00" * 256))


def main(args: list[str], local_cluster) -> int:
    commands = {"setup": setup, "remove": remove}
    if not args or args[0] not in commands:
        print("USAGE: pvecm qdevice <setup|remove> ... (TEST STAND-IN)", file=sys.stderr)
        raise S.Die("400 unknown command 'pvecm qdevice" + (f" {args[0]}'" if args else "'"))
    return commands[args[0]](args[1:], local_cluster)
