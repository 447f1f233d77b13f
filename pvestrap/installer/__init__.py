"""Proxmox's automated installer, as the core knows it: its answer.toml format and rules
(`rules`), the installer settings of a cluster answer file (`settings`), a node's answer.toml
rendered from the plan (`answer`) and the settings checked by the installer's rules (`validate`).
The ISO side (pvestrap.iso) builds on this package."""
