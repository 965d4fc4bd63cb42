"""Every CLI command has help text and appears in the README."""

from __future__ import annotations

import pytest

from lensgraph import run
from conftest import ROOT, run_main

COMMANDS = sorted(c.name or c.callback.__name__ for c in run.app.registered_commands)


def test_the_commands_are_the_documented_set():
    assert COMMANDS == ["chat", "compare", "eval", "index", "info", "mcp", "search", "serve", "submit"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_in_the_readme(command, capsys):
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0 and "Usage" in out and len(out) > 300
    readme = (ROOT / "README.md").read_text()
    assert f"lensgraph {command}" in readme, f"README does not show `lensgraph {command}`"
