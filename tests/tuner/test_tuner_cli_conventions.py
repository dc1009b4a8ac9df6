"""The CLI conventions a new user expects: ``--version``, shell completion, the choices of every
closed-set option in ``--help`` (from the registries that define them), ``perftune best``
without ``--workload`` listing every stored best, ``perftune sweeps`` showing the confirmed value
with its unit, and every table fitting an 80-column terminal without cutting a value.

Rows are written to the store directly (no sweep runs); everything runs in this process."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from perftune import cli
from perftune._optuna import PRUNERS, SAMPLERS
from perftune.backends import BACKENDS
from perftune.objectives import OBJECTIVES
from perftune.service import FORMATS
from perftune.storage import SWEEP_STATES, open_store
from perftune.sweep.config import BATCH_PROBES, MODES, WARM_STARTS
from perftune.sweep.policy import POLICIES

CPU, GPU = "a1" * 32, "b2" * 32
LONG = "transformer-encoder-large-ft-x"  # 30 characters
CPU_NAME, GPU_NAME = "AMD EPYC 7B13 64-Core Processor", "NVIDIA H200 141GB HBM3e"
KNOBS = {"batch_size": 256, "learning_rate": 0.00123456, "optimizer": "adamw",
         "parallel_strategy": "data_parallel", "precision": "bf16-mixed", "intra_op_threads": 16}  # fmt: skip
#: What a table cut short would show: Rich's ellipsis, or no right border (cropped).
TABLE_EDGE = "│┃┓┛┐┘┤┫┩"


@pytest.fixture
def clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("PERFTUNE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture
def home(stored, clean_env) -> str:
    return stored


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> str:
    """A workspace (read, never written, by the tests): two workloads (one with a 30-character
    name), each with a confirmed best on a CPU (time to target, with an interval, MFU and energy)
    and a GPU (throughput, no interval); a completed sweep per CPU best, a failed one per GPU
    best that got 57 trials in."""
    home = tmp_path_factory.mktemp("ws")
    with open_store(f"sqlite:///{home / 'perftune.db'}", create=True) as s:
        s.upsert_device(CPU, framework="torch", kind="cpu", name=CPU_NAME, count=1, memory_bytes=None, info={})
        s.upsert_device(GPU, framework="tensorflow", kind="cuda", name=GPU_NAME, count=8, memory_bytes=None, info={})
        for workload in (LONG, "mlp-digits"):
            for framework in ("torch", "tensorflow"):
                s.upsert_workload(workload, framework=framework, info={})
            sid = s.start_sweep(study_name=f"{workload}-torch-cpu-time-to-target", workload=workload,
                                framework="torch", device_fingerprint=CPU, objective="time-to-target",
                                settings={"trials": 20}, mlflow_run_id=None)
            rec, _ = s.save_best(workload=workload, framework="torch", device_fingerprint=CPU,
                                 objective="time-to-target", direction="minimize", unit="s", config=KNOBS,
                                 value=12.3456, spread=0.034, metrics={"mfu": 0.4123, "joules_per_sample": 0.00123},
                                 baseline_config=None, baseline_value=24.0, speedup=2.0,
                                 speedup_interval=(1.8, 2.2), mlflow_run_id=None, sweep_id=sid)
            s.update_progress(sid, trials_done=20, best_value=11.9)  # the search's, not confirmed
            s.finish_sweep(sid, state="completed", n_trials=20, n_complete=18,
                           summary={"best_config_id": rec.id, "best": {"stats": {"median": 12.3456}}})
            sid = s.start_sweep(study_name=f"{workload}-tensorflow-cuda-throughput", workload=workload,
                                framework="tensorflow", device_fingerprint=GPU, objective="throughput",
                                settings={"trials": 200}, mlflow_run_id=None)
            s.save_best(workload=workload, framework="tensorflow", device_fingerprint=GPU, objective="throughput",
                        direction="maximize", unit="samples/s", config=KNOBS, value=123456.7, spread=None,
                        metrics={}, baseline_config=None, baseline_value=1000.0, speedup=123.45,
                        mlflow_run_id=None, sweep_id=sid)
            s.update_progress(sid, trials_done=57, best_value=120001.5)
            s.finish_sweep(sid, state="failed", n_trials=57, n_complete=50, error="the worker died: " + "x" * 90)
    return str(home)  # fmt: skip


def run(capsys, *argv: str) -> str:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def assert_fits(out: str, width: int = 80) -> None:
    """No value cut: no ellipsis, every line within ``width``, every table line ending on its
    right border (a cropped table loses it)."""
    assert "…" not in out, out
    table = [line for line in out.splitlines() if line and line[0] in "┏┃┡│└"]
    assert table, out
    for line in table:
        assert len(line) <= width, f"{len(line)} > {width}: {line!r}"
        assert line[-1] in TABLE_EDGE, f"cropped: {line!r}"


def cells(out: str, column: int) -> str:
    """The text of one table column over all rows, its folded lines joined."""
    rows = [line for line in out.splitlines() if line.startswith("│")]
    return "".join(line.split("│")[column + 1].strip() for line in rows)


# -- --version, completion


def test_version(capsys, clean_env):
    from perftune.service import version

    assert run(capsys, "--version") == f"perftune {version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version())


def test_version_from_a_checkout_that_is_not_installed(monkeypatch):
    from importlib import metadata

    import perftune
    from perftune.service import version

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert version() == perftune.__version__


def test_completion_script_install_and_choices(capsys, monkeypatch, tmp_path, clean_env):
    # The shell named on the command line (by default it is detected from the parent process).
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    for shell, marker in (("bash", "complete -o default -F _perftune_completion perftune"),
                          ("zsh", "#compdef perftune")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli.main(["--show-completion", shell])
        assert exit_.value.code == 0
        script = capsys.readouterr().out
        assert marker in script and "_PERFTUNE_COMPLETE" in script
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SystemExit):
        cli.main(["--install-completion", "bash"])
    assert "_PERFTUNE_COMPLETE=complete_bash" in (tmp_path / ".bash_completions" / "perftune.sh").read_text()
    assert "perftune.sh" in (tmp_path / ".bashrc").read_text()
    capsys.readouterr()
    # What the shell asks for on TAB: the choices of --sampler, from the sampler registry.
    monkeypatch.setenv("_PERFTUNE_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "perftune sweep --sampler ")
    monkeypatch.setenv("COMP_CWORD", "3")
    with pytest.raises(SystemExit):
        cli.main([])
    assert capsys.readouterr().out.split() == list(SAMPLERS)


# -- choices in --help


CHOICES = [
    ("devices", "--framework", (*BACKENDS, "all")),
    ("sweep", "--framework", BACKENDS), ("sweep", "--objective", OBJECTIVES), ("sweep", "--mode", MODES),
    ("sweep", "--sampler", SAMPLERS), ("sweep", "--pruner", PRUNERS), ("sweep", "--batch-probe", BATCH_PROBES),
    ("sweep", "--warm-start", WARM_STARTS), ("sweep", "--search", POLICIES),
    ("sweeps", "--state", SWEEP_STATES),
    ("best", "--framework", BACKENDS), ("best", "--objective", OBJECTIVES), ("best", "--format", FORMATS),
    ("run", "--framework", BACKENDS), ("run", "--objective", OBJECTIVES), ("run", "--mode", MODES),
]  # fmt: skip


@pytest.mark.parametrize(("command", "flag", "choices"), CHOICES, ids=[f"{c}{f}" for c, f, _ in CHOICES])
def test_help_shows_the_choices(command, flag, choices, capsys, monkeypatch, clean_env):
    monkeypatch.setenv("COLUMNS", "300")
    text = run(capsys, command, "--help")
    assert f"{flag} <{'|'.join(choices)}>" in text


def test_help_shows_no_type_names_for_choices_and_allow_dir_repeatable(capsys, monkeypatch, clean_env):
    monkeypatch.setenv("COLUMNS", "300")
    for command in {c for c, _, _ in CHOICES}:
        text = run(capsys, command, "--help")
        for flag in (f for c, f, _ in CHOICES if c == command):
            assert f"{flag} <str>" not in text
    serve = " ".join(run(capsys, "serve", "--help").split())
    assert "--allow-dir <dir>" in serve and "repeatable: --allow-dir A --allow-dir B" in serve


# -- perftune best without --workload, perftune sweeps


def test_best_without_workload_lists_every_stored_best(home, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one row per line
    out = run(capsys, "best", "--home", home)
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 8  # 4 bests, two lines each (workload, then its framework)
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    first = rows[0].split("│")
    assert [c.strip() for c in first[1:-1]][:5] == ["mlp-digits", f"cuda ({GPU_NAME})", "throughput",
                                                   "1.235e+05 samples/s", "123.45x"]  # fmt: skip
    assert today in first[6]
    assert rows[2].split("│")[1].strip() == "mlp-digits" and "12.35 s ±3%" in rows[2]
    assert "2.00x [1.80, 2.20]" in rows[2] and rows[3].split("│")[1].strip() == "torch"
    assert rows[4].split("│")[1].strip() == LONG and rows[5].split("│")[1].strip() == "tensorflow"
    listed = json.loads(run(capsys, "best", "--home", home, "--json"))
    assert [(r["workload"], r["framework"], r["unit"]) for r in listed] == [
        ("mlp-digits", "tensorflow", "samples/s"), ("mlp-digits", "torch", "s"),
        (LONG, "tensorflow", "samples/s"), (LONG, "torch", "s")]  # fmt: skip
    assert listed[1]["speedup_interval"] == [1.8, 2.2] and listed[1]["updated_at"].startswith(today)
    # The filters still apply; --format needs the one workload whose config it prints.
    only = json.loads(run(capsys, "best", "--home", home, "--json", "--objective", "throughput"))
    assert {r["objective"] for r in only} == {"throughput"} and len(only) == 2
    assert cli.main(["best", "--home", home, "--format", "json"]) == 2
    assert "--format json: give --workload too" in capsys.readouterr().err


def test_best_of_one_workload_is_as_it_was(home, capsys):
    assert json.loads(run(capsys, "best", "--workload", LONG, "--home", home, "--format", "json")) == \
        {k: KNOBS[k] for k in sorted(KNOBS)}  # fmt: skip
    out = run(capsys, "best", "--workload", "mlp-digits", "--objective", "time-to-target", "--home", home)
    assert "Best configs for mlp-digits" in out and "#3 config: batch_size=256" in out
    assert "#3 MFU 41.2%, J/sample 0.00123" in out  # under the table at 80 columns


def test_best_with_nothing_stored(tmp_path, capsys, clean_env):
    with open_store(f"sqlite:///{tmp_path / 'perftune.db'}", create=True):
        pass
    assert cli.main(["best", "--home", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "perftune: error: no best config stored"


def test_sweeps_show_the_confirmed_value_with_its_unit(home, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    out = run(capsys, "sweeps", "--home", home)
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith("│")}  # fmt: skip
    # The completed sweep: the confirmed median with its unit, as perftune best shows it (not the
    # search's 11.9); the failed one: the search's best, marked so.
    assert rows["3"][-2:] == ["12.35 s", "3"] and rows["4"][-2:] == ["1.2e+05 samples/s (search)", "-"]
    found = json.loads(run(capsys, "sweeps", "--home", home, "--json"))
    assert [(s["confirmed_value"], s["unit"]) for s in found][:2] == [(None, "samples/s"), (12.3456, "s")]


# -- every table at 80 columns


@pytest.mark.parametrize("argv", [["best"], ["best", "--workload", LONG], ["sweeps"]],
                         ids=["best", "best-workload", "sweeps"])  # fmt: skip
def test_store_tables_fit_80_columns(home, capsys, argv):
    out = run(capsys, *argv, "--home", home)
    assert_fits(out)
    if argv == ["best"]:
        assert cells(out, 2).count("time-to-target") == 2  # an objective is never broken
        assert cells(out, 0).count(LONG) == 2  # a long name folded, none of it lost


def test_devices_table_fits_80_columns(capsys, monkeypatch, clean_env):
    import perftune.service

    found = [{"framework": "tensorflow", "kind": "cuda", "name": GPU_NAME, "count": 8, "memory_bytes": 141 * 2**30,
              "cores": None, "fingerprint": GPU},
             {"framework": "mindspore", "kind": None,
              "error": "mindspore is not installed in this interpreter: pip install 'perftune[mindspore]'"}]  # fmt: skip
    monkeypatch.setattr(perftune.service, "list_devices", lambda *args, **kwargs: found)
    out = run(capsys, "devices")
    assert_fits(out)
    assert GPU[:12] in out and "141.0 GiB" in out


def test_sweep_report_and_device_comparison_fit_80_columns(tmp_path, capsys, clean_env):
    from perftune.settings import Workspace

    def side(label, config, values, trial=None):
        return {"label": label, "config": config, "values": values, "failures": [1] if trial else [],
                "trial_number": trial, "stats": {"median": values[0], "spread": 0.031},
                "interval": {"low": values[0] * 0.97, "high": values[0] * 1.03}, "metrics": {}}  # fmt: skip

    report = SimpleNamespace(
        study_name=f"{LONG}-tensorflow-cuda-throughput", trials={"COMPLETE": 18, "PRUNED": 2}, failures=[],
        workload=LONG, framework="tensorflow", device={"kind": "cuda", "name": GPU_NAME},
        objective="throughput", unit="samples/s", baseline=side("baseline", {k: 1 for k in KNOBS}, [1000.0]),
        best=side("candidate", KNOBS, [123456.7, 123000.0, 124000.0], trial=12), batch_probe=None,
        speedup=123.45, stored=True, mlflow_run_id="0123456789abcdef0123456789abcdef", warnings=[],
        speedup_interval={"low": 120.0, "high": 126.0}, confirm_rounds=6)  # fmt: skip
    cli._print_report(report, Workspace.resolve(tmp_path / "ws"))
    out = capsys.readouterr().out
    assert_fits(out)
    # At 80 columns the changed knobs go under the table, on one line (the terminal wraps it).
    assert "best (trial 12) config (changes from the default): batch_size=256, learning_rate=0.001235, " \
           "optimizer=adamw, parallel_strategy=data_parallel, precision=bf16-mixed, intra_op_threads=16" in out  # fmt: skip
    cli._print_devices_table({"unit": "samples/s", "direction": "maximize", "winner": "cuda:0", "devices": [
        {"device": "cuda:0", "name": GPU_NAME, "value": 123456.7, "spread": 0.02, "speedup": 123.45,
         "mfu": 0.4123, "joules_per_sample": 0.00123, "max_batch_size": 4096, "config": KNOBS, "winner": True},
        {"device": "cuda:1", "name": GPU_NAME, "error": "CUDA out of memory"}]})  # fmt: skip
    out = capsys.readouterr().out
    assert_fits(out)
    assert cells(out, 2).startswith("1.235e+05wins") and "41.2%" in out and "4096" in out
