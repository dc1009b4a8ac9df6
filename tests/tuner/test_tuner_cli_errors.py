"""Bad input through the real CLI: exit code 2, one ``perftune: error:`` line naming the field or
resource at fault, no traceback, and nothing written (the ``--home`` folder is never created).

Every case that fails before the trial worker starts runs in this process through
``perftune.cli.main(argv)`` (milliseconds), and a representative few (at least one per command) also
as real ``python -m perftune.cli`` subprocesses, run concurrently once per module (each CLI start costs
~0.6 s of imports): what a subprocess adds (the exit status, stderr with no terminal, a fresh
interpreter) does not depend on the case. Cases that only fail once the worker has started (they
need the workload's metadata or the device list: a user factory that returns a non-Workload, a
search-space error) take several seconds each (the worker imports torch) and are ``slow``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from perftune.executor import _perftune_path

UNREACHABLE_PG = "postgresql://u:secret@127.0.0.1:1/x"

INPUT_FILES = {
    "malformed.yaml": """
        params:
          batch_size: {type: int, low: 8, high: 64, default: 32}
          learning_rate: low: 1
          optimizer: adam
    """,
    "bad_low.yaml": """
        params:
          batch_size: {type: int, low: 64, high: 32, default: 32}
    """,
    "lamb.yaml": """
        params:
          optimizer: {type: categorical, choices: [adam, lamb], default: adam}
    """,
    "wl.py": """
        def not_a_workload():
            return 42

        def make():
            from perftune import Workload
            return Workload(name="w", model=lambda: None, data=lambda: None, target=0.5)
    """,
    "broken.py": """
        def make(:
            pass
    """,
    "inf.yaml": """
        params:
          learning_rate: {type: float, low: 1.0e-4, high: .inf, log: true, default: 1.0e-3}
    """,
    "bad_loss.py": """
        from perftune import Workload

        def make():
            return Workload(name="w", model=lambda: None, data=lambda: None, target=0.5,
                            loss="crossentropy")
    """,
    "exits.py": """
        import os

        os._exit(0)  # a script run for its side effect, say

        def make():
            pass
    """,
    "corrupt.db": """
        this is not an SQLite database
    """,
}


def cli_env() -> dict[str, str]:
    """The environment for ``python -m perftune.cli`` run in a scratch directory: no PERFTUNE_*
    variables, no progress bars, and the perftune under test first on the path (else an editable
    install elsewhere, say the main checkout under a worktree, is what runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFTUNE_")}
    env["PERFTUNE_NO_PROGRESS"] = "1"
    env["PYTHONPATH"] = _perftune_path()
    return env


def perftune(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perftune.cli", *args], capture_output=True,
                          text=True, env=cli_env(), cwd=cwd, timeout=timeout)  # fmt: skip


def assert_usage_error(proc: subprocess.CompletedProcess, home: Path, *needles: str,
                       absent: tuple[str, ...] = ()) -> str:  # fmt: skip
    """Exit 2, exactly one stderr line ``perftune: error: ...`` with every needle, no traceback,
    nothing on stdout, and no workspace. Returns the message line."""
    shown = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    assert proc.returncode == 2, shown
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    line = lines[0]
    assert line.startswith("perftune: error: "), shown
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    for word in absent:
        assert word not in line, f"{word!r} leaked into {line!r}"
    assert proc.stdout.strip() == "", shown
    assert not home.exists(), f"{home} was created: {sorted(p.name for p in home.rglob('*'))}"
    return line


@dataclass
class Case:
    id: str
    args: list[str]  # after "sweep --home ws-ID ..." (or the whole command when not sweep)
    needles: list[str]
    absent: tuple[str, ...] = ()
    command: str = "sweep"
    marks: list = field(default_factory=list)


def SWEEP(*args: str) -> list[str]:  # noqa: N802 - reads like the command line
    return ["--workload", "mlp-digits", *args]


FAST_CASES = [
    Case("unknown-workload", ["--workload", "nope"], ["--workload nope", "unknown workload"]),
    Case("workload-file-missing", ["--workload", "missing.py:make"], ["--workload", "missing.py"]),
    Case("workload-bad-function-name", ["--workload", "wl.py:not-a-name"], ["--workload"]),
    Case("unknown-framework", SWEEP("--framework", "jax"), ["--framework jax"]),
    Case("unknown-device", SWEEP("--device", "quantum"), ["--device quantum"]),
    Case("unknown-objective", SWEEP("--objective", "nope"), ["--objective nope"]),
    Case("unknown-sampler", SWEEP("--sampler", "nope"), ["--sampler nope"]),
    Case("unknown-pruner", SWEEP("--pruner", "nope"), ["--pruner nope"]),
    Case("zero-trials", SWEEP("--trials", "0"), ["--trials 0"]),
    Case("zero-confirm-repeats", SWEEP("--confirm-repeats", "0"), ["--confirm-repeats 0"]),
    Case("negative-timeout", SWEEP("--timeout", "-1"), ["--timeout"]),
    Case("zero-patience", SWEEP("--patience", "0"), ["--patience 0", "integer >= 1"]),
    Case("negative-patience", SWEEP("--patience", "-1"), ["--patience -1", "integer >= 1"]),
    Case("unknown-warm-start", SWEEP("--warm-start", "maybe"), ["--warm-start maybe", "auto or off"]),
    # Closed sets are choices in --help (tests/tuner/test_tuner_cli_conventions.py); a value outside
    # one is still one line naming the flag and the choices, from the registry that defines them.
    Case("unknown-batch-probe", SWEEP("--batch-probe", "yes"), ["--batch-probe yes: choose auto, on or off"]),
    Case("unknown-search", SWEEP("--search", "both"), ["--search both: choose auto, joint or factored"]),
    Case("unknown-mode", SWEEP("--mode", "up"), ["--mode up: choose max or min"]),
    Case("best-unknown-format", ["--workload", "x", "--format", "toml"],
         ["--format toml: choose json, yaml, args or env"], command="best"),
    Case("best-format-without-workload", ["--format", "json"], ["--format json", "--workload"], command="best"),
    Case("sweeps-unknown-state", ["--state", "done"], ["--state done: choose queued, running"], command="sweeps"),
    Case("zero-trial-timeout", SWEEP("--trial-timeout", "0"), ["--trial-timeout"]),
    Case("empty-study", SWEEP("--study", " "), ["--study"]),
    Case("space-missing", SWEEP("--space", "nope.yaml"), ["--space nope.yaml", "not found"]),
    Case("storage-not-a-url", SWEEP("--storage", "nope"), ["--storage nope"]),
    Case("storage-unreachable", SWEEP("--storage", UNREACHABLE_PG),
         ["--storage", "127.0.0.1", "cannot reach"], absent=("secret",)),
    Case("db-unreachable", SWEEP("--db", UNREACHABLE_PG),
         ["--db", "127.0.0.1", "cannot reach"], absent=("secret",)),
    Case("tracking-db-unreachable", SWEEP("--tracking-uri", UNREACHABLE_PG),
         ["--tracking-uri", "127.0.0.1", "cannot reach"], absent=("secret",)),
    # An unreachable tracking server is not bad input: the sweep spools (tests/tuner/test_tracking_spool.py)
    Case("tracking-server-malformed", SWEEP("--tracking-uri", "http://127.0.0.1:port"),
         ["--tracking-uri http://127.0.0.1:port", "not a valid tracking server URL"]),
    Case("tracking-server-credentials", SWEEP("--tracking-uri", "http://u:secret@127.0.0.1:port"),
         ["--tracking-uri"], absent=("secret",)),
    Case("storage-equals-db", SWEEP("--storage", "sqlite:///same.db", "--db", "sqlite:///same.db"),
         ["--storage", "--db", "same database"]),
    Case("best-unknown-objective", ["--workload", "x", "--objective", "nope"],
         ["--objective nope"], command="best"),
    Case("best-unknown-framework", ["--workload", "x", "--framework", "jax"],
         ["--framework jax"], command="best"),
    Case("unknown-option", SWEEP("--bogus"), ["--bogus"]),
    Case("not-an-integer", SWEEP("--trials", "abc"), ["--trials"]),
    Case("missing-workload", [], ["workload"]),
    Case("workers-on-sqlite", SWEEP("--workers", "3"), ["--workers 3", "postgresql://", "journal:///",
                                                        "database is locked"]),
    Case("zero-workers", SWEEP("--workers", "0"), ["--workers 0"]),
    Case("worker-unknown-study", ["--study", "nope"], ["--study nope", "no such study"], command="worker"),
    Case("sweeps-negative-limit", ["--limit", "-5"], ["--limit -5", "from 1 to 10000"], command="sweeps"),
    Case("sweeps-limit-too-big", ["--limit", "10001"], ["--limit 10001"], command="sweeps"),
    # Rich would print ":x:" as an emoji (cuda❌) and choke on "[/x]" as markup: user text is text
    Case("emoji-code-in-input", SWEEP("--objective", "fast:x:"), ["--objective fast:x:"], absent=("❌",)),
    Case("markup-in-input", SWEEP("--objective", "[/x][red]"), ["--objective [/x][red]"]),
    # Numbers that passed validation, then crashed the sweep after the study was written.
    Case("huge-trial-timeout", SWEEP("--trial-timeout", "1e308"), ["--trial-timeout 1e+308", "<= 604800"]),
    Case("huge-budget", SWEEP("--budget", "1e308"), ["--budget 1e+308", "<= 604800"]),
    Case("huge-heartbeat", SWEEP("--heartbeat", "1e308"), ["--heartbeat 1e+308", "<= 3600"]),
    Case("fractional-heartbeat", SWEEP("--heartbeat", "0.5"), ["--heartbeat 0.5", "whole number of seconds"],
         absent=("--storage",)),
    Case("fractional-grace-period", SWEEP("--grace-period", "0.5"), ["--grace-period 0.5", "whole number"],
         absent=("--storage",)),
    Case("huge-device-index", SWEEP("--device", "cpu:99999999999999999999"),
         ["--device cpu:99999999999999999999", "index must be an integer from 0 to 1023"]),
    # A corrupt SQLite file: checked before any database is written (the others were created).
    Case("tracking-corrupt-sqlite", SWEEP("--tracking-uri", "sqlite:///corrupt.db"),
         ["--tracking-uri sqlite:///corrupt.db", "file is not a database"]),
    Case("db-corrupt-sqlite", SWEEP("--db", "sqlite:///corrupt.db"),
         ["--db sqlite:///corrupt.db", "file is not a database"]),
    Case("storage-corrupt-sqlite", SWEEP("--storage", "sqlite:///corrupt.db"),
         ["--storage sqlite:///corrupt.db", "file is not a database"]),
    Case("worker-huge-poll", ["--queue", "--poll", "1e308"], ["--poll 1e+308", "<= 86400"], command="worker"),
    # Inference: its limits come with an inference objective, each number in range.
    Case("unknown-task", SWEEP("--task", "serving"), ["--task serving: choose training or inference"]),
    Case("slo-missing", SWEEP("--task", "inference"), ["--slo-p99-ms", "throughput-at-slo needs"]),
    Case("slo-negative", SWEEP("--task", "inference", "--slo-p99-ms", "-1"), ["--slo-p99-ms -1", "milliseconds"]),
    Case("slo-nan", SWEEP("--task", "inference", "--slo-p99-ms", "nan"), ["--slo-p99-ms nan"]),
    Case("slo-huge", SWEEP("--task", "inference", "--slo-p99-ms", "1e308"), ["--slo-p99-ms 1e+308", "<= 3600000"]),
    Case("slo-with-training", SWEEP("--slo-p99-ms", "5"), ["--slo-p99-ms", "only with --task inference"]),
    Case("objective-of-another-task", SWEEP("--task", "training", "--objective", "latency"),
         ["--objective latency", "inference objective", "--task training"]),
    Case("quality-drop-negative", SWEEP("--task", "inference", "--slo-p99-ms", "5", "--max-quality-drop", "-0.1"),
         ["--max-quality-drop -0.1"]),
    Case("request-rate-without-latency", SWEEP("--task", "inference", "--slo-p99-ms", "5", "--request-rate", "100"),
         ["--request-rate", "only with --objective latency"]),
    Case("request-rate-zero", SWEEP("--objective", "latency", "--request-rate", "0"), ["--request-rate 0"]),
    Case("inference-factored", SWEEP("--objective", "latency", "--search", "factored"),
         ["--search factored", "--search joint"]),
    # Several objectives: each name known, one primary first, what a front needs.
    Case("objectives-unknown-part", SWEEP("--objective", "throughput,speed"), ["--objective throughput,speed"]),
    Case("objectives-conflicting", SWEEP("--objective", "time-to-target,throughput"),
         ["--objective time-to-target,throughput", "conflicting objectives"]),
    Case("objectives-with-patience", SWEEP("--objective", "throughput,peak-memory", "--patience", "2"),
         ["--patience", "not with several objectives"]),
    Case("energy-in-tensorflow-training", SWEEP("--objective", "throughput,energy", "--framework", "tensorflow"),
         ["the tensorflow backend measures no energy in training"]),
    Case("best-unknown-pick", ["--workload", "x", "--pick", "cheapest"], ["--pick cheapest: choose"], command="best"),
]  # fmt: skip


def _argv(case: Case, home: Path) -> list[str]:
    if case.command == "sweep":
        return ["sweep", "--home", str(home), "--trials", "1", "--budget", "1",
                "--confirm-top", "1", "--confirm-repeats", "1", *case.args]  # fmt: skip
    return [case.command, "--home", str(home), *case.args]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A working directory holding the input files; each case's workspace is ``ws-<id>``."""
    path = tmp_path_factory.mktemp("cli-errors")
    for name, text in INPUT_FILES.items():
        (path / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return path


#: Also run as subprocesses: at least one per command, and the cases whose failure reaches out of
#: the process (a server to connect to, a file to leave untouched).
SUBPROCESS = ("unknown-workload", "storage-unreachable", "storage-equals-db",
              "best-unknown-objective", "unknown-option", "sweeps-negative-limit",
              "emoji-code-in-input", "tracking-corrupt-sqlite", "worker-unknown-study")  # fmt: skip


def _run_all(work: Path, cases: list[Case]) -> dict[str, subprocess.CompletedProcess]:
    def one(case: Case) -> subprocess.CompletedProcess:
        return perftune(*_argv(case, work / f"ws-{case.id}"), cwd=work)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([c.id for c in cases], pool.map(one, cases), strict=True))


@pytest.fixture(scope="module")
def fast_results(work) -> dict[str, subprocess.CompletedProcess]:
    return _run_all(work, [c for c in FAST_CASES if c.id in SUBPROCESS])


def _params(cases):
    return [pytest.param(c, id=c.id, marks=c.marks) for c in cases]


@pytest.mark.parametrize("case", _params(FAST_CASES))
def test_bad_input_in_process(case, work, capsys, monkeypatch):
    from perftune.cli import main

    for key in [k for k in os.environ if k.startswith("PERFTUNE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    monkeypatch.chdir(work)
    home = work / f"ws-inproc-{case.id}"
    argv = _argv(case, home)
    code = main(argv)
    captured = capsys.readouterr()
    proc = subprocess.CompletedProcess(argv, code, captured.out, captured.err)
    assert_usage_error(proc, home, *case.needles, absent=case.absent)


@pytest.mark.parametrize("case", _params(c for c in FAST_CASES if c.id in SUBPROCESS))
def test_bad_input(case, work, fast_results):
    assert_usage_error(fast_results[case.id], work / f"ws-{case.id}", *case.needles,
                       absent=case.absent)  # fmt: skip


def test_energy_without_a_meter_is_refused(work, tmp_path, capsys, monkeypatch):
    """Energy is measured, never estimated: with no readable RAPL counter (an empty powercap
    tree), the objective is refused before anything is written, naming the meter."""
    from perftune.cli import main

    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    monkeypatch.setenv("PERFTUNE_RAPL_ROOT", str(tmp_path))
    monkeypatch.chdir(work)
    home = work / "ws-energy"
    argv = _argv(Case("energy", SWEEP("--objective", "throughput,energy"), []), home)
    code = main(argv)
    captured = capsys.readouterr()
    assert_usage_error(subprocess.CompletedProcess(argv, code, captured.out, captured.err), home,
                       "--objective throughput,energy", "energy needs a meter", f"RAPL ({tmp_path}")  # fmt: skip


def test_every_command_has_a_subprocess_case():
    assert {c.command for c in FAST_CASES} == {c.command for c in FAST_CASES if c.id in SUBPROCESS}


def test_storage_equal_to_db_creates_no_database(work, fast_results):
    assert fast_results["storage-equals-db"].returncode == 2
    assert not (work / "same.db").exists()


def test_corrupt_database_is_left_as_it_was(work, fast_results):
    assert fast_results["tracking-corrupt-sqlite"].returncode == 2
    assert (work / "corrupt.db").read_text() == "this is not an SQLite database\n"
    assert sorted(p.name for p in work.glob("corrupt.db*")) == ["corrupt.db"]  # no -wal, -journal


def test_help_exits_zero(work):
    proc = perftune("sweep", "--help", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "--workload" in proc.stdout
    assert proc.stderr == ""


# -- cases that need the trial worker (it imports torch): a few seconds each


@pytest.fixture
def sweep(work, capfd, monkeypatch):
    """``perftune sweep --home HOME ... ARGS`` through ``perftune.cli.main`` in this process, its
    output read at the file descriptors (the trial worker, a real process, writes there too). What
    a CLI subprocess adds is the same for every case: test_bad_input and the alias bomb run one."""
    from perftune.cli import main

    for key in [k for k in os.environ if k.startswith("PERFTUNE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    monkeypatch.chdir(work)

    def run(home: Path, *args: str) -> subprocess.CompletedProcess:
        argv = ["sweep", "--home", str(home), "--trials", "1", "--budget", "1",
                "--confirm-top", "1", "--confirm-repeats", "1", *args]  # fmt: skip
        capfd.readouterr()
        code = main(argv)
        out = capfd.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    return run


@pytest.mark.slow
def test_workload_function_missing(sweep, tmp_path):
    assert_usage_error(sweep(tmp_path / "ws", "--workload", "wl.py:missing_func"),
                       tmp_path / "ws", "--workload", "wl.py", "missing_func")  # fmt: skip


@pytest.mark.slow
def test_factory_returns_non_workload(sweep, tmp_path):
    assert_usage_error(sweep(tmp_path / "ws", "--workload", "wl.py:not_a_workload"),
                       tmp_path / "ws", "--workload", "wl.py:not_a_workload", "int",
                       "not perftune.Workload")  # fmt: skip


@pytest.mark.slow
def test_workload_file_with_syntax_error(sweep, tmp_path):
    assert_usage_error(sweep(tmp_path / "ws", "--workload", "broken.py:make"),
                       tmp_path / "ws", "--workload", "broken.py")  # fmt: skip


@pytest.mark.slow
def test_space_malformed_yaml_names_file_and_line(sweep, tmp_path):
    assert_usage_error(sweep(tmp_path / "ws", *SWEEP("--space", "malformed.yaml")),
                       tmp_path / "ws", "malformed.yaml", "line 3", "malformed YAML")  # fmt: skip


@pytest.mark.slow
def test_space_low_above_high(sweep, tmp_path):
    assert_usage_error(sweep(tmp_path / "ws", *SWEEP("--space", "bad_low.yaml")),
                       tmp_path / "ws", "bad_low.yaml", "params.batch_size")  # fmt: skip


@pytest.mark.slow
def test_space_unsupported_optimizer(sweep, tmp_path):
    assert_usage_error(sweep(tmp_path / "ws", *SWEEP("--space", "lamb.yaml")),
                       tmp_path / "ws", "lamb.yaml", "params.optimizer", "lamb")  # fmt: skip


@pytest.mark.slow
def test_device_with_emoji_code_is_printed_as_given(sweep, tmp_path):
    """``--device cuda:x`` was printed as ``cuda❌`` (Rich's emoji code ``:x:``)."""
    assert_usage_error(sweep(tmp_path / "ws", *SWEEP("--device", "cuda:x")),
                       tmp_path / "ws", "--device cuda:x: ", absent=("❌",))  # fmt: skip


@pytest.mark.slow
def test_device_not_on_this_machine(sweep, tmp_path):
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine may have a CUDA device")
    assert_usage_error(sweep(tmp_path / "ws", *SWEEP("--device", "cuda")),
                       tmp_path / "ws", "--device cuda", "not found")  # fmt: skip


def _run_watched(args: list[str], cwd: Path, timeout: float,
                 max_rss: int) -> tuple[int | None, str, int]:  # fmt: skip
    """``perftune ARGS`` with stderr to a file, its RSS sampled every 50 ms: killed past
    ``timeout`` seconds or ``max_rss`` bytes. Returns (exit code, None if killed; stderr; the
    largest RSS seen)."""
    psutil = pytest.importorskip("psutil")
    log = cwd / f"stderr-{os.getpid()}-{time.monotonic_ns()}.txt"
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "perftune.cli", *args], cwd=cwd, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    peak, deadline = 0, time.monotonic() + timeout
    with contextlib.suppress(psutil.NoSuchProcess):
        watched = psutil.Process(proc.pid)
        while proc.poll() is None and time.monotonic() < deadline and peak <= max_rss:
            peak = max(peak, watched.memory_info().rss)
            time.sleep(0.05)
    code = proc.poll()
    if code is None:
        proc.kill()
        proc.wait(30)
    return code, log.read_text(errors="replace"), peak


@pytest.mark.slow
def test_space_alias_bomb_fails_fast_and_small(tmp_path):
    """A 9-level "billion laughs" in --space: the old loader quoted its 9**9 strings in an error
    message, growing past 1.5 GB for minutes. Now: exit 2 within seconds (the trial worker's start
    included), one short line, the sweep process's memory as usual (killed past 1 GiB)."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\nparams: *l8\n")
    args = ["sweep", "--home", str(tmp_path / "ws"), *SWEEP("--space", "bomb.yaml")]
    code, stderr, peak = _run_watched(args, tmp_path, timeout=120, max_rss=2**30)
    assert code == 2, (code, stderr[:2000], peak)
    assert stderr.strip() == ("perftune: error: search space bomb.yaml: line 2: YAML aliases are "
                              "not allowed here (*l0)")  # fmt: skip
    assert peak < 2**30 and not (tmp_path / "ws").exists()


@pytest.mark.slow
def test_space_infinite_bound(sweep, tmp_path):
    assert_usage_error(sweep(tmp_path / "ws", *SWEEP("--space", "inf.yaml")), tmp_path / "ws",
                       "inf.yaml", "params.learning_rate.high", "finite", "(got inf)")  # fmt: skip


@pytest.mark.slow
def test_unknown_loss_name_fails_before_any_trial(sweep, tmp_path):
    # Found only by the trials before: 44 of them ran, and 45 MLflow runs failed.
    assert_usage_error(sweep(tmp_path / "ws", "--workload", "bad_loss.py:make"), tmp_path / "ws",
                       "loss 'crossentropy' is not known", "cross_entropy, mse")  # fmt: skip


@pytest.mark.slow
def test_workload_that_exits_while_loading(sweep, tmp_path):
    # The worker's child ended without a reply: exit 1 with no field named, before.
    assert_usage_error(sweep(tmp_path / "ws", "--workload", "exits.py:make"), tmp_path / "ws",
                       "--workload", "exits.py:make", "exited while loading (status 0)")  # fmt: skip
