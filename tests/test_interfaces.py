"""The /etc/network/interfaces editor: plan-owned stanzas change, every other byte stays."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvestrap.errors import UserError
from pvestrap.interfaces import edit_interfaces, parse_interfaces
from pvestrap.plan import InterfaceStanza as Stanza

GOLDEN = pathlib.Path(__file__).parent / "golden"
PVE1 = (Stanza("eno2", "10.10.10.1/24", 9000), Stanza("eno3", "10.10.20.1/24"),
        Stanza("vmbr1", "10.10.30.1/24", kind="bridge", bridge_ports="eno4"))


def test_golden_installer_file_edit():
    """interfaces-installer is laid out as PVE's installer writes it (Proxmox/Install.pm: lo,
    each NIC `inet manual`, vmbr0 over eno1, two newlines, `source`), plus a user's comment and
    post-up line in eno3. Expected, by hand: eno2/eno3 replaced in place with `auto` before them
    and the user's lines kept after the address; vmbr1 new, in PVE's option order, before the
    trailing `source` line; everything else unchanged."""
    before = (GOLDEN / "interfaces-installer").read_text()
    after = edit_interfaces(before, PVE1)
    assert after == (GOLDEN / "interfaces-pve1").read_text()
    assert edit_interfaces(after, PVE1) == after


def test_parse_keeps_every_byte_and_groups_stanzas():
    text = (GOLDEN / "interfaces-pve1").read_text()
    blocks = parse_interfaces(text)
    assert "".join(b.text for b in blocks) == text
    eno3 = next(b for b in blocks if b.name == "eno3")
    assert eno3.lines == ("iface eno3 inet static\n", "\taddress 10.10.20.1/24\n",
                          "# corosync backup link, switch port 12\n",
                          "\tpost-up ethtool -K eno3 gro off\n")
    assert [b.kind for b in blocks if b.kind != "text"] == [
        "auto", "iface", "iface", "auto", "iface", "auto", "iface", "auto", "iface", "iface",
        "auto", "iface", "source"]


def test_options_continue_across_blank_lines_like_ifupdown2():
    blocks = parse_interfaces("iface eno2 inet static\n\taddress 10.0.0.1/24\n\n\tmtu 9000\n\n")
    assert blocks[0].lines == ("iface eno2 inet static\n", "\taddress 10.0.0.1/24\n", "\n",
                               "\tmtu 9000\n")
    assert [key for _, key, _ in blocks[0].options()] == ["address", "mtu"]


def test_already_right_stanza_with_other_indentation_is_left_alone():
    text = "auto eno2\niface eno2 inet static\n    address 10.10.10.1/24\n    mtu 9000\n"
    assert edit_interfaces(text, [Stanza("eno2", "10.10.10.1/24", 9000)]) == text


def test_changed_address_keeps_the_users_other_options_and_indent():
    text = ("auto eno2\niface eno2 inet static\n  address 10.9.9.1/24\n  netmask 255.255.255.0\n"
            "  post-up echo hi\n")
    out = edit_interfaces(text, [Stanza("eno2", "10.10.10.1/24")])
    assert out == "auto eno2\niface eno2 inet static\n  address 10.10.10.1/24\n  post-up echo hi\n"


def test_unset_mtu_leaves_the_users_mtu():
    text = "auto eno2\niface eno2 inet manual\n\tmtu 9000\n"
    out = edit_interfaces(text, [Stanza("eno2", "10.10.10.1/24")])
    assert out == "auto eno2\niface eno2 inet static\n\taddress 10.10.10.1/24\n\tmtu 9000\n"


def test_new_stanza_at_end_of_file_without_source_or_final_newline():
    out = edit_interfaces("auto lo\niface lo inet loopback", [Stanza("eno2", "10.10.10.1/24")])
    assert out == ("auto lo\niface lo inet loopback\n\nauto eno2\niface eno2 inet static\n"
                   "\taddress 10.10.10.1/24\n")


def test_new_stanza_into_an_empty_file():
    assert edit_interfaces("", [Stanza("eno2", "10.10.10.1/24", 1500)]) == (
        "auto eno2\niface eno2 inet static\n\taddress 10.10.10.1/24\n\tmtu 1500\n")


def test_comment_above_source_stays_with_it():
    text = "auto lo\niface lo inet loopback\n\n# snippets\nsource /etc/network/interfaces.d/*\n"
    out = edit_interfaces(text, [Stanza("eno2", "10.10.10.1/24")])
    assert out == ("auto lo\niface lo inet loopback\n\nauto eno2\niface eno2 inet static\n"
                   "\taddress 10.10.10.1/24\n\n# snippets\nsource /etc/network/interfaces.d/*\n")


def test_auto_line_after_the_stanza_does_not_count():
    """ifupdown2 ignores `auto X` for a stanza above it (ifquery -a then finds nothing)."""
    text = "iface eno2 inet manual\n\nauto eno2\n"
    out = edit_interfaces(text, [Stanza("eno2", "10.10.10.1/24")])
    assert out == "auto eno2\niface eno2 inet static\n\taddress 10.10.10.1/24\n\nauto eno2\n"


def test_existing_auto_line_listing_several_names_is_enough():
    text = "auto lo eno2\niface lo inet loopback\n\niface eno2 inet manual\n"
    out = edit_interfaces(text, [Stanza("eno2", "10.10.10.1/24")])
    assert out == ("auto lo eno2\niface lo inet loopback\n\niface eno2 inet static\n"
                   "\taddress 10.10.10.1/24\n")


def test_ipv6_address_gets_its_own_inet6_stanza():
    text = "iface eno2 inet manual\n"
    out = edit_interfaces(text, [Stanza("eno2", "fd42:10::1/64")])
    assert out == ("iface eno2 inet manual\n\nauto eno2\niface eno2 inet6 static\n"
                   "\taddress fd42:10::1/64\n")


def test_bridge_without_address_or_ports():
    out = edit_interfaces("", [Stanza("vmbr9", kind="bridge", gateway=None)])
    assert out == ("auto vmbr9\niface vmbr9 inet manual\n\tbridge-ports none\n\tbridge-stp off\n"
                   "\tbridge-fd 0\n")


def test_bridge_with_gateway_and_mtu_in_pve_order():
    out = edit_interfaces("", [Stanza("vmbr1", "10.1.0.2/24", 9000, "bridge", "eno3 eno4",
                                      "10.1.0.1")])
    assert out.splitlines()[2:] == ["\taddress 10.1.0.2/24", "\tgateway 10.1.0.1",
                                    "\tbridge-ports eno3 eno4", "\tbridge-stp off",
                                    "\tbridge-fd 0", "\tmtu 9000"]


def test_duplicate_stanza_in_the_file_is_refused_with_lines():
    text = "iface eno2 inet manual\n\niface eno2 inet manual\n"
    with pytest.raises(UserError) as err:
        edit_interfaces(text, [Stanza("eno2", "10.10.10.1/24")])
    assert err.value.code == "interfaces-duplicate-stanza"
    assert "lines 1, 3" in err.value.message


def test_address_on_a_bridge_port_is_refused():
    text = (GOLDEN / "interfaces-installer").read_text()
    with pytest.raises(UserError) as err:
        edit_interfaces(text, [Stanza("eno1", "10.10.10.1/24")])
    assert err.value.code == "interface-is-bridge-port"


def test_same_interface_planned_twice_is_refused():
    with pytest.raises(UserError) as err:
        edit_interfaces("", [Stanza("eno2", "10.0.0.1/24"), Stanza("eno2", "10.0.1.1/24")])
    assert err.value.code == "interface-duplicate"


# -- properties ------------------------------------------------------------------------------------

NICS = ["eno1", "eno2", "eno3", "eno4", "enp1s0f0", "enp1s0f1", "ens18", "ens19"]
COMMENT = st.from_regex(r"\A# [a-zA-Z0-9 :,./-]{0,30}\Z")


@st.composite
def installer_files(draw) -> tuple[str, list[str]]:
    """An installer-like file with a user's edits: returns (text, NICs free for the plan)."""
    nics = draw(st.lists(st.sampled_from(NICS), min_size=2, max_size=6, unique=True))
    indent = draw(st.sampled_from(["\t", "    ", "  "]))
    gap = lambda: "\n" * draw(st.integers(1, 2))  # noqa: E731
    maybe_comment = lambda: draw(COMMENT) + "\n" if draw(st.booleans()) else ""  # noqa: E731
    parts = ["auto lo\niface lo inet loopback\n", gap()]
    mgmt, others = nics[0], nics[1:]
    parts.append(f"iface {mgmt} inet manual\n" + gap())
    parts.append(maybe_comment() + f"auto vmbr0\niface vmbr0 inet static\n"
                 f"{indent}address 192.168.77.11/24\n{indent}gateway 192.168.77.1\n"
                 f"{indent}bridge-ports {mgmt}\n{indent}bridge-stp off\n{indent}bridge-fd 0\n")
    for nic in others:
        parts.append(gap() + maybe_comment())
        if draw(st.booleans()):
            parts.append(f"auto {nic}\n")
        parts.append(f"iface {nic} inet manual\n")
        if draw(st.booleans()):
            parts.append(f"{indent}post-up ethtool -K {nic} gro off\n")
        if draw(st.booleans()):
            parts.append(maybe_comment() + f"{indent}mtu {draw(st.sampled_from([1500, 9000]))}\n")
    if draw(st.booleans()):
        parts.append(gap() + maybe_comment() + "source /etc/network/interfaces.d/*\n")
    text = "".join(parts)
    if draw(st.booleans()):
        text = text.rstrip("\n")
    return text, others


