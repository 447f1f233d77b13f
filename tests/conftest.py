"""Fixtures shared by every test folder: the `lab` factory (pvestrap.lab.testing) and the hook
that lets it print a failed test's lab status and logs before tearing the lab down."""

from pvestrap.lab.testing import lab, pytest_runtest_makereport  # noqa: F401  (registered here)
