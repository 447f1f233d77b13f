"""`pvestrap lab`: cluster nodes on this machine, in network namespaces, with impairments.

Only typer is imported here at module level; the lab library is imported inside each command.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from pvestrap.commands import group

app = group("Cluster nodes on this machine in network namespaces.")

NAME_HELP = "The lab's name (prefix of its node names); default: the only lab there is."
DELAY = typer.Option(None, "--delay", metavar="NODE:IF=3ms",
                     help="Add delay to frames leaving and entering that NIC.")
JITTER = typer.Option(None, "--jitter", metavar="NODE:IF=0.5ms",
                      help="Vary that NIC's delay by up to +- this much.")
LOSS = typer.Option(None, "--loss", metavar="NODE:IF=5%",
                    help="Drop this share of the packets the node sends on that NIC.")
DROP = typer.Option(None, "--drop", metavar="NODE:udp/PORT",
                    help="Silently drop packets to that port on the node (filtered).")
REJECT = typer.Option(None, "--reject", metavar="NODE:udp/PORT",
                      help="Answer packets to that port with ICMP port unreachable (closed).")
CLOCK = typer.Option(None, "--clock", metavar="NODE=+2s",
                     help="Programs started in the node see the clock this far off.")
HOSTS = typer.Option(None, "--hosts", metavar="NODE=loopback|missing",
                     help="The node's own name in its /etc/hosts: 127.0.1.1, or absent.")
MTU = typer.Option(None, "--mtu", metavar="NODE:IF=1200", help="Set the NIC's MTU in the node.")
CARRIER = typer.Option(None, "--carrier", metavar="NODE:IF=off|on",
                       help="Take the NIC's carrier away (its switch port down), or give it back.")


def _flags(**values) -> dict:
    return {k: v for k, v in values.items() if v}


@app.command("up")
def up(
    nodes: int = typer.Option(3, "--nodes", "-n", help="How many nodes (1..99)."),
    links: int = typer.Option(1, "--links", "-l", help="How many corosync link networks (1..8)."),
    name: str = typer.Option("lab", "--name", help="The lab's name: nodes are NAME-n1, ..."),
    delay: Optional[List[str]] = DELAY, jitter: Optional[List[str]] = JITTER,
    loss: Optional[List[str]] = LOSS, drop: Optional[List[str]] = DROP,
    reject: Optional[List[str]] = REJECT, clock: Optional[List[str]] = CLOCK,
    hosts: Optional[List[str]] = HOSTS, mtu: Optional[List[str]] = MTU,
    carrier: Optional[List[str]] = CARRIER,
    pve: Optional[str] = typer.Option(
        None, "--pve", metavar="8|9", help="Run Proxmox VE's real cluster stack (pmxcfs, pvecm) "
        "of that release in every node, built once from Proxmox's source and cached."),
    pve_sources: Optional[str] = typer.Option(
        None, "--pve-sources", metavar="DIR", help="Folder with Proxmox's source tarballs or "
        "checkouts (pve-cluster, pve-common, pve-access-control, pve-apiclient); default: "
        "$PVESTRAP_PVE_SOURCES, else shared/oracle/proxmox beside the project checkout."),
    qnetd: bool = typer.Option(False, "--qnetd", help="Add a qnetd host NAME-qnetd (not a "
                               "cluster node; .100 on every link) running corosync-qnetd and "
                               "sshd, for a QDevice."),
) -> None:
    """Create N nodes, each with its own namespaces, hostname, /etc and one NIC per link."""
    from pvestrap.lab.lab import Lab

    lab = Lab.up(name, nodes, links, pve=pve, pve_sources=pve_sources, qnetd=qnetd,
                 **_flags(delay=delay, jitter=jitter, loss=loss, drop=drop,
                          reject=reject, clock=clock, hosts=hosts, mtu=mtu, carrier=carrier))
    _print_status(lab.status())
    typer.echo(f"\nnext: pvestrap lab exec --name {name} n1 -- hostname; "
               f"pvestrap lab down --name {name}")


@app.command("down")
def down(name: Optional[str] = typer.Option(None, "--name", help="The lab to remove "
                                            "(default: every lab on this machine).")) -> None:
    """Remove a lab (or every lab): processes, namespaces, NICs and state, also leftovers."""
    from pvestrap.lab import names, teardown

    prefixes = [names.check_prefix(name)] if name else teardown.all_prefixes()
    if not prefixes:
        typer.echo("no lab to remove")
    for prefix in prefixes:
        removed = teardown.down(prefix)
        typer.echo(f"lab {prefix}: removed {removed.namespaces} namespaces and "
                   f"{removed.processes} processes")
        if removed.survivors:
            from pvestrap.errors import OperationFailed

            raise OperationFailed(f"lab {prefix}: processes {list(removed.survivors)} did not "
                                  "exit", code="lab-down-incomplete",
                                  remedy=f"run `pvestrap lab down --name {prefix}` again")


@app.command("status")
def status(
    name: Optional[str] = typer.Option(None, "--name", help=NAME_HELP + " Default: all."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List labs: nodes, addresses, impairments and running services."""
    import json

    from pvestrap.lab import names, state
    from pvestrap.lab.lab import Lab

    prefixes = [names.check_prefix(name)] if name else state.prefixes()
    found = [Lab(p).status() for p in prefixes if state.try_load(p) is not None or name]
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no lab (create one with: pvestrap lab up --nodes 3)")
    for i, one in enumerate(found):
        if i:
            typer.echo("")
        _print_status(one)