@st.composite
def edits(draw) -> tuple[str, list[Stanza]]:
    text, free = draw(installer_files())
    chosen = draw(st.lists(st.sampled_from(free + ["eno7", "ens20"]), unique=True, max_size=4))
    stanzas = []
    for i, nic in enumerate(chosen):
        bridged = draw(st.booleans())
        address = f"10.254.{i}.{draw(st.integers(1, 254))}/24"
        mtu = draw(st.sampled_from([None, 1500, 9000]))
        if bridged:
            stanzas.append(Stanza(f"vmbr{i + 1}", draw(st.sampled_from([None, address])), mtu,
                                  "bridge", nic))
        else:
            stanzas.append(Stanza(nic, address, mtu))
    return text, stanzas


def owned_keys(stanza: Stanza) -> set[str]:
    keys = {"address", "netmask"} if stanza.address else set()
    keys |= {"gateway"} if stanza.gateway else set()
    keys |= {"mtu"} if stanza.mtu else set()
    if stanza.kind == "bridge":
        keys |= {"bridge-ports", "bridge-stp", "bridge-fd"}
    return keys


def family(stanza: Stanza) -> str:
    return "inet6" if stanza.address and ":" in stanza.address else "inet"


def user_lines(text: str, stanzas: list[Stanza]) -> list[str]:
    """The lines of TEXT the plan does not own: all but owned stanzas' headers and options."""
    owned = {(s.name, family(s)): owned_keys(s) for s in stanzas}
    keep = []
    for block in parse_interfaces(text):
        keys = owned.get((block.name, block.family)) if block.kind == "iface" else None
        if keys is None:
            keep += block.lines
            continue
        option_keys = {i: key for i, key, _ in block.options()}
        keep += [line for i, line in enumerate(block.lines)
                 if i > 0 and option_keys.get(i) not in keys]
    return keep


