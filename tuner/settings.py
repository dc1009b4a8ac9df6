"""Where perftune keeps things: the workspace and the three databases.

Everything lives under a workspace, ``./.perftune/`` by default (``--home`` or
``PERFTUNE_HOME``): the Optuna study database, the MLflow tracking database and artifacts, and
perftune's own config database, each its own SQLite file. ``--storage`` / ``PERFTUNE_STORAGE``,
``--tracking-uri`` / ``PERFTUNE_TRACKING_URI`` and ``--db`` / ``PERFTUNE_DB`` take any URL the
underlying library accepts, PostgreSQL included; keep the three apart (separate databases or
schemas), since Optuna, MLflow and perftune each keep their own Alembic version table.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from perftune.errors import PerftuneError, UsageError

#: How long a process waits for another one to finish setting up the workspace's databases.
SETUP_LOCK_TIMEOUT_S = 300.0


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def _normalize(url: str) -> str:
    from perftune.storage import normalize_url

    return normalize_url(url)


def _redact(url: str) -> str:
    from perftune.storage import redact_url

    return redact_url(url)


@dataclass(frozen=True)
class Workspace:
    home: Path
    storage: str  # Optuna RDB storage URL
    tracking_uri: str  # MLflow tracking URI
    db: str  # perftune config store URL

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None, *, storage: str | None = None,
                tracking_uri: str | None = None, db: str | None = None) -> Workspace:  # fmt: skip
        home_path = Path(home or os.environ.get("PERFTUNE_HOME") or ".perftune").expanduser()
        home_path = home_path.absolute()
        storage = storage or os.environ.get("PERFTUNE_STORAGE") or _sqlite(home_path / "optuna.db")
        tracking_uri = (tracking_uri or os.environ.get("PERFTUNE_TRACKING_URI")
                        or _sqlite(home_path / "mlflow.db"))  # fmt: skip
        db = db or os.environ.get("PERFTUNE_DB") or _sqlite(home_path / "perftune.db")
        for flag, value in (("--storage", storage), ("--db", db)):
            if "://" not in value:
                raise UsageError(f"{flag} {_redact(value)}: not a database URL (e.g. sqlite:///path.db, "
                                 "postgresql://user@host/db)")  # fmt: skip
        ws = cls(home_path, _normalize(storage), _normalize_tracking(tracking_uri), _normalize(db))
        ws.check_distinct()
        return ws

    def environ(self) -> dict[str, str]:
        """The environment variables under which a perftune process started from this one
        resolves this same workspace (``PERFTUNE_HOME``, ``_STORAGE``, ``_TRACKING_URI``,
        ``_DB``): how URLs, passwords included, reach child processes, since a command line is
        visible to every user of the machine (``ps``) and an environment only to its owner."""
        return {"PERFTUNE_HOME": str(self.home), "PERFTUNE_STORAGE": self.storage,
                "PERFTUNE_TRACKING_URI": self.tracking_uri, "PERFTUNE_DB": self.db}  # fmt: skip

    @property
    def artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def tracking_server(self) -> bool:
        """Whether tracking goes to an MLflow server (which then decides artifact locations);
        otherwise artifacts go under the workspace's ``mlartifacts/``."""
        return self.tracking_uri.startswith(("http://", "https://", "databricks"))

    def check_distinct(self) -> None:
        urls = {"--storage": self.storage, "--tracking-uri": self.tracking_uri, "--db": self.db}
        seen: dict[str, str] = {}
        for flag, url in urls.items():
            if url in seen:
                raise UsageError(
                    f"{flag} and {seen[url]} name the same database: Optuna, MLflow and perftune "
                    "each need their own (a separate database or schema)"
                )
            seen[url] = flag

    def prepare(self) -> None:
        """Create the workspace folders (only once all input has been checked)."""
        for path in (self.home, self.logs, self.artifacts):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"--home {self.home}: cannot create {path}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def setup_lock(self, timeout: float = SETUP_LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the workspace's setup lock (``setup.lock``, an OS file lock: released if the
        holder dies) while this process creates or migrates the databases: Optuna's tables,
        MLflow's schema (made when its tracking store is first opened) and perftune's Alembic
        migrations. Two sweeps started at the same moment take turns: the second waits, then
        finds the schemas in place. Call :meth:`prepare` first."""
        from filelock import FileLock, Timeout

        path = self.home / "setup.lock"
        try:
            with FileLock(path, timeout=timeout):
                yield
        except Timeout:
            raise PerftuneError(f"--home {self.home}: another perftune process has been setting up "
                                f"the databases for {timeout:g} s (it holds {path})") from None


def _normalize_tracking(uri: str) -> str:
    if uri.startswith(("http://", "https://", "databricks", "file:")):
        return uri
    if "://" not in uri:
        raise UsageError(f"--tracking-uri {_redact(uri)}: not a tracking URI (e.g. sqlite:///mlflow.db, "
                         "http://host:5000, postgresql://user@host/mlflow)")  # fmt: skip
    return _normalize(uri)
