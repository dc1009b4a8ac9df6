"""docs/cli.md shows every command's ``--help`` as the CLI prints it (``make docs`` refreshes it)."""

from __future__ import annotations

from cli_reference import CLI_DOC, help_blocks, help_texts
from typer.main import get_command

from perftune.cli import app


def commands(group, prefix: str = "") -> set[str]:
    """Every command and subcommand name of the CLI, as typed after ``perftune``."""
    found = set()
    for name, cmd in group.commands.items():
        found.add(prefix + name)
        if hasattr(cmd, "commands"):  # a group (Typer's own click, vendored in new Typers)
            found |= commands(cmd, f"{prefix}{name} ")
    return found


def test_every_command_has_its_help_in_the_cli_page():
    shown = [cmd for cmd, _ in help_blocks(CLI_DOC.read_text())]
    assert sorted(shown) == sorted({""} | commands(get_command(app)))


def test_the_help_shown_is_the_clis_own():
    blocks = help_blocks(CLI_DOC.read_text())
    current = help_texts([cmd for cmd, _ in blocks])
    stale = [cmd or "perftune" for (cmd, shown), now in zip(blocks, current, strict=True) if shown != now]
    assert not stale, f"docs/cli.md: the --help of {stale} changed: run `make docs`"
