"""Real ifupdown2 inside lab nodes, on the spare NICs' shared network.

Every node's spare NIC (eth9) is cabled to one bridge of the switch namespace with no address
anywhere, so a cluster network that exists nowhere yet can be created on it. `ifreload -a` run
inside a node reads that node's own /etc/network/interfaces and keeps its state in the node's
own folders (/run/network, /var/tmp/network): it configures the node's NICs and nothing else.
The root namespace is only read here (`ip -j addr`), never configured.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pvestrap.lab import names

pytestmark = pytest.mark.lab

NETWORK = "10.254.77"
STANZA = "\nauto eth9\niface eth9 inet static\n\taddress {address}/24\n"


def root_addresses() -> list:
    """The root namespace's interfaces and addresses (read only)."""
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    return sorted((i["ifname"], sorted(a["local"] for a in i.get("addr_info", ())))
                  for i in json.loads(out))


def spare(lab, index: int) -> dict:
    out = lab.exec(index, ["ip", "-j", "addr", "show", "dev", names.SPARE_NIC]).stdout
    return json.loads(out)[0]


def carrier(lab, index: int) -> str:
    return lab.exec(index, ["cat", f"/sys/class/net/{names.SPARE_NIC}/carrier"]).stdout.strip()


def ping(lab, index: int, address: str) -> int:
    return lab.exec(index, ["ping", "-n", "-c", "1", "-W", "2", address]).returncode


def test_ifreload_in_a_node_configures_its_spare_nic_only(lab):
    two = lab(nodes=2, links=1)
    root_before = root_addresses()
    host_state = sorted(os.listdir("/var/tmp/network"))
    for index in (1, 2):
        path = two.node(index).path("/etc/network/interfaces")
        path.write_text(path.read_text() + STANZA.format(address=f"{NETWORK}.{index}"))
        done = two.exec(index, ["ifreload", "-a"])
        assert done.returncode == 0, done.stderr
        info = spare(two, index)
        assert "LOWER_UP" in info["flags"], info
        assert [a["local"] for a in info["addr_info"] if a["family"] == "inet"] == \
            [f"{NETWORK}.{index}"]
        assert (two.node(index).root / "var/tmp/network/ifstatenew").exists()
    assert ping(two, 1, f"{NETWORK}.2") == 0  # the spare NICs share one network
    eth0 = json.loads(two.exec(1, ["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)[0]
    assert [a["local"] for a in eth0["addr_info"] if a["family"] == "inet"] == \
        [two.node(1).address(0)]
    assert root_addresses() == root_before
    assert sorted(os.listdir("/var/tmp/network")) == host_state


def test_carrier_off_takes_the_spare_nics_carrier_away(lab):
    two = lab(nodes=2, links=1)
    for index in (1, 2):
        two.exec(index, ["ip", "addr", "add", f"{NETWORK}.{index}/24", "dev", names.SPARE_NIC])
        two.exec(index, ["ip", "link", "set", names.SPARE_NIC, "up"])
    assert carrier(two, 2) == "1" and ping(two, 1, f"{NETWORK}.2") == 0
    items = two.impair(carrier="n2:eth9=off")
    assert [i.flag(two.prefix) for i in items] == [f"--carrier {two.node(2).name}:eth9=off"]
    assert carrier(two, 2) == "0"
    assert "NO-CARRIER" in spare(two, 2)["flags"]
    assert carrier(two, 1) == "1"
    assert ping(two, 1, f"{NETWORK}.2") != 0
    assert two.impair(carrier="n2:eth9=on") == ()
    assert carrier(two, 2) == "1"
