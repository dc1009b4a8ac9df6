"""What ``perftune sweep`` tells while it runs and when it has nothing to do, on a fake executor
(no framework, no worker, no MLflow): progress on stderr (with ``--json`` too, none with ``-q``),
the phase a long trial is in, a finished sweep's rerun, a contradicted ``--framework``, and the
devices cache."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap

import pytest
from test_tuner_sweep_fake import FakeExecutor

from perftune import cli, service
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep


@pytest.fixture
def env(monkeypatch):
    """No PERFTUNE_* settings from outside; perftune's logger as it was, afterwards."""
    import logging

    for key in ("PERFTUNE_NO_PROGRESS", "PERFTUNE_LOG_LEVEL", "PERFTUNE_HOME", "PERFTUNE_STORAGE",
                "PERFTUNE_DB", "PERFTUNE_TRACKING_URI"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    logger = logging.getLogger("perftune")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.fixture
def space(tmp_path) -> str:
    path = tmp_path / "space.yaml"
    path.write_text("extends: none\nversion: 1\nparams:\n"
                    "  batch_size: {type: categorical, choices: [32, 48, 96], default: 32}\n")  # fmt: skip
    return str(path)


@pytest.fixture
def fake(monkeypatch):
    """``perftune sweep`` runs its sweeps on a :class:`FakeExecutor` (untracked); the executors
    it used, and every progress event, are recorded."""
    used: list[FakeExecutor] = []
    events: list[tuple[str, dict]] = []

    def sweep(cfg, ws, progress=None):
        used.append(FakeExecutor())

        def record(event, data):
            events.append((event, data))
            if progress is not None:
                progress(event, data)

        return run_sweep(dataclasses.replace(cfg, track=False), ws, record, executor=used[-1])

    monkeypatch.setattr(service, "sweep", sweep)
    return used, events


def perftune(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sweep_args(tmp_path, space: str, *more: str) -> list[str]:
    return ["sweep", "--workload", "mlp-digits", "--space", space, "--trials", "3", "--seed", "1",
            "--sampler", "random", "--confirm-top", "2", "--confirm-repeats", "1",
            "--home", str(tmp_path / "ws"), *more]  # fmt: skip


def test_json_keeps_progress_on_stderr_and_quiet_drops_it(tmp_path, space, env, fake, capsys, monkeypatch):
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space), "--json")
    assert code == 0, err
    assert json.loads(out)["best"]["config"] == {"batch_size": 32}  # stdout: one JSON document
    lines = err.splitlines()  # not a terminal: one line per event, as it happens
    assert lines[:3] == ["0/3 trials done", "baseline running", "trial 1/3: #0 complete 1.001 s | best 1.001 s"]
    assert "trial 2/3 running" in lines
    assert [x for x in lines if x.startswith("confirming")][0].endswith("(baseline), round 1")
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space, "--trials", "4"), "--json", "-q")
    assert code == 0 and err == "" and json.loads(out)["trials"]["complete"] == 4
    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space, "--trials", "5"))
    assert code == 0 and err == "" and "speedup over the default" in out


def test_phase_events_say_what_runs(tmp_path, space):
    """Before each trial a ``running`` event (the baseline's flagged), before each confirmation
    run a ``confirm`` event naming the candidate of how many and the round."""
    events: list[tuple[str, dict]] = []
    cfg = SweepConfig(workload="mlp-digits", space=space, sampler="random", seed=1, trials=3,
                      confirm_top=2, confirm_repeats=2, confirm_max_repeats=2, track=False)  # fmt: skip
    run_sweep(cfg, Workspace.resolve(tmp_path / "ws"), lambda e, d: events.append((e, d)),
              executor=FakeExecutor())  # fmt: skip
    search = [(e, d.get("i", d.get("done")), d.get("baseline")) for e, d in events if e in ("running", "trial")]
    assert search == [("running", 1, True), ("trial", 1, None), ("running", 2, False), ("trial", 2, None),
                      ("running", 3, False), ("trial", 3, None)]  # fmt: skip
    confirms = [(d["candidate"], d["candidates"], d["repeat"], d["i"], d["total"]) for e, d in events if e == "confirm"]
    n = confirms[0][1]
    assert n >= 2 and confirms == [(c, n, r, (r - 1) * n + c, 2 * n) for r in (1, 2) for c in range(1, n + 1)]


