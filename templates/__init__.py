"""Jinja2 templates for corosync.conf, datacenter.cfg and interfaces (package data)."""
