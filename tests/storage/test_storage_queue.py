"""The sweep queue in the store: queued -> claimed (running) -> finished or cancelled, live
progress, and claims that are atomic across concurrent claimers (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from perftune.storage import SQLConfigStore, StoreError, SweepStateError, open_store
from perftune.storage._engine import make_engine, parse_url


def _queue(store: SQLConfigStore, n: int) -> list[int]:
    return [store.queue_sweep({"workload": "mlp-digits", "trials": i + 1, "device": "cpu"},
                              objective="time-to-target") for i in range(n)]  # fmt: skip


def test_queue_claim_attach_progress_finish(store, seeded, fp) -> None:
    first, second = _queue(store, 2)
    q = store.get_sweep(first)
    assert (q["state"], q["workload"], q["device_kind"], q["trials_total"]) == ("queued", "mlp-digits", "cpu", 1)
    assert q["submitted_at"] and q["started_at"] is None and q["study_name"] is None
    assert q["request"] == {"workload": "mlp-digits", "trials": 1, "device": "cpu"}
    assert [s["id"] for s in store.list_sweeps()] == [second, first]  # newest first
    claimed = store.claim_sweep("host-a:1")
    assert claimed["id"] == first and claimed["state"] == "running" and claimed["worker"] == "host-a:1"
    assert claimed["started_at"] is not None
    # the sweep loop attaches the claimed row instead of creating one
    sid = store.start_sweep(study_name="s", workload="mlp-digits", framework="torch",
                            device_fingerprint=fp.cpu, objective="time-to-target",
                            settings={"trials": 1}, mlflow_run_id="r1", sweep_id=first)  # fmt: skip
    assert sid == first and store.get_sweep(first)["device_name"] == "AMD EPYC 7B13"
    assert store.update_progress(first, trials_done=1, best_value=float("nan")) is False
    assert store.get_sweep(first)["best_value"] is None
    assert store.update_progress(first, best_value=0.5) is False
    store.finish_sweep(first, state="completed", n_trials=1, n_complete=1)
    done = store.get_sweep(first)
    assert (done["state"], done["trials_done"], done["best_value"], done["n_trials"]) == ("completed", 1, 0.5, 1)
    assert [s["id"] for s in store.list_sweeps(state="queued")] == [second]
    with pytest.raises(ValueError, match="sweep state"):
        store.list_sweeps(state="nope")
    with pytest.raises(SweepStateError, match="is completed, not running"):
        store.start_sweep(study_name="s", workload="mlp-digits", framework="torch",
                          device_fingerprint=fp.cpu, objective="o", settings={}, sweep_id=first)  # fmt: skip
    with pytest.raises(StoreError, match="unknown sweep id 99"):
        store.update_progress(99)
    assert store.list_devices()[0]["fingerprint"] in (fp.cpu, fp.gpu)


def test_cancel_and_fail(store) -> None:
    a, b = _queue(store, 2)
    assert store.cancel_sweep(a)["state"] == "cancelled"  # queued: at once
    assert store.claim_sweep("w:1")["id"] == b  # a cancelled sweep is never claimed
    running = store.cancel_sweep(b)
    assert running["state"] == "running" and running["cancel_requested"] is True
    assert store.cancel_sweep(b)["cancel_requested"] is True  # twice: harmless
    assert store.update_progress(b) is True
    store.finish_sweep(b, state="failed", n_trials=None, n_complete=None, error="boom\nsecond line")
    failed = store.get_sweep(b)
    assert failed["state"] == "failed" and failed["error"] == "boom second line"
    assert failed["n_trials"] == 0  # None kept the counts
    for sid in (a, b):
        with pytest.raises(SweepStateError, match="only a queued or running sweep"):
            store.cancel_sweep(sid)
    assert store.cancel_sweep(12345) is None
    assert store.claim_sweep("w:1") is None


def _check_each_sweep_claimed_once(url: str, n_sweeps: int = 24, n_claimers: int = 4) -> None:
    """``n_claimers`` threads, each with its own store (own connections), claim until the queue
    is empty: every sweep is claimed exactly once."""
    with open_store(url, create=True) as s:
        ids = _queue(s, n_sweeps)
    claims: list[tuple[int, int]] = []
    lock, start = threading.Lock(), threading.Barrier(n_claimers)
    errors: list[BaseException] = []

    def claimer(i: int) -> None:
        try:
            with open_store(url) as mine:
                start.wait()
                while (row := mine.claim_sweep(f"host:{i}")) is not None:
                    with lock:
                        claims.append((row["id"], i))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n_claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(c[0] for c in claims) == sorted(ids)  # each exactly once
    with open_store(url) as s:
        rows = {r["id"]: r for r in s.list_sweeps(limit=1000)}
    assert all(rows[sid]["state"] == "running" for sid in ids)
    assert {rows[sid]["worker"] for sid, _ in claims} == {f"host:{i}" for _, i in claims}


def test_claims_are_atomic_on_sqlite(sqlite_url: str) -> None:
    _check_each_sweep_claimed_once(sqlite_url)


@pytest.mark.postgres
def test_claims_are_atomic_on_postgresql(pg_url: str) -> None:
    _check_each_sweep_claimed_once(pg_url)


@pytest.mark.postgres
def test_claim_skips_a_locked_row_on_postgresql(pg_url: str) -> None:
    """While another transaction holds the oldest queued row, a claim takes the next one."""
    with open_store(pg_url, create=True) as s:
        a, b = _queue(s, 2)
        engine = make_engine(parse_url(pg_url))
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(sa.text("SELECT id FROM perftune_sweeps WHERE id = :i FOR UPDATE"), {"i": a})
                assert s.claim_sweep("w:2")["id"] == b
                assert s.claim_sweep("w:2") is None
            assert s.claim_sweep("w:3")["id"] == a
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_migration_0002_on_postgresql(pg_url: str) -> None:
    """0001 -> 0002 keeps an existing sweep; the new states pass the CHECK, others do not."""
    from perftune.storage import upgrade

    upgrade(pg_url, "0001")
    engine = make_engine(parse_url(pg_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO perftune_workloads (name, framework, info, created_at) VALUES ('w', 'torch', '{}', now());"
                "INSERT INTO perftune_devices (fingerprint, framework, kind, name, count, info, first_seen, last_seen)"
                " VALUES ('ab', 'torch', 'cpu', 'x', 1, '{}', now(), now());"
                "INSERT INTO perftune_sweeps (study_name, workload_id, device_id, objective, state, started_at,"
                " n_trials, n_complete, settings) VALUES ('s', 1, 1, 'o', 'completed', now(), 3, 3, '{}')"))  # fmt: skip
        upgrade(pg_url)
        with open_store(pg_url) as s:
            old = s.get_sweep(1)
            assert (old["state"], old["trials_done"], old["cancel_requested"]) == ("completed", 0, False)
            assert s.get_sweep(s.queue_sweep({}, objective="o"))["state"] == "queued"
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("UPDATE perftune_sweeps SET state = 'bogus' WHERE id = 1"))
    finally:
        engine.dispose()
