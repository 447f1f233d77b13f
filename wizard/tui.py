"""The terminal front-end: renders wizard questions with questionary. The only questionary user.

Each prompt validates as the user types with the question's own validator, so a rejection shows
the rule at once (in the prompt's bottom bar) and nothing invalid ever reaches the flow. Ctrl-C
raises KeyboardInterrupt (questionary's `unsafe_ask`), which the command turns into exit 130.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import IO, Any

import questionary

from pvestrap.wizard import questions


@dataclass
class TerminalAsker:
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    interactive: bool = True

    def say(self, text: str) -> None:
        self.out.write(text.rstrip("\n") + "\n")
        self.out.flush()

    def ask(self, question: questions.Question, state: questions.State, default: Any) -> Any:
        message = question.message(state)
        help_text = question.help_for(state)
        if help_text:
            self.say(f"\n  {help_text}")
        if question.type == questions.SELECT:
            return self._select(question, state, message, default)
        if question.type == questions.CONFIRM:
            return questionary.confirm(message, default=bool(default),
                                       auto_enter=False).unsafe_ask()
        if question.type == questions.PASSWORD:
            return questionary.password(message, validate=self._validator(question, state)
                                        ).unsafe_ask()
        return questionary.text(message, default="" if default is None else str(default),
                                validate=self._validator(question, state)).unsafe_ask()

    def _select(self, question: questions.Question, state: questions.State, message: str,
                default: Any) -> Any:
        choices = question.choices_for(state)
        # questionary falls back to the title when a value is None, so map values by position.
        items = [questionary.Choice(c.title, value=i) for i, c in enumerate(choices)]
        start = next((i for i, c in enumerate(choices) if c.value == default), None)
        picked = questionary.select(message, choices=items, default=start,
                                    instruction="(arrow keys, Enter)").unsafe_ask()
        return choices[picked].value

    @staticmethod
    def _validator(question: questions.Question, state: questions.State):
        def validate(text: str) -> bool | str:
            problem = question.check(text, state)
            return True if problem is None else problem
        return validate
