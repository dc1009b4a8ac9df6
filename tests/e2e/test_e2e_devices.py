"""``--device all`` through the CLI on this machine (one device: the CPU): one study per device,
the batch-size probe, MFU, and the cross-device table, checked in the JSON and the store."""

from __future__ import annotations

import optuna
import pytest
from conftest import run_cli, run_json

pytestmark = pytest.mark.slow


def test_device_all_with_probe_and_mfu(tmp_path):
    home = str(tmp_path / "ws")
    args = ["sweep", "--workload", "mlp-digits", "--device", "all", "--objective", "throughput",
            "--trials", "2", "--seed", "0", "--batch-probe", "on", "--confirm-top", "1",
            "--confirm-repeats", "1", "--home", home]  # fmt: skip
    result = run_json(*args)
    assert [r["device"] for r in result["devices"]] == ["cpu"]  # what torch finds here
    row = result["devices"][0]
    assert result["winner"] == "cpu" and row["winner"] is True
    assert result["direction"] == "maximize" and result["unit"] == "samples/s"
    # The probe ran (doubling up to the space's bound: nothing runs out of memory here).
    assert row["max_batch_size"] == 512
    report = result["reports"][0]
    assert report["batch_probe"]["tried"] == [[32, True], [64, True], [128, True], [256, True], [512, True]]
    assert 0 < row["mfu"] < 1.5 and row["value"] > 0 and row["config"]["batch_size"] <= 512
    study = optuna.load_study(study_name=report["study_name"], storage=f"sqlite:///{home}/optuna.db")
    assert study.user_attrs["max_batch_size"] == 512
    # The stored best shows its MFU.
    proc = run_cli("best", "--workload", "mlp-digits", "--objective", "throughput", "--home", home)
    assert proc.returncode == 0, proc.stderr
    assert "MFU" in proc.stdout and f"{row['mfu'] * 100:.1f}%" in proc.stdout