def is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@settings(max_examples=300, deadline=None)
@given(edits())
def test_random_edits_keep_every_user_line_and_are_idempotent(case):
    text, stanzas = case
    assert "".join(b.text for b in parse_interfaces(text)) == text
    out = edit_interfaces(text, stanzas)
    assert edit_interfaces(out, stanzas) == out
    kept = user_lines(text, stanzas)
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"  # a last line without newline gains one when a stanza follows it
    out_lines = [b for block in parse_interfaces(out) for b in block.lines]
    if out_lines and not out_lines[-1].endswith("\n"):
        out_lines[-1] += "\n"
    assert is_subsequence(kept, out_lines)
    blocks = parse_interfaces(out)
    for stanza in stanzas:
        (index,) = [i for i, b in enumerate(blocks)
                    if b.name == stanza.name and b.family == family(stanza)]
        block = blocks[index]
        options = {(key, value) for _, key, value in block.options() if key in owned_keys(stanza)}
        assert ("address", stanza.address) in options or not stanza.address
        assert ("mtu", str(stanza.mtu)) in options or not stanza.mtu
        assert any(b.brings_up(stanza.name) for b in blocks[:index])  # ifupdown2 needs it first
    if "source " in text:
        assert out.rstrip("\n").splitlines()[-1].startswith("source ")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("iface auto allow-hotplug source eno1 #\t\n")),
               max_size=200))
def test_parse_never_loses_a_byte(text):
    assert "".join(b.text for b in parse_interfaces(text)) == text
