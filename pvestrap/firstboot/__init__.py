"""First boot, unattended: from an answer file to a node that is part of a quorate cluster.

Every node of the answer file runs this at its first boot, at about the same time, with no
idea which of the others are up yet. In order:

1. Done already (the marker under the state folder)? Then nothing at all happens.
   Otherwise the network phase: this node's interface stanzas of the answer file (a cluster NIC
   the installer left unconfigured) written and brought up, as `pvestrap apply` does it
   (network.py); nothing else can reach the peers over that link before.
2. Answer probes (checks.responder, in a thread of this process) from now on.
3. The preflight: the local checks; then this node tells the others it is "checked" and waits,
   bounded, until every other node of the file is too, saying who is still missing (no node
   probes while another still runs its CPU-heavy start and local checks); then the probes of
   every peer and link. Any FAIL stops here, before anything changed (when all FAILs are
   network ones, a peer may have been restarting: it measures again, twice at most). The
   report goes to stdout (the journal) and, as JSON, to the state folder.
4. The creating node waits until every peer's preflight passed, then creates. With plain
   corosync it holds its own join lock from before it answers its first probe until it is a
   member: the others apply as soon as their own preflight passed (which needed the creator's
   answers, so the lock is held by then), queue for that lock while it measures and creates,
   and join in one configuration change once it lets the lock go (pvestrap.apply.batch). With
   Proxmox VE (`pvecm add`, one node at a time) each waits until the node before it in nodeid
   order is a member. Retried while the cluster is busy or not there yet.
5. With `[qdevice]`, the node that joins last sets the QDevice up once every node is a member
   (qdevice.py).
6. Done marker; keep answering probes until every node is a member (bounded), so no peer that
   is still in its preflight sees this node go dark.

A rerun (the hook runs once per boot until it succeeds; a node may be killed or rebooted at any
point) picks up where the last run stopped: a node whose preflight passed, or that is already
in the cluster's corosync.conf, goes straight to the apply, which is idempotent and finishes
what is missing.

Entry point: `pvestrap.firstboot.entry.main(argv) -> int` (argparse, no typer: the ISO's
first-boot hook carries only pvestrap's core), also `python3 -m pvestrap.firstboot`. Exit codes:
0 done, 1 failed (peers missing, preflight FAIL, apply failed: the next boot tries again),
2 bad input (nothing changed).

The modules, one job each: `flow` (the phases above), `entry` (the command line), `state`
(what a rerun remembers), `tokens` (the probe tokens of each stage), `presence` (this node's
responders), `waiting` (probing until the others are there), `membership` (who is in the
cluster), `applying` (create or join, retried while the cluster is busy), `network` (the
cluster NIC configured first), `qdevice` (the last node's QDevice setup).
"""

