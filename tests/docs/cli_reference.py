"""docs/cli.md's option lists are the CLI's own ``--help``, pasted by this script, not by hand.

A ``<!-- help: COMMAND -->`` line followed by a ```text fence marks where ``perftune COMMAND
--help`` goes (``<!-- help: -->`` for ``perftune --help``). ``make docs`` (this file run as a
script) rewrites those fences; ``test_docs_cli.py`` fails while one differs from the CLI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from perftune.executor import _perftune_path

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"
HELP_BLOCK = re.compile(r"(<!-- help: ?(?P<cmd>[a-z -]*?) ?-->\n```text\n)(?P<text>.*?)(```)", re.S)


#: Prints each argument's ``perftune ARGS --help``, NUL-terminated: one interpreter for all.
_PRINT_HELPS = """
import sys
from perftune.cli import app
for args in sys.argv[1:]:
    try:
        app([*args.split(), "--help"], prog_name="perftune")
    except SystemExit:
        pass
    print("\\0", flush=True)
"""


def help_texts(commands: list[str]) -> list[str]:
    """``perftune COMMAND --help`` for each command, as an 80-column terminal shows it (run from
    this checkout, in a subprocess, as a user runs it)."""
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80",
           "PYTHONPATH": os.pathsep.join(filter(None, [_perftune_path(), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", _PRINT_HELPS, *commands], env=env,
                          capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
    return [text.rstrip() + "\n" for text in proc.stdout.split("\0\n")[: len(commands)]]


def help_blocks(text: str) -> list[tuple[str, str]]:
    """``(command, the help text shown)`` for every help block of a page, in order."""
    return [(m.group("cmd"), m.group("text")) for m in HELP_BLOCK.finditer(text)]


def regenerate(text: str) -> str:
    """The page with every help block replaced by the CLI's current ``--help``."""
    current = iter(help_texts([cmd for cmd, _ in help_blocks(text)]))
    return HELP_BLOCK.sub(lambda m: m.group(1) + next(current) + m.group(4), text)


if __name__ == "__main__":
    CLI_DOC.write_text(regenerate(CLI_DOC.read_text()))
    print(f"{CLI_DOC.relative_to(ROOT)}: {len(help_blocks(CLI_DOC.read_text()))} help blocks regenerated")
