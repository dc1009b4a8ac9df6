"""The CLI prints user and stored text as it is. Rich read markup and emoji codes in it: a
workload, study or error holding ``[/x]`` raised a MarkupError (an internal error, exit 1, after
the whole sweep had run) and ``cuda:x:`` came out as ``cuda❌``. The intended styles (a red
``failed``, a bold winner) are :class:`rich.text.Text` styles, not markup."""

from __future__ import annotations

import json
import os

import pytest
from test_api import FP

from perftune import cli
from perftune.storage import open_store

WORKLOAD = "w[/x]:x:[red]"
DEVICE_NAME = "CPU [/bold] :fire:"
ERROR = "boom [/x] :x: [red]not red"
CONFIG_VALUE = "[bold]adam:x:"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A workspace whose store holds a failed sweep and a best config, every text field of them
    markup- and emoji-like."""
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    for key in [k for k in os.environ if k.startswith("PERFTUNE_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "ws"
    home.mkdir()
    with open_store(f"sqlite:///{home / 'perftune.db'}", create=True) as s:
        s.upsert_device(FP, framework="torch", kind="cpu", name=DEVICE_NAME, count=1,
                        memory_bytes=None, info={})  # fmt: skip
        s.upsert_workload(WORKLOAD, framework="torch", info={})
        sid = s.start_sweep(study_name="study", workload=WORKLOAD, framework="torch",
                            device_fingerprint=FP, objective="time-to-target", settings={},
                            mlflow_run_id=None)  # fmt: skip
        s.save_best(workload=WORKLOAD, framework="torch", device_fingerprint=FP,
                    objective="time-to-target", direction="minimize", unit="s",
                    config={"optimizer": CONFIG_VALUE}, value=0.5, spread=None, metrics={},
                    baseline_config=None, baseline_value=1.0, speedup=2.0,
                    speedup_interval=(1.8, 2.2), mlflow_run_id=None, sweep_id=sid)  # fmt: skip
        s.finish_sweep(sid, state="failed", n_trials=1, n_complete=0, error=ERROR)
    return str(home)


def run(capsys, *argv: str) -> str:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "❌" not in captured.out + captured.err and "🔥" not in captured.out + captured.err
    return captured.out


def test_sweeps_prints_stored_text_as_is(home, capsys):
    out = run(capsys, "sweeps", "--home", home)
    assert f"{WORKLOAD} (torch)" in out
    assert f"error: {ERROR}" in out


def test_best_prints_stored_text_as_is(home, capsys):
    out = run(capsys, "best", "--workload", WORKLOAD, "--home", home)
    assert f"Best configs for {WORKLOAD}" in out
    assert f"cpu ({DEVICE_NAME})" in out
    assert f"config: optimizer={CONFIG_VALUE}" in out
    assert "2.00x [1.80, 2.20]" in out  # the speedup with its 95% confidence interval
    stored = json.loads(run(capsys, "best", "--workload", WORKLOAD, "--home", home, "--json"))
    assert stored[0]["speedup_interval"] == [1.8, 2.2]


def test_intended_styles_survive():
    winner = cli._styled("fastest here: ", ("cuda:0", "bold"))
    assert winner.plain == "fastest here: cuda:0"
    assert [(span.start, span.end, span.style) for span in winner.spans] == [(14, 20, "bold")]


def _side(label: str, config: dict, values: list[float], trial: int | None = None) -> dict:
    return {"label": label, "config": config, "values": values, "failures": [], "trial_number": trial,
            "stats": {"median": values[0], "spread": 0.01}, "metrics": {}}  # fmt: skip


def test_sweep_report_prints_the_study_name_as_is(tmp_path, capsys, monkeypatch):
    """The report after a sweep: a study name with ``[/x]`` made it crash once all trials ran."""
    from types import SimpleNamespace

    from perftune.settings import Workspace

    monkeypatch.setenv("COLUMNS", "400")
    report = SimpleNamespace(
        study_name="st[/x]:x:", trials={"COMPLETE": 2}, failures=[], workload=WORKLOAD,
        framework="torch", device={"kind": "cpu", "name": DEVICE_NAME}, objective="throughput",
        unit="s", baseline=_side("baseline", {"optimizer": "adam"}, [2.0]),
        best=_side("candidate", {"optimizer": CONFIG_VALUE}, [1.0], trial=1), batch_probe=None,
        speedup=2.0, stored=True, mlflow_run_id="run:x:", warnings=[],
        speedup_interval={"low": 1.8, "high": 2.2}, confirm_rounds=4)  # fmt: skip
    cli._print_report(report, Workspace.resolve(tmp_path / "ws"))
    out = capsys.readouterr().out
    assert "st[/x]:x:: 2 COMPLETE" in out
    assert f"{WORKLOAD} / torch / cpu ({DEVICE_NAME}) / throughput" in out
    assert f"optimizer={CONFIG_VALUE}" in out and "speedup over the default: 2.00x" in out
    assert "run:x:" in out and "❌" not in out
    assert "speedup over the default: 2.00x (95% CI 1.80-2.20x, 4 paired rounds)" in out


def test_devices_table_prints_names_as_is(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    cli._print_devices_table({"unit": "s", "direction": "minimize", "winner": "cuda:0", "devices": [
        {"device": "cuda:0", "name": DEVICE_NAME, "value": 1.5, "spread": 0.02, "speedup": 2.0,
         "config": {"optimizer": CONFIG_VALUE}, "winner": True},
        {"device": "cuda:1", "name": "GPU [red]", "error": ERROR}]})  # fmt: skip
    out = capsys.readouterr().out
    assert DEVICE_NAME in out and "1.5 wins" in out and "failed" in out and "GPU [red]" in out
    assert f"cuda:0 config: optimizer={CONFIG_VALUE}" in out and f"cuda:1 error: {ERROR}" in out
    assert "fastest here: cuda:0" in out and "🔥" not in out and "❌" not in out