def _print_status(one: dict) -> None:
    count, links = len(one["nodes"]), one["links"]
    pve = f", Proxmox VE {one['pve']} cluster stack" if one.get("pve") else ""
    typer.echo(f"lab {one['name']}: {count} node{'s' * (count != 1)}, "
               f"{links} link{'s' * (links != 1)}, {one['phase']}{pve}")
    for node in one["nodes"]:
        addrs = " ".join(node["addresses"].values())
        running = " ".join(f"{n}({pid})" for n, pid in node["services"].items())
        mark = "" if node["up"] else "  [holder gone: run down]"
        typer.echo(f"  {node['name']:<14} {addrs}  {running}{mark}".rstrip())
    host = one.get("qnetd")
    if host:
        addrs = " ".join(host["addresses"].values())
        running = " ".join(f"{n}({pid})" for n, pid in host["services"].items())
        typer.echo(f"  {host['name']:<14} {addrs}  {running}  (qnetd host)".rstrip())
    for node in [*one["nodes"], *([host] if host else [])]:
        for old in node.get("stale", []):
            typer.echo(f"  old clock: {node['name']} pid {old['pid']} ({old['clock']}s) "
                       f"{old['command']}  [restart it for the new --clock]")
    for flag in one["impairments"]:
        typer.echo(f"  impaired: {flag}")
    if one.get("neighbours"):
        typer.echo(f"  ARP: {one['neighbours']} permanent neighbour entries (so many nodes would "
                   "fill the ARP table this machine's namespaces share; permanent ones do not "
                   "count against its limit)")


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    node: str = typer.Argument(..., help="n1, n2, ... or the full node name."),
    argv: List[str] = typer.Argument(..., help="The command (after --)."),
    name: Optional[str] = typer.Option(None, "--name", help=NAME_HELP),
) -> None:
    """Run a command inside a node: its hostname, its /etc, its network, its clock."""
    import os

    from pvestrap.lab.lab import Lab

    cmd, env = Lab.get(name).command(node, argv)
    os.execvpe(cmd[0], cmd, env)


@app.command("impair")
def impair(
    name: Optional[str] = typer.Option(None, "--name", help=NAME_HELP),
    clear: bool = typer.Option(False, "--clear", help="Remove every impairment first."),
    delay: Optional[List[str]] = DELAY, jitter: Optional[List[str]] = JITTER,
    loss: Optional[List[str]] = LOSS, drop: Optional[List[str]] = DROP,
    reject: Optional[List[str]] = REJECT, clock: Optional[List[str]] = CLOCK,
    hosts: Optional[List[str]] = HOSTS, mtu: Optional[List[str]] = MTU,
    carrier: Optional[List[str]] = CARRIER,
) -> None:
    """Change a running lab's impairments (a zero value removes one; --clear removes all).

    Network impairments apply at once, also while corosync runs. A new --clock applies to
    programs started afterwards, SSH sessions included: the node's sshd and chronyd are
    restarted; corosync keeps its old clock until you restart it (`lab status` lists stale
    processes).
    """
    from pvestrap.errors import UserError
    from pvestrap.lab.lab import Lab

    flags = _flags(delay=delay, jitter=jitter, loss=loss, drop=drop, reject=reject,
                   clock=clock, hosts=hosts, mtu=mtu, carrier=carrier)
    if not flags and not clear:
        raise UserError("nothing to change", code="lab-flag-missing",
                        remedy="give impairment flags (e.g. --delay n2:eth0=3ms) or --clear")
    lab = Lab.get(name)
    items = lab.impair(clear=clear, **flags)
    for item in items:
        typer.echo(f"impaired: {item.flag(lab.prefix)}")
    if not items:
        typer.echo(f"lab {lab.prefix}: no impairments")


