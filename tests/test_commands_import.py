"""Every `pvestrap.commands` module imports and is offered; a broken one fails the CLI loudly."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

from pvestrap import commands


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__))


@pytest.mark.parametrize("name", modules())
def test_every_command_module_imports_and_is_a_command(name):
    module = importlib.import_module(f"pvestrap.commands.{name}")
    assert getattr(module, "app", None) or getattr(module, "command", None)


def test_every_command_module_is_offered_by_the_cli():
    assert sorted(module for _name, module, _help in commands.GROUPS) == modules()


def test_a_missing_command_module_is_an_error_not_a_silently_missing_command():
    with pytest.raises(ModuleNotFoundError):
        commands.load_group("no_such_group")
