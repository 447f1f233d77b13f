"""Apply steps in order; on a failure undo the applied ones in reverse, and say what happened.

A step is a small value with an id, a description, `plan(system)` (what it would change:
file changes with before/after, commands, waits; empty when the node is already in the desired
state), `apply(system)` returning an undo memo, and `undo(system, memo)`. Steps hold no state
of their own: what undo needs (the previous bytes of a file) travels in the memo, so steps stay
frozen values and one list can be planned, shown and applied.

`run_steps` plans every step before the first change (so the plan shown to the user is the
plan applied, and a refusal found while planning changes nothing), skips steps with an empty
plan (applying twice does nothing the second time), and turns a failure into `StepFailed`: the
step id, the cause, and which steps were undone or could not be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, TypeVar, Union

from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.render import Change
from pvestrap.system import DEFAULT_TIMEOUT, Arg, System, show_command

T = TypeVar("T")


@dataclass(frozen=True)
class PlannedCommand:
    argv: tuple[Arg, ...]
    input: Arg | None = None
    undo_argv: tuple[Arg, ...] | None = None

    def __str__(self) -> str:
        return show_command(self.argv, self.input)


@dataclass(frozen=True)
class PlannedWait:
    """A wait with a timeout (for quorum, for a member to answer)."""

    what: str
    timeout: float

    def __str__(self) -> str:
        return f"wait up to {self.timeout:g} s for {self.what}"


Action = Union[Change, PlannedCommand, PlannedWait]


class Step(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def description(self) -> str: ...

    def plan(self, system: System) -> Sequence[Action]: ...

    def apply(self, system: System) -> Any: ...

    def undo(self, system: System, memo: Any) -> None: ...


@dataclass(frozen=True)
class StepEvent:
    """Progress: state is planned, skipped, applying, applied, failed, undoing, undone or
    undo-failed; detail carries the cause for the failing ones."""

    step_id: str
    state: str
    description: str = ""
    detail: str = ""


@dataclass(frozen=True)
class UndoFailure:
    step_id: str
    cause: str


@dataclass(frozen=True)
class ApplyOutcome:
    plans: tuple[tuple[str, tuple[Action, ...]], ...]
    applied: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def as_dict(self) -> dict[str, Any]:
        return {"applied": list(self.applied), "skipped": list(self.skipped),
                "plans": {sid: [str(a) if not isinstance(a, Change) else a.path for a in acts]
                          for sid, acts in self.plans}}


class StepFailed(OperationFailed):
    """A step failed; the earlier steps were undone in reverse order (as far as possible)."""

    code = "step-failed"

    def __init__(self, step_id: str, cause: BaseException, undone: Sequence[str],
                 undo_failures: Sequence[UndoFailure]):
        self.step_id = step_id
        self.cause = cause
        self.cause_code = getattr(cause, "code", type(cause).__name__)
        self.undone = tuple(undone)
        self.undo_failures = tuple(undo_failures)
        text = getattr(cause, "message", None) or str(cause) or type(cause).__name__
        state = ("the earlier steps were undone" if not self.undo_failures
                 else "undoing failed for: " + ", ".join(f.step_id for f in self.undo_failures))
        remedy = getattr(cause, "remedy", None)
        if self.undo_failures:
            remedy = ((remedy + "; ") if remedy else "") + \
                "check the steps that could not be undone by hand"
        super().__init__(f"step {step_id} failed: {text} ({state})", remedy=remedy)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step_id, "cause": self.cause_code,
                "message": getattr(self.cause, "message", None) or str(self.cause),
                "undone": list(self.undone),
                "undo_failures": [{"step": f.step_id, "cause": f.cause}
                                  for f in self.undo_failures]}


class ApplyDeclined(OperationFailed):
    """The person asked said no. `done`: what an earlier, confirmed phase changed and keeps
    (None: nothing was changed)."""

    code = "apply-declined"

    def __init__(self, message: str = "not confirmed: nothing was changed", *,
                 done: str | None = None, remedy: str | None = None):
        super().__init__(message, remedy=remedy)
        self.done = done


Progress = Callable[[StepEvent], None]


def plan_steps(steps: Sequence[Step],
               system: System) -> tuple[tuple[Step, tuple[Action, ...]], ...]:
    """Every step's plan, computed before anything changes."""
    return tuple((step, tuple(step.plan(system))) for step in steps)


