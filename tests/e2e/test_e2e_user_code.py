"""The user's own training code, tuned and used, end to end through the real parts: a
``@perftune.trainable`` function with its own DataLoader, a launched argparse script (plain and under
torchrun with 2 CPU ranks), the stored best read back in every form, and the same code run
again outside the sweep with the stored config (``Trial.from_best``, ``perftune run``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, run_json, warnings_besides_load

from perftune.executor import _perftune_path

pytestmark = pytest.mark.slow

HF = "examples/hf_style.py:train"
SCRIPT = [sys.executable, "examples/script/train.py", "--batch-size", "{batch_size}", "--lr", "{learning_rate}",
          "--epochs", "200"]  # fmt: skip
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "{world_size}",
            *SCRIPT[1:]]  # fmt: skip


def launch_json(*args: str, command: list[str]) -> dict:
    """``perftune ARGS --json -- COMMAND`` (the command last: everything after -- is its)."""
    proc = run_cli(*args, "--json", "--", *command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def python(code: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PERFTUNE_HOME": str(home), "PYTHONPATH": _perftune_path()}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A real time-to-target sweep of the HF-style training function (no --framework: the
    decorator says torch)."""
    home = tmp_path_factory.mktemp("hf")
    report = run_json("sweep", "--workload", HF, "--trials", "2", "--seed", "0", "--budget", "40",
                      "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(home))  # fmt: skip
    return home, report


def test_a_training_function_is_tuned_and_stored(hf):
    home, report = hf
    assert report["workload"] == "hf-style" and report["framework"] == "torch"
    assert report["best"] is not None and report["stored"] is True
    assert warnings_besides_load(report) == []  # every searched knob was applied by the function
    import optuna

    study = optuna.load_study(study_name=report["study_name"], storage=f"sqlite:///{home}/optuna.db")
    measured = [t for t in study.trials if t.user_attrs.get("knobs_read")]
    assert measured and all({"batch_size", "optimizer", "learning_rate", "precision"}
                            <= set(t.user_attrs["knobs_read"]) for t in measured)  # fmt: skip


def test_best_prints_the_config_in_every_form(hf):
    home, report = hf
    best = report["best"]["config"]
    out = {fmt: run_cli("best", "--workload", "hf-style", "--format", fmt, "--home", str(home))
           for fmt in ("json", "yaml", "args", "env")}  # fmt: skip
    assert all(p.returncode == 0 for p in out.values()), {k: p.stderr for k, p in out.items()}
    assert json.loads(out["json"].stdout) == best
    assert f"--batch_size {best['batch_size']}" in out["args"].stdout
    assert f"PERFTUNE_OPTIMIZER={best['optimizer']}" in out["env"].stdout.splitlines()
    assert f"optimizer: {best['optimizer']}" in out["yaml"].stdout


def test_the_tuned_function_runs_with_the_stored_config(hf):
    """The transfer: the same function outside the sweep, with the stored config, through
    Trial.from_best. Wall-clock times depend on the machine's load, so the check that the
    config means the same thing here is load-independent: the samples it needs to reach the
    target are of the order the sweep measured (same config, another seed)."""
    home, report = hf
    proc = python(textwrap.dedent("""
        import json, sys
        sys.path.insert(0, "examples")
        import perftune
        from hf_style import train
        trial = perftune.Trial.from_best("hf-style", target=0.98)
        result = trial.run(train)
        print(json.dumps({"source": trial.source, "config": trial.config.to_dict(),
                          "metrics": result["metrics"]}, default=str))
    """), home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["source"] == "stored" and out["config"] == report["best"]["config"]
    m = out["metrics"]
    assert m["reached_target"] and m["final_metric"] >= 0.98
    stored = run_json("best", "--workload", "hf-style", "--home", str(home))[0]["metrics"]
    assert 0.25 <= m["samples"] / stored["samples"] <= 4.0, (m["samples"], stored["samples"])


def test_a_launched_script_is_tuned_and_run_with_its_best(tmp_path):
    home = tmp_path / "ws"
    report = launch_json("sweep", "--name", "script-digits", "--objective", "throughput", "--trials", "1",
                         "--space", "examples/script/space.yaml", "--seed", "0", "--confirm-top", "1",
                         "--confirm-repeats", "1", "--home", str(home), command=SCRIPT)  # fmt: skip
    assert report["workload"] == "script-digits" and report["best"] is not None
    assert warnings_besides_load(report) == []
    best = report["best"]["config"]
    assert set(best) == {"batch_size", "learning_rate"}
    result = launch_json("run", "--name", "script-digits", "--objective", "throughput", "--target", "0.95",
                         "--home", str(home), command=SCRIPT)  # fmt: skip
    assert result["source"] == "stored" and result["config"] == best
    assert result["command"][3] == str(best["batch_size"]) and result["target"] == 0.95
    assert result["metrics"]["reached_target"]


def test_a_torchrun_script_runs_its_ranks(tmp_path):
    """{world_size} in the template: torchrun starts that many gloo ranks; the config's
    parallel strategy is searched, and every rank's samples are counted."""
    space = tmp_path / "ddp.yaml"
    space.write_text("version: 1\nextends: none\nparams:\n"
                     "  batch_size: {type: int, choices_pow2: [32, 64], default: 32}\n"
                     "  learning_rate: {type: float, low: 0.001, high: 0.003, default: 0.002}\n"
                     "  parallel_strategy: {type: categorical, choices: [ddp], default: ddp}\n"
                     "  world_size: {type: int, low: 2, high: 2, default: 2}\n")
    report = launch_json("sweep", "--name", "script-ddp", "--objective", "throughput", "--trials", "1",
                         "--space", str(space), "--seed", "0", "--confirm-top", "1",
                         "--confirm-repeats", "1", "--home", str(tmp_path / "ws"), command=TORCHRUN)  # fmt: skip
    best = report["best"]
    assert best is not None and best["config"]["world_size"] == 2
    assert best["metrics"]["throughput_sps"] > 0
    import optuna

    study = optuna.load_study(study_name=report["study_name"], storage=f"sqlite:///{tmp_path}/ws/optuna.db")
    done = [t for t in study.trials if t.user_attrs.get("metrics", {}).get("windows")]
    assert done and all(t.user_attrs["metrics"]["world_size"] == 2 for t in done)
    assert all({"parallel_strategy", "world_size"} <= set(t.user_attrs["knobs_read"]) for t in done)


# ------------------------------------------------------------------ bad input: one line each
# In this process (tests/tuner/test_tuner_cli_errors.py runs bad input through real subprocesses,
# and the last test here a launched command's).
def test_an_undecorated_function_is_refused(tmp_path, cli_here):
    script = tmp_path / "plain.py"
    script.write_text("def train(trial):\n    pass\n")
    proc = cli_here("sweep", "--workload", f"{script}:train", "--trials", "2", "--home", str(tmp_path / "ws"))
    assert proc.returncode == 2
    assert "must be decorated with @perftune.trainable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists()


def test_an_unknown_knob_in_the_template_is_refused(tmp_path, cli_here):
    proc = cli_here("sweep", "--name", "x", "--target", "0.9", "--home", str(tmp_path / "ws"), "--",
                   sys.executable, "examples/script/train.py", "--bs", "{batch}")  # fmt: skip
    assert proc.returncode == 2 and "{batch} is not a knob of the search space" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "ws").exists()


def test_a_launched_command_needs_a_name_and_target(tmp_path, cli_here):
    proc = cli_here("sweep", "--home", str(tmp_path / "ws"), "--", sys.executable, "train.py")
    assert proc.returncode == 2 and "--name" in proc.stderr
    proc = cli_here("sweep", "--name", "x", "--home", str(tmp_path / "ws"), "--", sys.executable, "train.py")
    assert proc.returncode == 2 and "--target" in proc.stderr


def test_a_script_that_never_reports_stops_the_sweep_after_its_first_trial(tmp_path):
    script = tmp_path / "silent.py"
    script.write_text("print('training without telling anyone')\n")
    home = tmp_path / "ws"
    proc = run_cli("sweep", "--name", "silent", "--target", "0.9", "--trials", "5", "--home", str(home),
                   "--", sys.executable, str(script), "--bs", "{batch_size}")  # fmt: skip
    assert proc.returncode == 2
    assert "exited 0 without reporting to perftune" in proc.stderr
    import optuna

    study = optuna.load_study(study_name="silent-torch-cpu-time-to-target", storage=f"sqlite:///{home}/optuna.db")
    assert len(study.trials) == 1 and study.trials[0].user_attrs["cause"] == "invalid"
