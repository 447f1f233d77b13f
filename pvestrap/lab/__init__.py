"""The lab: cluster "nodes" on one machine, each a set of namespaces, with real daemons.

Each node is a process holding its own network, mount and UTS namespaces (hostname
`<prefix>-nK`, a private /etc and /root as overlays, its own /run, /var/lib/corosync, /var/log),
with one NIC per link network (`ethL`, 10.254.L.K/24) and a spare unconfigured `eth9`. The link
networks are bridges in a switch namespace of the lab, so nothing lands in the root namespace.
Impairments (delay, jitter, loss, filtered/closed ports, clock offsets, hosts entries, MTU) are
real: a user-space delay line, nftables inside the node, libfaketime. State lives in
/run/pvestrap-lab/<prefix>/; `down` also removes what a crashed run left.

    from pvestrap.lab import Lab
    lab = Lab.up("demo", nodes=3, links=2, delay="n2:eth0=1ms")

Modules: names (what things are called), impair (flags -> values), state, build (up),
effects (impairments on a running lab), services (corosync, chrony, sshd), teardown (down),
lab (the API), cluster (the lab as a ClusterPlan), testing (the pytest fixture); holder.py,
detach.py and forwarder.py run as standalone scripts. `up --pve 8|9`: pvestack builds Proxmox
VE's real cluster stack (pmxcfs, pvecm) from Proxmox's source once per machine, pvenode runs it in
every node, with pve_systemctl.py as the nodes' systemctl.
"""

from pvestrap.lab.lab import Lab, LabNode

__all__ = ["Lab", "LabNode"]
