"""pvestrap: take freshly installed Proxmox VE (or Debian + corosync) machines to a quorate
cluster."""

__version__ = "0.1.0"
