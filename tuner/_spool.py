"""The tracking spool: MLflow operations kept in the workspace until the tracking server takes them.

``<home>/tracking-spool.db`` is an SQLite file (WAL, ``synchronous=NORMAL``: a crash of the
process loses nothing committed) with three tables:

* ``ops``: one row per tracking operation, in the order it happened: ``kind`` (``start``: the
  sweep's parent run; ``trial``: a nested run with its params, metrics, curves and final
  status; ``summary``: metrics and tags on a run; ``artifact``: a file, copied under
  ``<home>/tracking-spool/`` since the original is temporary; ``view``: the experiment's saved
  view of the runs table; ``end``: a run's final status),
  ``body`` (JSON, with the timestamps of when it happened), the tracking URI it is for (as a
  reference: :func:`spool_key`), ``attempts`` and ``state`` (``pending``, or ``failed`` with the server's
  error when the server refused it). A delivered op is deleted.
* ``runs``: ``ref`` -> MLflow run id. Every run the spool creates carries the tag
  ``perftune_ref`` = its ref (``local-<32 hex>``), which is the placeholder id a sweep uses
  until the server has assigned the real one. An op tried before (``attempts > 0``: the process
  may have died after the server applied it) looks its run up by that tag instead of creating
  it again, and metrics carry their original timestamps, so nothing is delivered twice.
* ``fixups``: where a placeholder was recorded (the Optuna study's ``mlflow_run_id`` attribute,
  perftune's store), rewritten to the real run id once it is known. The Optuna storage and
  perftune database are recorded as references (:func:`spool_key`), never with their passwords:
  the process that applies a fix-up uses its own URLs, those whose reference matches.

No URL in the spool holds a secret: every one is recorded as :func:`spool_key` gives it (and a
spool written before that rule is rewritten when it is opened).

:class:`Deliverer` applies the pending ops of one tracking URI in order, under an exclusive lock
on ``<home>/tracking-spool.lock`` (several processes of one workspace share the spool). It stops
at the first op the server does not answer (:class:`Transient`) and leaves it, and everything
after it, pending.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPOOL_DB = "tracking-spool.db"
SPOOL_FILES = "tracking-spool"
PLACEHOLDER = "local-"
REF_TAG = "perftune_ref"
#: Seconds an HTTP request to the tracking server may take (MLflow's env vars, if set, win).
HTTP_TIMEOUT_S = 2
log = logging.getLogger("perftune.tracking")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uri TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ops_queue ON ops (uri, state, id);
CREATE TABLE IF NOT EXISTS runs (
    ref TEXT PRIMARY KEY, uri TEXT NOT NULL, run_id TEXT NOT NULL, experiment_id TEXT
);
CREATE TABLE IF NOT EXISTS fixups (
    ref TEXT PRIMARY KEY, uri TEXT NOT NULL, storage TEXT, study TEXT, db TEXT
);
"""


class Transient(Exception):
    """The server did not answer (down, timeout, 5xx): the op stays pending, in order."""


class Busy(Transient):
    """Another process holds the delivery lock."""


class Permanent(Exception):
    """The server refused the op (4xx) or its file is gone: the op is recorded as failed."""


def new_ref() -> str:
    return PLACEHOLDER + uuid.uuid4().hex


def spool_key(uri: str) -> str:
    """A URL as the spool records it (the tracking server's, a fix-up's Optuna storage and
    perftune database): no trailing slash, its secrets redacted (:func:`perftune.storage.redact_url`).
    A reference, not the secret: it names the server, database, user and options, so a process
    finds its own URL by it. Idempotent."""
    from perftune.storage import redact_url

    return redact_url(uri.rstrip("/"))


#: Every column of the spool that holds a URL (as a :func:`spool_key`).
_URL_COLUMNS = (("ops", "uri"), ("runs", "uri"), ("fixups", "uri"), ("fixups", "storage"), ("fixups", "db"))


def _reason(exc: BaseException) -> str:
    """A short reason, its URLs redacted: MLflow's messages quote the whole urllib3 chain."""
    from perftune.storage import redact_text

    text = redact_text(exc)
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "unknown host"),
                          ("Connection reset", "connection reset"), ("RemoteDisconnected", "connection closed"),
                          ("Connection aborted", "connection aborted")):  # fmt: skip
        if needle in text:
            return short
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def _classify(exc: BaseException) -> Exception:
    try:
        from mlflow.exceptions import MlflowException, RestException
    except ImportError:  # pragma: no cover
        return Transient(str(exc))
    if isinstance(exc, Transient | Permanent):
        return exc
    if isinstance(exc, RestException):
        status = exc.get_http_status_code()
        if 400 <= status < 500 and status not in (408, 429):
            return Permanent(_reason(exc))
        return Transient(_reason(exc))
    if isinstance(exc, MlflowException | ConnectionError | TimeoutError):
        return Transient(_reason(exc))
    try:
        import requests

        if isinstance(exc, requests.RequestException):
            return Transient(_reason(exc))
    except ImportError:  # pragma: no cover
        pass
    from perftune.storage import redact_text

    return Permanent(redact_text(f"{type(exc).__name__}: {exc}")[:300])


