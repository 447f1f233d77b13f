"""Link addresses reach `ping -I` in scripts run by sh on every member (issue: an IPv6 scope id
such as `fe80::1%x;touch PWNED;true` passed validation and ran). Now the one link-address rule
refuses what corosync would not take, and every script quotes what it carries."""

from __future__ import annotations

import shlex
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from pvestrap import answers
from pvestrap.apply.link_plan import ping_command
from pvestrap.errors import ValidationFailed
from pvestrap.plan import link_address_problem

HOSTILE = "fe80::1%x;touch PWNED;true"


def test_a_scope_id_carrying_a_command_is_refused_with_its_code():
    assert link_address_problem(HOSTILE)[0] == "address-scope-invalid"
    assert link_address_problem("fe80::1%eth1") is None
    assert link_address_problem("10.0.0.1") is None


def test_addresses_corosync_cannot_bind_are_refused():
    for text in ("0.0.0.0", "::", "127.0.0.1", "::1", "224.0.0.1", "ff02::1",
                 "255.255.255.255"):
        assert link_address_problem(text)[0] == "address-not-unicast", text
    assert link_address_problem("pve1.example")[0] == "address-not-ip"


def test_answer_validate_names_the_key_and_exits_2(tmp_path):
    text = answers.example().replace('"10.10.10.1"', f'"{HOSTILE}"', 1)
    assert HOSTILE in text
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    try:
        answers.load(path)
    except ValidationFailed as exc:
        codes = {f.code for f in exc.findings}
    else:
        raise AssertionError("the hostile address was accepted")
    assert "address-scope-invalid" in codes


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_every_accepted_address_reaches_the_shell_as_one_word(scope):
    """Whatever the validator accepts, the script parses back to the intended argv."""
    text = f"fe80::1%{scope}"
    if link_address_problem(text) is not None:
        return
    script = ping_command(3, text, "fe80::2")
    assert shlex.split(script) == ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1",
                                   "-I", text, "fe80::2"]


def test_even_an_unvalidated_address_does_not_run_in_the_member_script(tmp_path):
    """Defence in depth: the quoting alone keeps the payload inert when sh runs the script."""
    script = ping_command(1, HOSTILE.replace("PWNED", str(tmp_path / "PWNED")), "::1")
    subprocess.run(["sh", "-c", script + " 2>/dev/null || true"], timeout=30)
    assert not (tmp_path / "PWNED").exists()
