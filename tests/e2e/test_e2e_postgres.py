"""The multi-machine setup for real: Optuna, MLflow and perftune's store each in their own
schema of the PostgreSQL server on 127.0.0.1:5432 (database ``test``), driven by the CLI."""

from __future__ import annotations

import json

import pytest
from conftest import pg_schemas, run_cli, run_json

pytestmark = [pytest.mark.postgres, pytest.mark.slow]



@pytest.fixture(scope="module")
def schemas():
    with pg_schemas("perftune_e2e") as urls:
        yield urls


def test_sweep_on_postgres(schemas, tmp_path, cli_here):
    import mlflow
    import optuna

    urls = ["--storage", schemas["optuna"], "--tracking-uri", schemas["mlflow"],
            "--db", schemas["store"], "--home", str(tmp_path / "ws")]  # fmt: skip
    report = run_json("sweep", "--workload", "mlp-digits", "--objective", "throughput",
                      "--trials", "2", "--seed", "1", "--confirm-top", "1",
                      "--confirm-repeats", "1", *urls)  # fmt: skip
    assert report["best"] is not None

    study = optuna.load_study(study_name=report["study_name"], storage=schemas["optuna"])
    assert len([t for t in study.trials if t.state.is_finished()]) >= 2

    mlflow.set_tracking_uri(schemas["mlflow"])
    runs = mlflow.search_runs(experiment_names=["mlp-digits"], output_format="list")
    assert any(r.info.run_id == report["mlflow_run_id"] for r in runs)
    assert sum(r.data.tags.get("phase") == "search" for r in runs) == 2

    found = json.loads(cli_here("best", "--workload", "mlp-digits", "--db", schemas["store"], "--json").stdout)
    assert found[0]["config"] == report["best"]["config"]
    assert found[0]["mlflow_run_id"] == report["mlflow_run_id"]

    # Nothing of the three landed in the SQLite files of the workspace.
    assert not (tmp_path / "ws" / "optuna.db").exists()
    assert not (tmp_path / "ws" / "perftune.db").exists()
    assert not (tmp_path / "ws" / "mlflow.db").exists()


def test_db_upgrade_on_postgres(schemas):
    proc = run_cli("db", "upgrade", "--db", schemas["store"])
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout


def test_unreachable_postgres_is_one_line_exit_2(tmp_path, cli_here):
    proc = cli_here("sweep", "--workload", "mlp-digits", "--home", str(tmp_path / "ws"),
                   "--storage", "postgresql://u:hunter2@127.0.0.1:1/x")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--storage" in proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ws").exists()