def run_steps(steps: Sequence[Step], system: System,
              on_progress: Progress | None = None) -> ApplyOutcome:
    """Plan all, apply in order, undo in reverse on failure (raising StepFailed)."""
    _check_ids(steps)
    emit = on_progress or (lambda event: None)
    plans = plan_steps(steps, system)
    applied: list[tuple[Step, Any]] = []
    skipped: list[str] = []
    for step, actions in plans:
        if not actions:
            skipped.append(step.id)
            emit(StepEvent(step.id, "skipped", step.description))
            continue
        emit(StepEvent(step.id, "applying", step.description))
        try:
            memo = step.apply(system)
        except BaseException as exc:
            emit(StepEvent(step.id, "failed", step.description, _text(exc)))
            undone, failures = _undo_all(applied, system, emit)
            if not isinstance(exc, (PvestrapError, OSError)):
                raise  # a bug or an interrupt: rolled back, but shown as what it is
            raise StepFailed(step.id, exc, undone, failures) from exc
        applied.append((step, memo))
        emit(StepEvent(step.id, "applied", step.description))
    return ApplyOutcome(tuple((s.id, a) for s, a in plans), tuple(s.id for s, _ in applied),
                        tuple(skipped))


def _check_ids(steps: Sequence[Step]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            raise ValueError(f"duplicate step id {step.id!r}")
        seen.add(step.id)


def _text(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def _undo_all(applied: list[tuple[Step, Any]], system: System,
              emit: Progress) -> tuple[list[str], list[UndoFailure]]:
    """Undo in reverse; one undo failing does not stop the others from being undone."""
    undone: list[str] = []
    failures: list[UndoFailure] = []
    for step, memo in reversed(applied):
        emit(StepEvent(step.id, "undoing", step.description))
        try:
            step.undo(system, memo)
        except Exception as exc:  # keep undoing the rest; the report names this one
            failures.append(UndoFailure(step.id, _text(exc)))
            emit(StepEvent(step.id, "undo-failed", step.description, _text(exc)))
            continue
        undone.append(step.id)
        emit(StepEvent(step.id, "undone", step.description))
    return undone, failures


# -- generic steps ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _FileState:
    data: bytes | None
    mode: int | None


def _snapshot(system: System, path: str) -> _FileState:
    return _FileState(system.read_bytes(path), system.file_mode(path))


def _restore(system: System, path: str, state: _FileState) -> None:
    if state.data is None:
        system.remove(path)
    elif system.read_bytes(path) != state.data or system.file_mode(path) != state.mode:
        system.write_bytes(path, state.data, state.mode, backup=False)


@dataclass(frozen=True)
class WriteFileStep:
    """Make a file hold exactly `text` (and `mode`, when given). Undo puts back the previous
    bytes, mode and backup file, or removes a file that did not exist: byte-identical."""

    path: str
    text: str
    mode: int | None = None
    id: str = ""
    description: str = ""
    backup: bool = True

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", "write:" + self.path)
        if not self.description:
            object.__setattr__(self, "description", f"write {self.path}")

    def plan(self, system: System) -> list[Action]:
        current = system.read_bytes(self.path)
        mode = system.file_mode(self.path)
        if current == self.text.encode("utf-8") and self.mode in (None, mode):
            return []
        before = None if current is None else current.decode("utf-8", errors="replace")
        after_mode = self.mode if self.mode is not None else mode if mode is not None else 0o644
        return [Change(self.path, before, self.text, after_mode)]

    def apply(self, system: System) -> tuple[_FileState, _FileState]:
        memo = (_snapshot(system, self.path), _snapshot(system, self.path + ".bak"))
        system.write_text(self.path, self.text, self.mode, backup=self.backup)
        return memo

    def undo(self, system: System, memo: tuple[_FileState, _FileState]) -> None:
        file_state, bak_state = memo
        _restore(system, self.path, file_state)
        if self.backup:
            _restore(system, self.path + ".bak", bak_state)


@dataclass(frozen=True)
class CommandStep:
    """Run a command; undo runs `undo_argv` (if any). `done(system)` says the command's effect
    is already there, so the step plans nothing (idempotency for commands)."""

    argv: tuple[Arg, ...]
    undo_argv: tuple[Arg, ...] | None = None
    id: str = ""
    description: str = ""
    input: Arg | None = None
    timeout: float = DEFAULT_TIMEOUT
    done: Callable[[System], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        if self.undo_argv is not None:
            object.__setattr__(self, "undo_argv", tuple(self.undo_argv))
        if not self.id:
            object.__setattr__(self, "id", "run:" + str(self.argv[0]))
        if not self.description:
            object.__setattr__(self, "description", "run " + show_command(self.argv))

    def plan(self, system: System) -> list[Action]:
        if self.done is not None and self.done(system):
            return []
        return [PlannedCommand(self.argv, self.input, self.undo_argv)]

    def apply(self, system: System) -> None:
        system.run(self.argv, input=self.input, timeout=self.timeout)

    def undo(self, system: System, memo: None) -> None:
        if self.undo_argv is not None:
            system.run(self.undo_argv, timeout=self.timeout)


def unsettled(system: System, problems: Callable[[], list[T]], timeout: float, interval: float,
              what: str) -> list[T] | None:
    """None once PROBLEMS comes back empty within TIMEOUT (asked every INTERVAL, on the system's
    clock); else what it said the last time."""
    seen: list[T] = []

    def check() -> bool:
        seen[:] = problems()
        return not seen

    return None if system.wait_until(check, timeout, interval, what=what) else seen