@app.command("answers")
def answers(name: Optional[str] = typer.Option(None, "--name", help=NAME_HELP)) -> None:
    """Print a cluster answer file describing the lab's nodes, links and addresses."""
    from pvestrap.answers import dumps
    from pvestrap.lab.lab import Lab

    typer.echo(dumps(Lab.get(name).plan()), nl=False)


def _service(service: str, action: str, nodes: Optional[List[str]], name: Optional[str]) -> None:
    from pvestrap.errors import UserError
    from pvestrap.lab.lab import Lab

    lab = Lab.get(name)
    if action == "config" and service == "corosync":
        lab.write_corosync(nodes or None)
        typer.echo(f"wrote corosync.conf and authkey into /etc/corosync of "
                   f"{', '.join(nodes) if nodes else 'every node'}")
        return
    if action not in ("start", "stop"):
        extra = "|config" if service == "corosync" else ""
        raise UserError(f"unknown action {action!r}", code="lab-action-unknown",
                        remedy=f"use start|stop{extra}")
    done = (lab.start if action == "start" else lab.stop)(service, nodes or None)
    for node, pid in done.items():
        typer.echo(f"{node}: {service} running, pid {pid}")
    if action == "stop":
        typer.echo(f"{service} stopped on {', '.join(nodes) if nodes else 'every node'}")


ACTION = typer.Argument(..., metavar="ACTION", help="start or stop.")
NODES = typer.Argument(None, help="Nodes (default: all).")
NAME = typer.Option(None, "--name", help=NAME_HELP)


@app.command("corosync")
def corosync(action: str = typer.Argument(..., metavar="ACTION",
                                          help="start, stop, or config (write a corosync.conf "
                                               "and authkey into the nodes)."),
             nodes: Optional[List[str]] = NODES, name: Optional[str] = NAME) -> None:
    """Run real corosync (corosync -f) in the nodes, with the config in each node's /etc."""
    _service("corosync", action, nodes, name)


@app.command("chrony")
def chrony(action: str = ACTION, nodes: Optional[List[str]] = NODES,
           name: Optional[str] = NAME) -> None:
    """Run chronyd -x in the nodes as an NTP server for the lab (never sets the clock)."""
    _service("chrony", action, nodes, name)


@app.command("qnetd")
def qnetd(action: str = ACTION, name: Optional[str] = NAME) -> None:
    """Run corosync-qnetd on the lab's qnetd host (`lab up --qnetd` starts it already)."""
    _service("qnetd", action, None, name)


@app.command("sshd")
def sshd(action: str = ACTION, nodes: Optional[List[str]] = NODES,
         name: Optional[str] = NAME) -> None:
    """Run sshd in the nodes: root logs in with the lab key from any other node."""
    _service("sshd", action, nodes, name)


@app.command("inventory")
def inventory(name: Optional[str] = typer.Option(None, "--name", help=NAME_HELP),
              clusters: int = typer.Option(1, "--clusters", "-c",
                                           help="Split the nodes into this many clusters (one "
                                                "inventory group each).")) -> None:
    """Print an Ansible inventory (JSON, read by the YAML plugin) for the lab's nodes.

    Ansible logs in through each node's own sshd (start it: `pvestrap lab sshd start`) with
    the lab's root key, and runs modules on the node's python3.
    """
    import json

    from pvestrap.lab.inventory import inventory as build
    from pvestrap.lab.lab import Lab

    typer.echo(json.dumps(build(Lab.get(name).state, clusters), indent=2))