class Spool:
    """One workspace's spool file. Use an object from one thread at a time."""

    def __init__(self, home: str | os.PathLike) -> None:
        self.home = Path(home)
        self.path = self.home / SPOOL_DB
        self.files = self.home / SPOOL_FILES
        self.home.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                    check_same_thread=False)  # fmt: skip
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA secure_delete=ON")  # what is deleted or rewritten is zeroed
        self.conn.executescript(_SCHEMA)
        self._scrub()

    def _scrub(self) -> None:
        """Rewrite as references (:func:`spool_key`) the URLs a spool written by an earlier
        perftune kept with their passwords, and truncate the WAL that held the old pages."""
        stale = [(table, column, url) for table, column in _URL_COLUMNS
                 for (url,) in self.conn.execute(f"SELECT DISTINCT {column} FROM {table} "
                                                 f"WHERE {column} IS NOT NULL").fetchall()
                 if spool_key(url) != url]  # fmt: skip
        if not stale:
            return
        with self.tx():
            for table, column, url in stale:
                self.conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (spool_key(url), url))
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def append(self, uri: str, kind: str, body: dict[str, Any], owner: str) -> int:
        cur = self.conn.execute("INSERT INTO ops (uri, kind, body, owner, created) VALUES (?, ?, ?, ?, ?)",
                                (uri, kind, json.dumps(body, default=str), owner, time.time()))  # fmt: skip
        return int(cur.lastrowid)

    def keep_file(self, path: str) -> str:
        """Copy an artifact into the spool (its original is usually a temporary file)."""
        folder = self.files / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return shutil.copy2(path, folder / os.path.basename(path))

    def count(self, uri: str | None = None, *, state: str = "pending", owner: str | None = None,
              other_uris: bool = False) -> int:  # fmt: skip
        sql, args = "SELECT count(*) FROM ops WHERE state = ?", [state]
        if uri is not None:
            sql += " AND uri != ?" if other_uris else " AND uri = ?"
            args.append(uri)
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        return int(self.conn.execute(sql, args).fetchone()[0])

    def first_error(self, uri: str) -> str | None:
        row = self.conn.execute("SELECT error FROM ops WHERE uri = ? AND state = 'failed' ORDER BY id LIMIT 1",
                                (uri,)).fetchone()  # fmt: skip
        return row[0] if row else None

    def next_op(self, uri: str) -> tuple[int, str, dict[str, Any], int] | None:
        """The oldest pending op: (id, kind, body, attempts so far)."""
        row = self.conn.execute("SELECT id, kind, body, attempts FROM ops WHERE uri = ? AND state = 'pending' "
                                "ORDER BY id LIMIT 1", (uri,)).fetchone()  # fmt: skip
        return None if row is None else (row[0], row[1], json.loads(row[2]), row[3])

    def attempt(self, op_id: int) -> None:
        self.conn.execute("UPDATE ops SET attempts = attempts + 1 WHERE id = ?", (op_id,))

    def done(self, op_id: int, uri: str, mapped: tuple[str, str, str | None] | None = None) -> None:
        """The op was applied: forget it (and remember the run it created, if a ref)."""
        with self.tx():
            if mapped is not None:
                self.record_run(uri, *mapped)
            self.conn.execute("DELETE FROM ops WHERE id = ?", (op_id,))

    def record_run(self, uri: str, ref: str, run_id: str, experiment_id: str | None = None) -> None:
        self.conn.execute("INSERT OR REPLACE INTO runs (ref, uri, run_id, experiment_id) VALUES (?, ?, ?, ?)",
                          (ref, uri, run_id, experiment_id))  # fmt: skip

    def failed(self, op_id: int, error: str) -> None:
        self.conn.execute("UPDATE ops SET state = 'failed', error = ? WHERE id = ?", (error, op_id))

    def run_id(self, uri: str, ref: str) -> str | None:
        row = self.conn.execute("SELECT run_id FROM runs WHERE uri = ? AND ref = ?", (uri, ref)).fetchone()
        return row[0] if row else None

    def start_failed(self, uri: str, ref: str) -> bool:
        rows = self.conn.execute("SELECT body FROM ops WHERE uri = ? AND kind = 'start' AND state = 'failed'",
                                 (uri,)).fetchall()  # fmt: skip
        return any(json.loads(b).get("ref") == ref for (b,) in rows)

    def add_fixup(self, ref: str, uri: str, storage: str | None, study: str | None, db: str | None) -> None:
        """Record where placeholder ``ref`` went: the study in the Optuna ``storage`` and
        perftune's ``db``, both recorded as references (:func:`spool_key`), not as given."""
        self.conn.execute("INSERT OR REPLACE INTO fixups (ref, uri, storage, study, db) VALUES (?, ?, ?, ?, ?)",
                          (ref, spool_key(uri), storage and spool_key(storage), study,
                           db and spool_key(db)))  # fmt: skip

    def fixups(self, uri: str) -> list[tuple[str, str, str | None, str | None, str | None]]:
        """Fix-ups whose placeholder now has its real run id: (ref, run_id, storage reference,
        study, db reference)."""
        return self.conn.execute("SELECT f.ref, r.run_id, f.storage, f.study, f.db FROM fixups f JOIN runs r "
                                 "ON r.ref = f.ref AND r.uri = f.uri WHERE f.uri = ?", (uri,)).fetchall()  # fmt: skip

    def drop_fixup(self, ref: str) -> None:
        self.conn.execute("DELETE FROM fixups WHERE ref = ?", (ref,))

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0) -> Iterator[bool]:
        """The delivery lock (one deliverer per workspace at a time); yields whether it is held."""
        fd = os.open(self.home / "tracking-spool.lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def apply_fixup(ref: str, run_id: str, storage: str | None, study: str | None, db: str | None) -> None:
    """Replace the placeholder ``ref`` by ``run_id`` in the study's ``mlflow_run_id`` attribute
    and in perftune's store (sweeps, best configs, history)."""
    if storage and study:
        import optuna

        from perftune._optuna import open_storage

        st = optuna.load_study(study_name=study, storage=open_storage(storage))
        if st.user_attrs.get("mlflow_run_id") == ref:
            st.set_user_attr("mlflow_run_id", run_id)
    if db:
        from perftune.storage import open_store

        with open_store(db) as store:
            store.replace_mlflow_run_id(ref, run_id)


def apply_fixups(spool: Spool, uri: str, storage: str | None, db: str | None) -> int:
    """Apply (and forget) every fix-up whose run id is known, through this process's own Optuna
    ``storage`` and perftune ``db`` URLs: the spool names the databases of a fix-up by reference
    only (:func:`spool_key`), so one recorded for other databases waits for a process that has
    them. One that fails stays for later. Returns how many were applied."""
    from perftune.storage import redact_text

    mine = {spool_key(url): url for url in (storage, db) if url}
    n, elsewhere = 0, []
    for ref, run_id, storage_ref, study, db_ref in spool.fixups(uri):
        if any(r is not None and r not in mine for r in (storage_ref, db_ref)):
            elsewhere.append(ref)
            continue
        try:
            apply_fixup(ref, run_id, mine.get(storage_ref), study, mine.get(db_ref))
        except Exception as exc:  # noqa: BLE001 - retried on the next sync
            log.warning("perftune: could not record MLflow run %s in place of %s: %s", run_id, ref,
                        redact_text(exc))  # fmt: skip
            continue
        spool.drop_fixup(ref)
        n += 1
    if elsewhere:
        log.warning("perftune: %d placeholder MLflow run ids are recorded in other databases than "
                    "this --storage and --db; `perftune sync` with the sweep's --storage and --db "
                    "replaces them", len(elsewhere))  # fmt: skip
    return n


class Deliverer:
    """Applies one tracking URI's pending ops, in order, through an :class:`MlflowTracker`."""

    def __init__(self, home: str | os.PathLike, tracking_uri: str, artifact_root: str | None = None) -> None:
        from perftune.tracking import MlflowTracker

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        self.key = spool_key(tracking_uri)
        self.spool = Spool(home)
        self.mlflow = MlflowTracker(tracking_uri, artifact_root)
        self.experiment_ids: dict[str, str] = {}
        self.delivered = self.failed = 0

    def deliver(self, *, lock_wait_s: float = 0.0, stop=None) -> int:
        """Deliver pending ops until none is left (or ``stop()``); returns how many were
        delivered. Raises :class:`Transient` when the server does not answer; ops it refuses
        are marked failed and skipped."""
        n = 0
        with self.spool.lock(lock_wait_s) as held:
            if not held:
                raise Busy("another process is delivering this spool")
            while stop is None or not stop():
                op = self.spool.next_op(self.key)
                if op is None:
                    break
                op_id, kind, body, attempts = op
                self.spool.attempt(op_id)
                try:
                    mapped = getattr(self, f"_{kind}")(body, attempts > 0)
                except Exception as exc:  # noqa: BLE001 - sorted into retry later / refused
                    err = _classify(exc)
                    if isinstance(err, Transient):
                        raise err from None
                    self.spool.failed(op_id, str(err))
                    self.failed += 1
                    log.warning("perftune: the tracking server refused a %s event (%s); kept in %s",
                                kind, err, self.spool.path)  # fmt: skip
                    continue
                self.spool.done(op_id, self.key, mapped)
                if kind == "artifact":
                    shutil.rmtree(os.path.dirname(body["file"]), ignore_errors=True)
                n += 1
                self.delivered += 1
        return n

    # -- one op each
    def _experiment(self, name: str) -> str:
        if name not in self.experiment_ids:
            self.experiment_ids[name] = self.mlflow._experiment(name)
        return self.experiment_ids[name]

    def _lookup(self, experiment_id: str, ref: str) -> str | None:
        from mlflow.entities import ViewType

        found = self.mlflow.client.search_runs([experiment_id], filter_string=f"tags.{REF_TAG} = '{ref}'",
                                               run_view_type=ViewType.ALL, max_results=1)  # fmt: skip
        return found[0].info.run_id if found else None

    def resolve(self, ref: str | None, experiment: str) -> str | None:
        """The MLflow run id of ``ref`` (a placeholder or already a real id)."""
        if not ref or not ref.startswith(PLACEHOLDER):
            return ref
        run_id = self.spool.run_id(self.key, ref)
        if run_id is None:  # created by another workspace's spool (a worker on another machine)?
            run_id = self._lookup(self._experiment(experiment), ref)
            if run_id is not None:
                self.spool.record_run(self.key, ref, run_id)
        if run_id is None:
            if self.spool.start_failed(self.key, ref):
                raise Permanent(f"its parent run {ref} was refused by the server")
            raise Transient(f"the sweep's run {ref} is not created yet")
        return run_id

    def _create(self, exp: str, body: dict[str, Any], tried: bool, tags: dict[str, str]) -> tuple[str, bool]:
        if tried and (run_id := self._lookup(exp, body["ref"])):
            return run_id, False
        run = self.mlflow.client.create_run(exp, start_time=body["start_time"], run_name=body["name"],
                                            tags={**tags, REF_TAG: body["ref"]})  # fmt: skip
        return run.info.run_id, True

    def _start(self, body: dict[str, Any], tried: bool):
        exp = self._experiment(body["experiment"])
        run_id, _ = self._create(exp, body, tried, body["tags"])
        self.mlflow._batch(run_id, params=body["params"], ts=body["ts"])
        return body["ref"], run_id, exp

    def _trial(self, body: dict[str, Any], tried: bool):
        exp = self._experiment(body["experiment"])
        parent = self.resolve(body["parent"], body["experiment"])
        tags = {**body["tags"], **({"mlflow.parentRunId": parent} if parent else {})}
        run_id, _ = self._create(exp, body, tried, tags)
        self.mlflow._batch(run_id, params=body["params"], metrics=body["metrics"],
                           curves=body["curves"], ts=body["ts"])  # fmt: skip
        self.mlflow.client.set_terminated(run_id, status=body["status"], end_time=body["end_time"])
        return None

    def _summary(self, body: dict[str, Any], tried: bool):
        run_id = self.resolve(body["run"], body["experiment"])
        self.mlflow._batch(run_id, metrics=body["metrics"], tags=body["tags"], ts=body["ts"])

    def _artifact(self, body: dict[str, Any], tried: bool):
        run_id = self.resolve(body["run"], body["experiment"])
        if not os.path.exists(body["file"]):
            raise Permanent(f"{body['file']}: the spooled copy is gone")
        self.mlflow.client.log_artifact(run_id, body["file"], body["artifact_path"])

    def _view(self, body: dict[str, Any], tried: bool):
        self.mlflow.save_view_on(self._experiment(body["experiment"]), body["state"])

    def _end(self, body: dict[str, Any], tried: bool):
        run_id = self.resolve(body["run"], body["experiment"])
        self.mlflow.client.set_terminated(run_id, status=body["status"], end_time=body["end_time"])

    def close(self) -> None:
        self.spool.close()
