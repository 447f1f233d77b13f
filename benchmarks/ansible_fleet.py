"""A fleet of clusters from one ansible-playbook run, next to the same clusters built one after
another with the CLI, measured in the same run.

    sudo .venv/bin/python benchmarks/ansible_fleet.py [--clusters 4] [--nodes 4] [--links 2]

Both sides start from a fresh lab of CLUSTERS x NODES nodes (lab set-up and sshd not timed) and
build the same clusters from the same answer files (rendered from `pvestrap lab inventory
--clusters` by the collection's fleet step):

- ansible: `ansible-playbook pvestrap.cluster.site` with forks = every node: fleet preflight,
  shipping the single-file pvestrap, responders, preflight with probes, create, joins, status.
- cli: for each cluster in turn, inside its first node: `pvestrap preflight --mesh` (agents over
  SSH), `pvestrap apply --yes` on the create node, then on the other nodes at once (joins take
  turns under the member lock), until every node is quorate with all members.

The clock runs until every cluster is quorate with all its nodes (checked after each side).
Prints both times and the ratio cli / ansible, and a JSON line. Needs ansible-core in this
Python's environment (pip install -e '.[test]'); the collection is built from ansible/ and
installed into a temporary folder (no downloads). Labs are removed afterwards, also on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pvestrap import fleet
from pvestrap.corosync.status import StatusUnparsable, parse_quorum_status
from pvestrap.lab import teardown
from pvestrap.lab.inventory import inventory, split
from pvestrap.lab.lab import Lab
from pvestrap.lab.hostcheck import new_prefix, unavailable

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PVESTRAP = [sys.executable, "-m", "pvestrap"]
TIMEOUT = 900


def install_collection(work: Path) -> dict[str, str]:
    """Build ansible/ and install it into WORK; the environment ansible-playbook runs with."""
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(HERE.parent /
                    "ansible"), "--output-path", str(work)], check=True, capture_output=True)
    built = next(work.glob("pvestrap-cluster-*.tar.gz"))
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline",
                    str(built), "-p", str(work / "collections")], check=True,
                   capture_output=True)
    return {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(work),
            "ANSIBLE_COLLECTIONS_PATH": str(work / "collections"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"), "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "LANG": "C.UTF-8"}


def quorate_members(lab: Lab, index: int) -> int:
    try:
        result = lab.exec(index, ["corosync-quorumtool", "-s"], timeout=60)
    except subprocess.TimeoutExpired:
        return 0
    try:
        status = parse_quorum_status(result.stdout) if result.returncode == 0 else None
    except StatusUnparsable:
        return 0
    return len(status.nodes_only) if status and status.quorate else 0


def check_built(lab: Lab, groups: list[list[int]]) -> None:
    for indexes in groups:
        for i in indexes:
            if quorate_members(lab, i) != len(indexes):
                raise SystemExit(f"n{i} is not quorate with {len(indexes)} members")


def ansible_side(clusters: int, nodes: int, links: int, env: dict, work: Path) -> float:
    lab = Lab.up(new_prefix("bq"), clusters * nodes, links)
    try:
        lab.start("sshd")
        path = work / "inventory.yml"
        path.write_text(json.dumps(inventory(lab.state, clusters)))
        started = time.monotonic()
        run = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(path),
                              "pvestrap.cluster.site", "-f", str(clusters * nodes),
                              "-e", f"pvestrap_build_dir={work}/build"],
                             capture_output=True, text=True, env=env, timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        if run.returncode != 0:
            raise SystemExit(f"ansible-playbook failed:\n{run.stdout[-3000:]}")
        check_built(lab, split(clusters * nodes, clusters))
        return elapsed
    finally:
        teardown.down(lab.prefix)


def answer_files(lab: Lab, clusters: int, env: dict, work: Path) -> list[Path]:
    """The same answer files the collection renders: the fleet step on the lab's inventory."""
    path = work / "cli-inventory.yml"
    path.write_text(json.dumps(inventory(lab.state, clusters)))
    export = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(path), "--list",
                             "--export"], capture_output=True, text=True, env=env, check=True)
    out = []
    for group in fleet.cluster_groups(json.loads(export.stdout)):
        if group.plan is None:
            raise SystemExit(group.error.render())
        out.append(work / f"cli-{group.group}.toml")
        out[-1].write_text(group.answers)
    return out


def cli_cluster(lab: Lab, indexes: list[int], answers: Path) -> None:
    first = indexes[0]
    mesh = lab.exec(first, [*PVESTRAP, "preflight", "--mesh", "--answers", str(answers),
                            "--remote-command", " ".join(PVESTRAP)], timeout=TIMEOUT)
    if mesh.returncode != 0:
        raise SystemExit(f"preflight --mesh failed:\n{mesh.stdout[-2000:]}{mesh.stderr}")

    def apply(index: int) -> None:
        done = lab.exec(index, [*PVESTRAP, "apply", "--answers", str(answers), "--node",
                                lab.node(index).name, "--yes"], timeout=TIMEOUT)
        if done.returncode != 0:
            raise SystemExit(f"apply on n{index} failed:\n{done.stdout[-2000:]}{done.stderr}")

    apply(first)
    with ThreadPoolExecutor(max_workers=len(indexes)) as pool:
        list(pool.map(apply, indexes[1:]))


def cli_side(clusters: int, nodes: int, links: int, env: dict, work: Path) -> float:
    lab = Lab.up(new_prefix("bc"), clusters * nodes, links)
    try:
        lab.start("sshd")
        files = answer_files(lab, clusters, env, work)
        groups = split(clusters * nodes, clusters)
        started = time.monotonic()
        for indexes, answers in zip(groups, files):
            cli_cluster(lab, indexes, answers)
        check_built(lab, groups)
        return time.monotonic() - started
    finally:
        teardown.down(lab.prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=4, help="nodes per cluster")
    parser.add_argument("--links", type=int, default=2)
    args = parser.parse_args()
    reason = unavailable()
    if reason or not (BIN / "ansible-playbook").exists():
        print(f"cannot measure: {reason or 'ansible-core is not installed'}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        env = install_collection(work)
        one_run = ansible_side(args.clusters, args.nodes, args.links, env, work)
        in_turn = cli_side(args.clusters, args.nodes, args.links, env, work)
    ratio = in_turn / one_run
    print(f"{args.clusters} clusters x {args.nodes} nodes, {args.links} links")
    print(f"  ansible-playbook, one run:       {one_run:7.1f} s")
    print(f"  CLI, one cluster after another:  {in_turn:7.1f} s")
    print(f"  ratio CLI / ansible:             {ratio:7.2f}")
    print(json.dumps({"benchmark": "ansible_fleet", "clusters": args.clusters,
                      "nodes": args.nodes, "links": args.links,
                      "ansible_s": round(one_run, 1), "cli_s": round(in_turn, 1),
                      "ratio_cli_over_ansible": round(ratio, 2)}))
    return 0


if __name__ == "__main__":
    guard.run(main)
