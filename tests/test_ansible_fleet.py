"""The collection on the controller, with the real ansible-playbook: the fleet preflight stops
a bad fleet before any node is contacted (the nodes here do not exist: `.invalid` names)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from pvestrap.iso import hook

pytestmark = pytest.mark.slow


def inventory(tmp_path, names: dict[str, str], hosts: dict[str, list[str]], extra=None):
    groups = {}
    for group, name in names.items():
        groups[group] = {
            "vars": {"pvestrap_cluster": {"name": name, **(extra or {}).get(group, {})}},
            "hosts": {h: {"ansible_host": f"{h}.invalid", "pvestrap_node": {
                "link0": f"10.7.0.{int(h[-1])}"}} for h in hosts[group]}}
    doc = {"all": {"children": {"pvestrap_clusters": {
        "vars": {"pvestrap_links": [{"number": 0, "network": "10.7.0.0/24"}]},
        "children": groups}}}}
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps(doc))
    return path


def play(ansible_collection, path):
    return ansible_collection["play"](path, timeout=300)


def recap(ansible_collection, result) -> dict:
    return ansible_collection["recap"](result.stdout)


def test_the_collection_builds_with_ansible_galaxy(ansible_collection):
    assert ansible_collection["built"].name == "pvestrap-cluster-0.1.0.tar.gz"
    listing = subprocess.run(["tar", "tzf", str(ansible_collection["built"])],
                             capture_output=True, text=True, check=True).stdout.split()
    for member in ("MANIFEST.json", "plugins/modules/preflight.py",
                   "plugins/modules/apply.py", "plugins/modules/status.py",
                   "plugins/modules/fleet.py", "roles/node/tasks/main.yml",
                   "playbooks/site.yml", "README.md"):
        assert member in listing or f"./{member}" in listing, member


def test_the_same_cluster_name_in_two_groups_fails_the_fleet_naming_both(
        ansible_collection, tmp_path):
    path = inventory(tmp_path, {"rack1": "prod", "rack2": "prod"},
                     {"rack1": ["pve-n1", "pve-n2"], "rack2": ["pve-n3", "pve-n4"]})
    result = play(ansible_collection, path)
    assert result.returncode != 0
    assert "fleet-cluster-name-duplicate" in result.stdout
    assert "cluster name 'prod' is used by groups rack1 and rack2" in result.stdout
    assert recap(ansible_collection, result)["localhost"]["failed"] == 1
    assert "pve-n1" not in recap(ansible_collection, result)  # no node was contacted
    assert not (ansible_collection["work"] / "build" / "rack1.toml").exists()


def test_a_host_in_two_clusters_fails_the_fleet(ansible_collection, tmp_path):
    path = inventory(tmp_path, {"ga": "alpha", "gb": "beta"},
                     {"ga": ["pve-n1", "pve-n2"], "gb": ["pve-n3", "pve-n2"]})
    result = play(ansible_collection, path)
    assert result.returncode != 0
    assert "host pve-n2 is listed in groups ga and gb" in result.stdout
    assert "fleet-address-duplicate" in result.stdout


def test_a_bad_inventory_fails_on_the_controller_with_key_paths_and_lines(
        ansible_collection, tmp_path):
    path = inventory(tmp_path, {"ga": "alpha"}, {"ga": ["pve-n1", "pve-n2"]},
                     extra={"ga": {"colour": "red"}})
    result = play(ansible_collection, path)
    assert result.returncode != 0
    assert "fleet-group-invalid" in result.stdout
    assert re.search(r"inventory group ga \(as an answer file\):\d+: .*colour", result.stdout), \
        result.stdout
    assert "pve-n1" not in recap(ansible_collection, result)


@pytest.mark.parametrize("module", ["fleet", "fleet_report", "preflight", "apply", "status"])
def test_every_module_documents_itself(ansible_collection, module):
    doc = subprocess.run([str(ansible_collection["playbook"]).replace("-playbook", "-doc"),
                          "--json", f"pvestrap.cluster.{module}"], capture_output=True,
                         text=True, env=ansible_collection["env"], timeout=120)
    assert doc.returncode == 0, doc.stderr
    data = json.loads(doc.stdout)[f"pvestrap.cluster.{module}"]
    assert data["doc"]["options"] and data["examples"].strip()


def test_the_shipped_pvestrap_carries_every_module_the_node_modules_import():
    """The node-side modules import pvestrap from the single file the role ships: each of their
    pvestrap imports is in the fleet module's EXTRA_MODULES, and the hook builds with them."""
    plugins = Path(__file__).resolve().parent.parent / "ansible" / "plugins"
    spec = importlib.util.spec_from_file_location("fleet_module", plugins / "modules/fleet.py")
    fleet_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fleet_module)
    wanted = set()
    for name in ("modules/preflight.py", "modules/apply.py", "modules/status.py",
                 "module_utils/target.py", "module_utils/responder.py"):
        for node in ast.walk(ast.parse((plugins / name).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pvestrap"):
                for alias in node.names:  # `from pvestrap.apply import pve` imports a module
                    sub = f"{node.module}.{alias.name}"
                    package = importlib.util.find_spec(node.module).submodule_search_locations
                    wanted.add(sub if package and importlib.util.find_spec(sub) else node.module)

            elif isinstance(node, ast.Import):
                wanted |= {a.name for a in node.names if a.name.startswith("pvestrap")}
    wanted.discard("pvestrap")
    assert wanted and wanted <= set(fleet_module.EXTRA_MODULES), \
        wanted - set(fleet_module.EXTRA_MODULES)
    built = hook.build(Path(__file__).parent / "data" / "iso" / "cluster.toml",
                       extra=fleet_module.EXTRA_MODULES)
    assert set(fleet_module.EXTRA_MODULES) <= set(built.modules)
    assert built.size <= hook.MAX_BYTES


def test_a_host_outside_every_cluster_group_is_told_so(ansible_collection, tmp_path):
    path = inventory(tmp_path, {"ga": "alpha"}, {"ga": ["pve-n1"]})
    doc = json.loads(path.read_text())
    doc["all"]["children"]["pvestrap_clusters"]["hosts"] = {"stray-n9": {
        "ansible_host": "stray-n9.invalid"}}
    path.write_text(json.dumps(doc))
    result = play(ansible_collection, path)
    assert result.returncode != 0
    assert "stray-n9 is in no cluster group: put it in one child group of pvestrap_clusters" \
        in result.stdout, result.stdout
    assert recap(ansible_collection, result)["stray-n9"]["failed"] == 1
