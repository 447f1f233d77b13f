"""Fixtures shared by every test folder: the `lab` factory (pvestrap.lab.testing)."""

from pvestrap.lab.testing import lab  # noqa: F401  (registers the fixture)
