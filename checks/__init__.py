"""Preflight checks: one module per check family, the probe protocol and the runner."""
