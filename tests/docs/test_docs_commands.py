"""Every command README.md and docs/*.md show is run, so that none can drift from the code.

Commands go in ```sh fences. The line just before each fence says what the test does with it:

    <!-- test -->                       run it (bash -e), expect exit status 0
    <!-- not tested: REASON -->         never run here, for the reason given (a GPU, a server
                                        left running, a feature not merged yet: "pending")

An sh block with neither marker fails the test, as does a command in a ```bash, ```shell,
```console or ```zsh fence, so new docs cannot add an untested command silently. A ```text
fence right after a tested block (blank lines between at most) is its output: every line of it
without a table border or "..." must appear in what the block printed (stdout and stderr, runs
of spaces collapsed), any number in it matching any number (timings and values change from run
to run; table layout and elisions too).

The tested blocks run in order, README.md first, then docs/*.md by name, all in one temporary
workspace (PERFTUNE_HOME), from the repository root, with .venv/bin first on PATH: a block may
read what an earlier one stored (``perftune best`` after a sweep).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from perftune.executor import _perftune_path

ROOT = Path(__file__).resolve().parents[2]
TESTED = "<!-- test -->"
NOT_TESTED = re.compile(r"<!-- not tested: (\S.*?) -->")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
UNMARKABLE = {"bash", "shell", "console", "zsh"}  # commands belong in ```sh, where markers count
UNSTABLE = re.compile(r"[\u2500-\u257f]|\.\.\.|…")  # box drawing (tables), elisions
NUMBER = r"\d+(?:[.,]\d+)*"
BLOCK_TIMEOUT_S = 600  # a guard against a hang, not a budget: a loaded machine is slow


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md, then docs/*.md by name: the order the tested blocks run in."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass
class Block:
    """One fenced block: where it starts (1-based line of the fence), its info string, its text
    (the fence's indent removed), the marker line before it, and the output block after it."""

    path: Path
    line: int
    info: str
    code: str
    marker: str
    output: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"


def parse(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order; a ```text block that follows a ```sh
    block with only blank lines between is attached to it as its output (and not listed)."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i, last_end = 0, -1
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, info, start = m.group(1), m.group(2), i
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[start + 1 : i]]
        block = Block(path, start + 1, info, "\n".join(body) + "\n", lines[start - 1].strip() if start else "")
        follows = bool(found) and not any(ln.strip() for ln in lines[last_end + 1 : start])
        if info == "text" and follows and found[-1].info == "sh" and found[-1].output is None:
            found[-1].output = block.code
        else:
            found.append(block)
        last_end, i = i, i + 1
    return found


def unmarked(blocks: list[Block]) -> list[str]:
    """What is wrong with the blocks' markers, one line each (empty: all marked)."""
    problems = []
    for b in blocks:
        if b.info in UNMARKABLE:
            problems.append(f"{b.where}: a ```{b.info} fence: commands go in ```sh, marked")
        elif b.info == "sh" and b.marker != TESTED and not NOT_TESTED.fullmatch(b.marker):
            problems.append(f"{b.where}: an ```sh block with neither {TESTED} nor "
                            "<!-- not tested: REASON --> on the line before it")  # fmt: skip
    return problems


def stable_lines(output: str) -> list[str]:
    """The lines of an output block a run must print (no table border, no elision), as regular
    expressions: spaces collapsed, every number standing for any number."""
    lines = [" ".join(ln.split()) for ln in output.splitlines() if ln.strip() and not UNSTABLE.search(ln)]
    return [NUMBER.join(map(re.escape, re.split(NUMBER, ln))) for ln in lines]


def test_every_sh_block_is_marked_tested_or_says_why_not():
    problems = [p for path in doc_files() for p in unmarked(parse(path))]
    assert not problems, "\n".join(problems)


def test_an_unmarked_block_and_a_bash_fence_are_refused(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- test -->\n```sh\ntrue\n```\n\n```sh\nls\n```\n<!-- not tested: x -->\n"
                    "```sh\nfalse\n```\n```bash\nrm -rf /\n```\n")  # fmt: skip
    problems = unmarked(parse(page))
    assert [p.split(": ", 1)[0] for p in problems] == [f"{page}:6", f"{page}:13"]


def test_an_output_block_is_attached_and_only_its_stable_lines_are_checked(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- test -->\n```sh\necho hi\n```\n\n```text\nhi   there\n3.5 s\n┃ a ┃\n...\n```\n")
    (block,) = parse(page)
    assert block.output is not None
    patterns = stable_lines(block.output)
    assert len(patterns) == 2 and re.fullmatch(patterns[0], "hi there")
    assert re.fullmatch(patterns[1], "12,041.25 s") and not re.fullmatch(patterns[1], "a s")


def _env(home: Path) -> dict[str, str]:
    """The environment a reader has after installing: perftune on PATH, a fresh workspace, no
    database URLs or token inherited from the caller, an 80-column terminal."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PERFTUNE_STORAGE", "PERFTUNE_TRACKING_URI", "PERFTUNE_DB", "PERFTUNE_API_TOKEN"}}  # fmt: skip
    bins = [str(ROOT / ".venv" / "bin"), os.path.dirname(sys.executable), env.get("PATH", "")]
    env.update(PATH=os.pathsep.join(bins), PERFTUNE_HOME=str(home), COLUMNS="80",
               PYTHONPATH=os.pathsep.join(filter(None, [_perftune_path(), env.get("PYTHONPATH")])))
    return env


def run_block(block: Block, env: dict[str, str]) -> tuple[int, str]:
    """Run one block under ``bash -e`` from the repository root: its exit status and what it
    printed (stdout and stderr interleaved). Past the timeout its whole process group is killed
    (a sweep's trial workers included) and the test fails."""
    proc = subprocess.Popen(["bash", "-e", "-c", block.code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        printed, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        printed, _ = proc.communicate()
        pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT_S} s:\n{block.code}\n{printed[-3000:]}")
    return proc.returncode, printed


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children so far: the cost of the
    blocks, whatever else loads the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_every_tested_command_runs(tmp_path):
    env = _env(tmp_path / "workspace")
    timings = []
    for path in doc_files():
        for b in parse(path):
            if b.info != "sh" or b.marker != TESTED:
                continue
            start, cpu = time.monotonic(), _children_cpu_s()
            status, printed = run_block(b, env)
            timings.append(f"{time.monotonic() - start:6.1f} s ({_children_cpu_s() - cpu:5.1f} s CPU)  {b.where}")
            assert status == 0, f"{b.where} exited {status}:\n{b.code}\n{printed[-3000:]}"
            flat = " ".join(printed.split())
            missing = [ln for ln in stable_lines(b.output or "") if not re.search(ln, flat)]
            assert not missing, f"{b.where}: the output shown is not printed: {missing}\n{printed[-3000:]}"
    print("\n".join(timings))


def prose(path: Path) -> str:
    """A page without its fenced blocks."""
    kept, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line) if not fenced else line.strip() == "```":
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but ``-`` and ``_``
    dropped, spaces as ``-``."""
    heads = re.findall(r"^#+ (.+)$", prose(path), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for path in doc_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(path)):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if file == "img/mlflow-runs.png" or file == "docs/img/mlflow-runs.png":
                continue  # the MLflow screenshot comes with the UI work (issue 13)
            if not dest.exists() or anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)