def test_the_live_bar_says_what_runs(monkeypatch):
    """On a terminal the bar's last column names the phase; -v adds a line per finished trial."""
    import io

    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=200))
    bar = cli._Progress("s", verbose=True)
    info = lambda: [t.fields["info"] for t in bar.bar.tasks]  # noqa: E731
    bar("probe", {"max": 512})
    assert info() == ["probing batch size (up to 512)"]
    bar("probed", {"max_batch_size": 256})
    bar("start", {"total": 16, "done": 4, "stage": None})
    bar("running", {"number": 4, "baseline": False, "i": 5, "total": 16})
    assert info() == ["batch size bounded at 256", "trial 5/16 running"]
    bar("trial", {"done": 5, "number": 4, "state": "COMPLETE", "value": 2.5, "best": 2.0, "cause": None})
    bar("confirm", {"label": "candidate-4", "repeat": 1, "i": 2, "total": 9, "candidate": 2, "candidates": 3})
    assert info()[1:] == ["trial 5/16: #4 complete 2.5 s | best 2 s", "confirming candidate 2/3 (candidate-4), round 1"]
    bar.stop()
    assert "trial 5/16: #4 complete 2.5 s | best 2 s\n" in screen.getvalue()  # -v: the line above the bar


def test_each_stage_shows_its_own_unit():
    """The factored search's throughput stage reports samples/s, its convergence stage seconds."""
    bar = cli._Progress("s", verbose=False)
    trial = {"done": 1, "number": 0, "state": "COMPLETE", "value": 1193.0, "best": 1193.0, "cause": None}
    assert bar.text("start", {"total": 10, "done": 0, "stage": "throughput", "unit": "samples/s"})
    assert bar.text("trial", trial) == "trial 1/10: #0 complete 1193 samples/s | best 1193 samples/s"
    bar.text("start", {"total": 14, "done": 0, "stage": "convergence", "unit": "s"})
    assert bar.text("trial", {**trial, "value": 2.5, "best": 2.5}) == "trial 1/14: #0 complete 2.5 s | best 2.5 s"


def test_rerun_of_a_finished_sweep_shows_its_stored_result(tmp_path, space, env, fake, capsys):
    used, events = fake
    code, out, _ = perftune(capsys, *sweep_args(tmp_path, space))
    assert code == 0
    first = [line for line in out.splitlines() if line.startswith("speedup over")]
    events.clear()
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space))
    assert code == 0, err
    assert "fake-torch-cpu-time-to-target is complete: sweep #1 finished it at" in out
    assert "--confirm-again" in out and "speedup over the default: 1.00x" in out
    assert first == [line for line in out.splitlines() if line.startswith("speedup over")]
    assert used[-1].requests == [] and events == []  # nothing ran, no event
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space), "--json")
    assert code == 0 and json.loads(out)["already_complete"]["sweep_id"] == 1 and "is complete" in err
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space), "--confirm-again", "--json")
    assert code == 0 and json.loads(out)["already_complete"] is None
    assert [e for e, _ in events if e != "start"] == ["confirm"] * len(used[-1].requests) != []
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space, "--trials", "4"), "--json")
    assert code == 0 and json.loads(out)["already_complete"] is None  # one more trial to run
    assert ("running", {"number": 3, "baseline": False, "i": 4, "total": 4}) in events


def test_rerun_of_a_sweep_that_stopped_early_shows_its_stored_result(tmp_path, space, env, fake, capsys):
    """A search ended by --patience left trials unrun on purpose: its command again is complete
    too; asking for more trials than it had resumes it."""
    args = sweep_args(tmp_path, space, "--trials", "8", "--patience", "1")
    code, out, err = perftune(capsys, *args, "--json")
    report = json.loads(out)
    assert code == 0 and report["stopped_early"]["reason"] == "patience", err
    assert sum(report["trials"].values()) < 8
    code, out, err = perftune(capsys, *args, "--json")
    assert code == 0 and json.loads(out)["already_complete"]["sweep_id"] == 1
    code, out, err = perftune(capsys, *sweep_args(tmp_path, space, "--trials", "9", "--patience", "1"), "--json")
    assert code == 0 and json.loads(out)["already_complete"] is None


def test_a_contradicted_framework_fails_before_anything_starts(tmp_path, env, monkeypatch, capsys):
    """The file is parsed, not run (it raises if imported), and no worker starts."""
    from perftune import executor  # not `import perftune...`: perftune() is this file's helper

    path = tmp_path / "tfw.py"
    path.write_text(textwrap.dedent("""
        raise SystemExit("imported")
        import perftune

        @perftune.trainable(name="tfw", target=0.5, framework="tensorflow")
        def train(trial):
            pass
    """))
    monkeypatch.setattr(executor, "make_executor", lambda *a, **k: pytest.fail("a worker started"))
    code, out, err = perftune(capsys, "sweep", "--workload", f"{path}:train", "--framework", "torch",
                              "--home", str(tmp_path / "ws"))  # fmt: skip
    assert code == 2 and out == ""
    assert err.strip() == (f"perftune: error: --framework torch: --workload {path}:train declares "
                           "framework='tensorflow' (drop --framework, or pass --framework tensorflow)")  # fmt: skip
    assert "tensorflow" not in sys.modules and not (tmp_path / "ws").exists()
    assert SweepConfig(workload="gpt-tiny").framework == "torch"  # a built-in's only framework


