"""Where trials run, seen from the sweep process.

:class:`Executor` is the extension point. :class:`ProcessExecutor` (the default) keeps one
fork-server worker per framework (see :mod:`perftune._worker`), under the framework's own
interpreter if one is configured, and runs each trial in a fresh forked child with a timeout.
:class:`InProcessExecutor` runs trials in the calling process: no isolation, no timeout; for
tests and for measuring the service's own overhead.
"""

from __future__ import annotations

import abc
import atexit
import functools
import importlib.util
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perftune.backends import (
    NullChannel,
    TrialOutcome,
    TrialRequest,
    classify_exception,
    get_backend,
)
from perftune.backends._base import Channel
from perftune.errors import UsageError, WorkerError

#: ``on_report(step, value) -> prune?``
ReportCallback = Callable[[int, float], bool]

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def python_for(framework: str) -> str:
    """The interpreter that runs ``framework``'s trials.

    In order: ``PERFTUNE_PYTHON_<FRAMEWORK>`` (e.g. a virtualenv with that framework's own
    NumPy); this interpreter, if the framework is importable here; a ``.venv-<framework>``
    virtualenv in the working directory or in perftune's source checkout (what ``make test``
    builds); else this interpreter, whose worker then reports the framework as not installed.
    """
    env = os.environ.get(f"PERFTUNE_PYTHON_{framework.upper()}")
    if env:
        return env
    module = get_backend(framework).module
    if importlib.util.find_spec(module) is not None:
        return sys.executable
    for root in (Path.cwd(), Path(_PACKAGE_ROOT)):
        candidate = root / f".venv-{framework}" / "bin" / "python"
        if candidate.is_file():
            return str(candidate)
    return sys.executable


@functools.cache
def _perftune_path() -> str:
    """A folder holding only the ``perftune`` package, for another interpreter's PYTHONPATH:
    putting perftune's own site-packages there would shadow that interpreter's packages
    (MindSpore's NumPy 1.x with this environment's NumPy 2, say).

    The package is a folder of links: to each file of this package and to its ``storage`` and
    ``search_spaces`` sub-packages, wherever they are (inside the package when installed from a
    wheel; next to it, as ``storage/`` and ``search_spaces/``, in a source checkout)."""
    folder = tempfile.mkdtemp(prefix="perftune-path-")
    package = os.path.join(folder, "perftune")
    os.mkdir(package)
    here = os.path.dirname(os.path.abspath(__file__))
    parts = {name: os.path.join(here, name) for name in os.listdir(here)}
    for sub in ("storage", "search_spaces"):
        parts[sub] = importlib.util.find_spec(f"perftune.{sub}").submodule_search_locations[0]
    for name, path in parts.items():
        os.symlink(path, os.path.join(package, name))
    atexit.register(shutil.rmtree, folder, True)
    return folder


class Executor(abc.ABC):
    """Runs workload descriptions, device discovery and trials for one framework.

    Not thread safe: one sweep loop drives one executor. Owns its worker processes; call
    :meth:`close` (or use it as a context manager) to stop them.
    """

    framework: str

    @abc.abstractmethod
    def describe(self, workload: str) -> dict[str, Any]:
        """Metadata of a workload spec (see :meth:`perftune.workload.Workload.describe`)."""

    @abc.abstractmethod
    def devices(self) -> list[dict[str, Any]]:
        """Devices the framework finds on this machine."""

    @abc.abstractmethod
    def run(self, request: TrialRequest, on_report: ReportCallback | None = None) -> TrialOutcome:
        """Run one trial. Never raises for a failing trial: the outcome carries the cause."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release worker processes."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CallbackChannel(Channel):
    def __init__(self, on_report: ReportCallback | None) -> None:
        self.on_report = on_report

    def report(self, step: int, value: float) -> bool:
        return bool(self.on_report and self.on_report(step, value))


class InProcessExecutor(Executor):
    """Runs everything in the calling process (imports the framework here). No isolation and no
    timeout: a crash or hang takes the caller with it."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.backend = get_backend(framework)()

    def describe(self, workload: str) -> dict[str, Any]:
        from perftune.workload import resolve

        return resolve(workload, self.framework).describe()

    def devices(self) -> list[dict[str, Any]]:
        return self.backend.devices()

    def run(self, request: TrialRequest, on_report: ReportCallback | None = None) -> TrialOutcome:
        from perftune.workload import resolve

        t0 = time.perf_counter()
        try:
            if request.command:
                from perftune.trial.launcher import run_command

                payload = run_command(request, _CallbackChannel(on_report))
            else:
                workload = resolve(request.workload, self.framework)
                payload = self.backend.run_trial(workload, request, _CallbackChannel(on_report))
        except UsageError as exc:
            return TrialOutcome("failed", cause="invalid", message=str(exc), usage=True,
                                wall_s=time.perf_counter() - t0)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a failing trial is an outcome
            return TrialOutcome("failed", cause=classify_exception(exc),
                                message=f"{type(exc).__name__}: {exc}"[:500],
                                wall_s=time.perf_counter() - t0)  # fmt: skip
        return TrialOutcome("pruned" if payload.get("pruned") else "ok",
                            metrics=payload.get("metrics", {}), curves=payload.get("curves", {}),
                            wall_s=time.perf_counter() - t0, knobs_read=payload.get("knobs_read"))  # fmt: skip


