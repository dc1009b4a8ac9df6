"""perftune._recovery without a sweep: who is dead, what is a connection error, and retries that
apply a change once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from perftune import _recovery


def test_dead_or_alive_worker():
    me = _recovery.owner()
    assert not _recovery.is_dead(me["worker"], me["process"])
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert _recovery.is_dead(f"{_recovery.HOST}:{proc.pid}")  # gone
    # The pid is alive but belongs to a process started later than the worker: pid reuse.
    assert _recovery.is_dead(me["worker"], {**me["process"], "started": me["process"]["started"] - 100})
    assert not _recovery.is_dead(f"elsewhere:{proc.pid}")  # other machines go by heartbeats
    assert not _recovery.is_dead(f"{_recovery.HOST}:{proc.pid}", {"pidns": -1})  # another container
    assert not _recovery.is_dead(None) and not _recovery.is_dead("garbage")


def test_owner_tag_is_short_text_and_reads_back():
    """The MLflow parent run's ``perftune_owner`` tag: text, not JSON; runs tagged before with
    JSON still read back (a killed sweep's run is found either way)."""
    import json

    me, tag = _recovery.owner(), _recovery.owner_tag()
    assert tag.startswith(me["worker"] + " started ") and "{" not in tag
    assert _recovery._owner_of(tag) == (me["worker"], me["process"])
    assert _recovery._owner_of(json.dumps(me)) == (me["worker"], me["process"])
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    gone = tag.replace(me["worker"], f"{_recovery.HOST}:{proc.pid}")
    assert _recovery.is_dead(*_recovery._owner_of(gone)) and not _recovery.is_dead(*_recovery._owner_of(tag))
    assert _recovery._owner_of("garbage") == (None, None) and _recovery._owner_of("h:1 started x") == (None, None)


def test_transient_errors():
    import sqlalchemy.exc as sa_exc
    from optuna.exceptions import StorageInternalError

    from perftune.storage import StoreUnavailableError

    dropped = sa_exc.OperationalError("SELECT 1", {}, Exception("terminating connection"))
    try:
        raise StorageInternalError("commit failed") from dropped
    except StorageInternalError as exc:
        assert _recovery.transient(exc)
    assert _recovery.transient(StoreUnavailableError("cannot reach perftune database"))
    assert not _recovery.transient(ValueError("bad value"))
    assert not _recovery.transient(sa_exc.IntegrityError("INSERT", {}, Exception("duplicate")))


def test_retry_checks_before_applying_again(monkeypatch):
    import sqlalchemy.exc as sa_exc

    monkeypatch.setattr(_recovery.time, "sleep", lambda s: None)
    calls = []

    def lost_after_commit():
        calls.append(1)
        raise sa_exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

    # The first attempt landed (the check sees it): no second attempt.
    assert _recovery.retry(lost_after_commit, check=lambda: (True, "landed")) == "landed"
    assert len(calls) == 1
    # Not a connection error: raised at once.
    with pytest.raises(ZeroDivisionError):
        _recovery.retry(lambda: 1 / 0)
    # A connection that stays down: given up after the budget.
    with pytest.raises(sa_exc.OperationalError):
        _recovery.retry(lost_after_commit, budget_s=0.5)


def test_dead_local_trial_failed_and_retried_at_once(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from perftune._optuna import open_storage
    from perftune.sweep import SweepConfig

    storage = open_storage(f"sqlite:///{tmp_path}/o.db", SweepConfig(workload="-"))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.suggest_int("batch_size", 1, 64)
    assert trial.user_attrs["worker"] == _recovery.worker_id()  # created with its worker
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    trial.set_user_attr("worker", f"{_recovery.HOST}:{proc.pid}")  # as if that process ran it
    alive = study.ask()
    assert _recovery.fail_stale(study, grace_s=120, max_retry=2) == [trial.number]
    trials = study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING  # its worker (this process) lives
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].params == trials[trial.number].params and "worker" not in retry[0].user_attrs
    assert _recovery.fail_stale(study, grace_s=120, max_retry=2) == []  # once only


def test_store_interrupts_only_dead_owners_sweeps(tmp_path):
    from perftune.storage import open_store

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = {"worker": f"{_recovery.HOST}:{proc.pid}", "process": {"started": 1.0}}
    with open_store(f"sqlite:///{tmp_path}/p.db", create=True) as store:
        store.upsert_device("fp", framework="torch", kind="cpu", name="cpu", count=1,
                            memory_bytes=None, info={})  # fmt: skip
        store.upsert_workload("w", framework="torch", info={})
        ids = [store.start_sweep(study_name=name, workload="w", framework="torch", device_fingerprint="fp",
                                 objective="time-to-target", settings={"owner": who})
               for name, who in (("s", dead), ("s", _recovery.owner()), ("other", dead))]  # fmt: skip
        _recovery.recover_sweep(store, "s", None, "w")
        assert [store.get_sweep(i)["state"] for i in ids] == ["interrupted", "running", "running"]
