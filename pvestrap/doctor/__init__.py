"""`pvestrap doctor`: an existing cluster checked against what the Proxmox VE admin guide
(pve-docs pvecm.adoc) warns about, read-only. facts (what a node reads), view (the facts
parsed), the checks (config_checks, identity_checks, cluster_checks, knet) and run (local and
--mesh runs, one Report)."""
