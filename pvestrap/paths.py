"""Where corosync, Proxmox VE and ifupdown2 keep the files pvestrap reads and writes: one place.

corosync reads /etc/corosync/corosync.conf and /etc/corosync/authkey (corosync's
COROSYSCONFDIR, exec/main.c and exec/totemconfig.c). On Proxmox VE, pmxcfs holds the cluster's
copy in /etc/pve/corosync.conf (the one pvecm edits; pve-cluster data/PVE/Corosync.pm), beside
datacenter.cfg, nodes/NAME/ and priv/known_hosts (data/PVE/Cluster.pm). ifupdown2 reads
/etc/network/interfaces.
"""

COROSYNC_CONF = "/etc/corosync/corosync.conf"
AUTHKEY = "/etc/corosync/authkey"
# corosync holds a lock on it until the daemon exits (exec/main.c, corosync_lock_file, in
# LOCALSTATEDIR/run) and removes it then
COROSYNC_PID = "/run/corosync.pid"
PVE_COROSYNC_CONF = "/etc/pve/corosync.conf"  # pmxcfs copy, the one pvecm edits
PVE_MEMBERS = "/etc/pve/.members"  # pmxcfs's view of the cluster (JSON, "quorate": 0|1)
CONF_PATHS = (PVE_COROSYNC_CONF, COROSYNC_CONF)  # where a node's corosync.conf is, pmxcfs first
DATACENTER_CFG = "/etc/pve/datacenter.cfg"
PVE_NODES = "/etc/pve/nodes"
PVE_KNOWN_HOSTS = "/etc/pve/priv/known_hosts"  # pvecm updatecerts keeps the nodes' keys here
INTERFACES = "/etc/network/interfaces"
