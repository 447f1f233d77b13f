"""`pvestrap wizard`: the guided create/join in the terminal (or unattended from an answer file)."""

from __future__ import annotations

from typing import Optional

import typer


def command(
    save_answers: Optional[str] = typer.Option(
        None, "--save-answers", metavar="FILE", help="Ask, then write the whole-cluster answer "
        "file to FILE and stop: no preflight, nothing applied."),
    node: Optional[str] = typer.Option(
        None, "--node", metavar="NAME", help="This node's name (default: the short host name; "
        "with --answers: the file's node of that name)."),
    answers: Optional[str] = typer.Option(
        None, "--answers", metavar="FILE", help="Start from this answer file: its values are "
        "the defaults (with --yes: the answers)."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Unattended: every answer from --answers, apply without "
        "asking. A missing required answer is an error naming its key."),
    token_file: Optional[str] = typer.Option(
        None, "--token-file", metavar="FILE", help="Probe token shared with the other nodes "
        "(or $PVESTRAP_PROBE_TOKEN): this node answers their probes and probes the node it "
        "joins."),
    duration: Optional[float] = typer.Option(
        None, "--duration", help="Seconds of latency sampling per path (default 3)."),
) -> int:
    """Detect, ask, preflight, show the plan, apply and report; or save the answers.

    Ctrl-C at any question stops with exit 130 and nothing changed. Exit 0 done (or saved, or
    not confirmed), 1 a step or the preflight failed, 2 bad input.
    """
    import sys

    from pvestrap.errors import UserError

    if duration is not None and duration <= 0:
        raise UserError("--duration must be greater than 0", remedy="e.g. --duration 3")
    if yes and not answers:
        raise UserError("--yes takes every answer from a file: give --answers FILE",
                        code="answers-needed", remedy="pvestrap wizard --answers FILE --yes")
    if not yes and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("the wizard asks questions and there is no terminal to ask on",
                        code="no-terminal",
                        remedy="run it on a console (ssh -t), or unattended: "
                               "pvestrap wizard --answers FILE --yes")
    return _run(save_answers, node, answers, yes, token_file, duration)


def _run(save_answers, node, answers, yes, token_file, duration) -> int:
    import dataclasses
    import sys

    from pvestrap.wizard import flow
    from pvestrap.wizard.detect import detect
    from pvestrap.wizard.services import LiveServices

    detected = detect()
    if node:
        detected = dataclasses.replace(detected, hostname=node)
    values, facts, secrets = {}, {}, {}
    if answers:
        detected, values, facts, secrets = _from_file(answers, node, detected, yes)
    from pvestrap.checks.probe import given_token

    token = given_token(token_file)
    say = _printer()
    services = LiveServices(token=token, duration_s=duration, out=say)
    if yes:
        from pvestrap.wizard.unattended import UnattendedAsker

        asker = UnattendedAsker({"save": "", **values, "apply": True}, secrets, say)
    else:
        from pvestrap.wizard.tui import TerminalAsker

        asker = TerminalAsker()
    defaults = {} if yes else values
    try:
        if save_answers:
            talk = flow.gather(detected, asker, services, save_only=True, facts=facts,
                               defaults=defaults)
            flow.save_answers(talk, flow.to_plan(talk.state()), save_answers)
            say("Nothing was applied.")
        else:
            flow.run(detected, asker, services, facts=facts, defaults=defaults)
    except (KeyboardInterrupt, EOFError):
        applying = services.applying
        print("\ninterrupted: " + ("the apply was interrupted; check `pvestrap status`"
                                   if applying else "nothing changed"), file=sys.stderr)
        return 130
    finally:
        services.close()
    return 0


def _from_file(path, node, detected, unattended):
    """This node's answers from an answer file: (detected, values, facts, secrets)."""
    import dataclasses

    from pvestrap import answers as answer_files
    from pvestrap.password import resolve_password
    from pvestrap.wizard.unattended import answers_from_plan, facts_from_plan

    plan = answer_files.load(path)
    me = answer_files.select_node(plan, node or detected.hostname).name
    detected = dataclasses.replace(detected, hostname=me)
    secrets = {}
    if unattended and detected.is_pve and plan.role_of(me) == "join":
        password = resolve_password(plan.join)
        if password is not None:
            secrets["join.password"] = password.value
    return detected, answers_from_plan(plan, detected), facts_from_plan(plan), secrets


def _printer():
    import sys

    def say(text: str) -> None:
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()

    return say
