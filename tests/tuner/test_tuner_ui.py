"""``perftune ui``'s command line (the server itself runs in tests/e2e/test_e2e_ui.py)."""

from __future__ import annotations

import pytest

from perftune.errors import UsageError
from perftune.service import UI_ENV, ui_command, ui_environ
from perftune.settings import Workspace


def _ws(tmp_path):
    return Workspace.resolve(home=str(tmp_path / "ws"))


def _opt(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def test_one_worker_no_job_runner_and_the_workspace_store(tmp_path):
    ws = _ws(tmp_path)
    cmd = ui_command(ws, port=5123)
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    assert "--backend-store-uri" not in cmd  # in the environment: a command line is public
    env = ui_environ(ws, {"MLFLOW_BACKEND_STORE_URI": "sqlite:///elsewhere.db", "PATH": "/bin"})
    assert env["MLFLOW_BACKEND_STORE_URI"] == ws.tracking_uri and env["PATH"] == "/bin"
    assert _opt(cmd, "--default-artifact-root") == str(ws.artifacts)
    assert (_opt(cmd, "--host"), _opt(cmd, "--port"), _opt(cmd, "--workers")) == ("127.0.0.1", "5123", "1")
    assert "--allowed-hosts" not in cmd
    assert UI_ENV == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    assert ui_environ(ws, {})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert ui_environ(ws, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_workers_and_allowed_hosts_pass_through(tmp_path):
    cmd = ui_command(_ws(tmp_path), host="0.0.0.0", workers=3, allowed_hosts="perf.example.com")
    assert _opt(cmd, "--workers") == "3" and _opt(cmd, "--allowed-hosts") == "perf.example.com"


@pytest.mark.parametrize("kw, fragment", [({"port": 0}, "--port 0"), ({"workers": 0}, "--workers 0")])
def test_bad_numbers_are_usage_errors(tmp_path, kw, fragment):
    with pytest.raises(UsageError, match=fragment):
        ui_command(_ws(tmp_path), **kw)


def test_the_command_prints_each_sweeps_runs_view(tmp_path, monkeypatch, capfd):
    """``perftune ui`` names, before the server starts, the link to each recent sweep's runs in
    perftune's view (MLflow 3.17 opens a bare experiment link in its GenAI mode)."""
    from perftune import cli, service

    started = []
    monkeypatch.setattr(service, "ui_links", lambda ws, base: [("noop", base + "/#/experiments/7/runs?v")])
    monkeypatch.setattr(cli.os, "execve", lambda path, cmd, env: started.append(cmd))
    cli.app(["ui", "--port", "5123", "--home", str(tmp_path / "ws")], standalone_mode=False)
    err = capfd.readouterr().err
    assert "MLflow UI on http://127.0.0.1:5123" in err
    assert "noop: http://127.0.0.1:5123/#/experiments/7/runs?v" in err
    assert started and started[0][1:4] == ["-m", "mlflow", "server"]