class CountingExecutor:
    """A ProcessExecutor stand-in: counts the discoveries; ``fail`` makes one fail the test."""

    started: list[str] = []
    fail = False

    def __init__(self, framework: str) -> None:
        if CountingExecutor.fail:
            pytest.fail(f"{framework}'s worker started")
        CountingExecutor.started.append(framework)
        self.framework = framework

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def devices(self):
        return [{"kind": "cpu", "name": "Fake CPU", "count": 1, "memory_bytes": 2**33, "cores": 2}]


def test_devices_are_cached_per_interpreter_and_version(tmp_path, env, monkeypatch, capsys):
    from perftune import executor  # not `import perftune...`: perftune() is this file's helper

    monkeypatch.setattr(executor, "ProcessExecutor", CountingExecutor)
    monkeypatch.setattr(CountingExecutor, "started", [])
    home = str(tmp_path / "ws")
    args = ["devices", "--framework", "torch", "--home", home, "--json"]
    code, out, _ = perftune(capsys, *args)
    assert code == 0 and json.loads(out)[0]["name"] == "Fake CPU" and CountingExecutor.started == ["torch"]
    monkeypatch.setattr(CountingExecutor, "fail", True)
    code, again, _ = perftune(capsys, *args)  # from the cache: no worker
    assert code == 0 and again == out
    monkeypatch.setattr(CountingExecutor, "fail", False)
    assert perftune(capsys, *args, "--refresh")[0] == 0 and CountingExecutor.started == ["torch"] * 2
    real = service.discovery_key
    monkeypatch.setattr(service, "discovery_key", lambda fw: {**real(fw), "dists": ["torch-99.0"]})
    assert perftune(capsys, *args)[0] == 0 and CountingExecutor.started == ["torch"] * 3  # a new version
    monkeypatch.setattr(service, "discovery_key", real)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert perftune(capsys, *args)[0] == 0 and CountingExecutor.started == ["torch"] * 4  # other devices visible


def test_a_torch_key_reads_the_installed_version_without_importing(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    key = service.discovery_key("torch")
    assert key["python"] == sys.executable and any(d.startswith("torch-") for d in key["dists"])
    assert "torch" not in sys.modules
    assert service._distribution_of("tensorflow_cpu-2.18.0.dist-info", "tensorflow")
    assert not service._distribution_of("torchvision-0.20.dist-info", "torch")


def test_log_level_from_the_environment(env, monkeypatch, capsys):
    monkeypatch.setenv("PERFTUNE_LOG_LEVEL", "loud")
    code, _, err = perftune(capsys, "devices", "--framework", "torch")
    assert code == 2 and err.strip() == ("perftune: error: PERFTUNE_LOG_LEVEL loud: choose debug, info, "
                                         "warning, error, critical")  # fmt: skip
    import logging

    monkeypatch.setenv("PERFTUNE_LOG_LEVEL", "info")
    cli._logging()
    assert logging.getLogger("perftune.tracking").getEffectiveLevel() == logging.INFO
    cli._logging(verbose=True)
    assert logging.getLogger("perftune.tracking").getEffectiveLevel() == logging.DEBUG
    for value, off in (("1", False), ("yes", False), ("0", True), ("", True), ("false", True)):
        monkeypatch.setenv("PERFTUNE_NO_PROGRESS", value)
        assert cli._no_progress(False) is not off and cli._no_progress(True)


SCRIPT = """
import time, perftune
trial = perftune.Trial.connect()
print("script says hello")
acc = 0.0
while not trial.should_stop():
    time.sleep(0.002)
    trial.step(samples=8, loss=1.0)
    if trial.eval_due():
        acc += 0.5
        trial.evaluate(lambda: acc)
"""


def test_run_keeps_stdout_pure_json_and_quiet_logs_the_command(tmp_path, env, monkeypatch, capfd):
    """``perftune run --json``: the command's own output goes to stderr; ``-q``: to the
    workspace's log (``logs/run-NAME.log``), not the terminal."""
    monkeypatch.setenv("PYTHONPATH", "")  # run_with_best sets it for the command: restored after
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    args = ["run", "--name", "hello", "--defaults", "--target", "0.9", "--eval-interval", "0.02",
            "--home", str(tmp_path / "ws"), "--json", "--", sys.executable, str(script)]  # fmt: skip
    assert cli.main(args) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["metrics"]["reached_target"] and "script says hello" in err
    logs = []
    monkeypatch.setattr(service, "run_with_best", lambda *a, log_path, **k: logs.append(log_path) or
                        {"source": "defaults", "config": {}, "target": None, "metrics": {}})  # fmt: skip
    assert cli.main([*args[:-3], "-q", *args[-3:]]) == 0
    assert logs == [str(tmp_path / "ws" / "logs" / "run-hello.log")] and (tmp_path / "ws" / "logs").is_dir()