class ProcessExecutor(Executor):
    """A fork-server worker process per framework; each trial in a fresh child with a timeout.

    The worker is started lazily and restarted if it dies. ``log_dir`` receives the worker's
    own stderr (trial logs go where each request's ``log_path`` says).
    """

    def __init__(self, framework: str, *, python: str | None = None, log_dir: str | None = None,
                 start_timeout: float = 120.0) -> None:  # fmt: skip
        get_backend(framework)
        self.framework = framework
        self.python = python or python_for(framework)
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()

    # -- process management
    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_perftune_path(), env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        stderr: Any = subprocess.DEVNULL
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            stderr = open(os.path.join(self.log_dir, f"worker-{self.framework}.log"), "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "perftune._worker", "--framework", self.framework],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise UsageError(f"cannot start the {self.framework} worker with {self.python}: {exc}") from exc
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        self._queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, self._queue), daemon=True).start()
        msg = self._next(time.monotonic() + self.start_timeout)
        if msg is None or msg.get("type") != "ready":
            self._kill()
            if msg and msg.get("type") == "fatal":  # the framework is missing or broken there
                raise UsageError(f"--framework {self.framework}: {msg.get('message')}")
            detail = msg.get("message") if msg else "it exited or did not answer"
            raise WorkerError(f"the {self.framework} worker ({self.python}) did not start: {detail}")
        self.info = msg

    @staticmethod
    def _pump(proc: subprocess.Popen, q: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                q.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        q.put(None)

    def _next(self, deadline: float) -> dict[str, Any] | None:
        try:
            return self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return {"type": "__timeout__"}

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def _ensure(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def _kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._send({"op": "shutdown"})
                self.proc.stdin.close()  # EOF ends the worker's loop even mid-trial
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        self._kill()

    # -- requests
    def _control(self, op: str, **fields: Any) -> Any:
        self._ensure()
        rid = next(self._ids)
        self._send({"op": op, "id": rid, **fields})
        msg = self._next(time.monotonic() + 240)
        if msg is None or msg.get("type") != "reply":
            self._kill()
            raise WorkerError(f"the {self.framework} worker failed during {op!r}")
        if not msg["ok"]:
            raise (UsageError if msg.get("usage") else WorkerError)(msg["error"])
        return msg["data"]

    def describe(self, workload: str) -> dict[str, Any]:
        return self._control("describe", workload=workload)

    def devices(self) -> list[dict[str, Any]]:
        return self._control("devices")

    def run(self, request: TrialRequest, on_report: ReportCallback | None = None) -> TrialOutcome:
        self._ensure()
        rid = next(self._ids)
        t0 = time.perf_counter()
        self._send({"op": "run", "id": rid, "request": request.to_dict()})
        # The worker enforces the trial timeout; this deadline only guards against the worker.
        # (warming the workload up to 60 s, the trial, the stack dump and exit grace, slack)
        deadline = time.monotonic() + request.timeout_s + 60 + 30
        while True:
            msg = self._next(deadline)
            if msg is None or msg.get("type") == "__timeout__":
                self._kill()
                return TrialOutcome("failed", cause="crash", message="the trial worker died",
                                    wall_s=time.perf_counter() - t0, log_path=request.log_path)  # fmt: skip
            if msg.get("id") != rid:
                continue
            if msg["type"] == "report":
                prune = bool(on_report and on_report(int(msg["step"]), float(msg["value"])))
                self._send({"op": "prune_reply", "id": rid, "prune": prune})
            elif msg["type"] == "result":
                return TrialOutcome(
                    status=msg["status"], metrics=msg.get("metrics", {}),
                    curves=msg.get("curves", {}), cause=msg.get("cause"),
                    message=msg.get("message"), wall_s=msg.get("wall_s"),
                    log_path=msg.get("log_path"), knobs_read=msg.get("knobs_read"),
                    usage=bool(msg.get("usage")),
                )  # fmt: skip


def make_executor(framework: str, *, isolate: bool = True, log_dir: str | None = None) -> Executor:
    return ProcessExecutor(framework, log_dir=log_dir) if isolate else InProcessExecutor(framework)


__all__ = ["Executor", "InProcessExecutor", "NullChannel", "ProcessExecutor", "make_executor",
           "python_for"]  # fmt: skip
