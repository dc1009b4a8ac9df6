"""Parallel workers on one machine without a database server: Optuna's journal file."""

from __future__ import annotations

import pytest
from conftest import ROOT, run_json

pytestmark = pytest.mark.slow

NOOP = f"{ROOT / 'benchmarks' / 'noop_workload.py'}:make_workload"


def test_workers_on_a_journal_file(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "optuna.journal"
    report = run_json("sweep", "--workload", NOOP, "--workers", "2", "--trials", "16", "--seed", "0",
                      "--storage", f"journal:///{journal}", "--home", str(tmp_path / "ws"),
                      "--confirm-top", "1", "--confirm-repeats", "1")  # fmt: skip
    assert report["stored"] is True and report["failures"] == []
    study = optuna.load_study(study_name=report["study_name"],
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))  # fmt: skip
    counted = [t for t in study.trials if t.user_attrs.get("cause") not in ("invalid", "surplus")]
    assert len(counted) == 16 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    assert not (tmp_path / "ws" / "optuna.db").exists()  # the journal, not SQLite
