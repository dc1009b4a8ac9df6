"""The trial worker: a fork server for one framework (``python -m perftune._worker --framework F``).

It imports the framework once (no device initialised), then forks a fresh child per request, so
a trial is isolated (its crash, OOM or hang cannot take down the sweep) without paying the
framework's import per trial. It talks to the sweep process over JSON lines: requests on stdin,
replies on the original stdout (fd 1 is re-pointed at stderr so user code that prints cannot
corrupt the protocol). Each child runs in its own process group, so a timeout kills the trial
with every process it started (DDP ranks included).

Only the standard library and the backend are imported here: this module may run under another
interpreter (a framework's own virtualenv) than the sweep process.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import sys
import threading
import time
import traceback
from typing import Any

from perftune._proc import die_with_parent, dump_stacks, kill_group
from perftune.backends import TrialRequest, classify_exception, classify_exit, get_backend
from perftune.backends._base import Channel
from perftune.errors import UsageError

CONTROL_TIMEOUT_S = 180.0
EXIT_GRACE_S = 5.0


class LineReader:
    """Buffered JSON-lines reader over a raw file descriptor (select-friendly)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.eof = fd, b"", False

    def fill(self) -> None:
        chunk = os.read(self.fd, 65536)
        if chunk:
            self.buf += chunk
        else:
            self.eof = True

    def pop(self) -> dict[str, Any] | None:
        if b"\n" not in self.buf:
            return None
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line) if line.strip() else self.pop()

    def read_blocking(self) -> dict[str, Any] | None:
        while True:
            msg = self.pop()
            if msg is not None or self.eof:
                return msg
            self.fill()


class LineWriter:
    """Thread-safe JSON-lines writer over a raw file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd, self.lock = fd, threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, default=str, allow_nan=True) + "\n").encode()
        with self.lock:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]


class PipeChannel(Channel):
    """The trial child's side: reports go up, prune decisions come back."""

    def __init__(self, writer: LineWriter, reader: LineReader) -> None:
        self.writer, self.reader = writer, reader

    def report(self, step: int, value: float) -> bool:
        self.writer.send({"type": "report", "step": int(step), "value": float(value)})
        reply = self.reader.read_blocking()
        return bool(reply and reply.get("prune"))

    def fail(self, cause: str, message: str) -> None:
        self.writer.send({"type": "error", "cause": cause, "message": message})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


class Server:
    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.backend = get_backend(framework)()
        self.out = LineWriter(os.dup(1))
        os.dup2(2, 1)  # user code printing to stdout must not reach the protocol
        self.inp = LineReader(0)
        self.warm_failed: set[str] = set()

    # -- request handlers, run in the forked child
    def _describe(self, msg: dict[str, Any], channel: Channel) -> Any:
        from perftune.workload import resolve

        return resolve(msg["workload"], self.framework).describe()

    def _devices(self, msg: dict[str, Any], channel: Channel) -> Any:
        return self.backend.devices()

    def _run(self, msg: dict[str, Any], channel: Channel) -> Any:
        from perftune.workload import resolve

        request = TrialRequest.from_dict(msg["request"])
        if request.command:
            from perftune.trial.launcher import run_command

            return run_command(request, channel)
        workload = resolve(request.workload, self.framework)
        return self.backend.run_trial(workload, request, channel)

    def _warm(self, spec: str) -> None:
        """Load the workload's data here once so forked trials inherit it (bounded: a workload
        whose import or data loading hangs is left to fail inside the trial, with a timeout)."""
        if spec in self.warm_failed:
            return
        from perftune.workload import warm

        def alarm(signum, frame):
            raise TimeoutError("warming the workload took too long")

        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(60)
        try:
            warm(spec, self.framework)
        except BaseException:  # noqa: BLE001 - the trial itself reports the error
            self.warm_failed.add(spec)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)

    # -- fork machinery
    def _fork(self, msg: dict[str, Any], handler, timeout: float, log_path: str | None):
        c2p_r, c2p_w = os.pipe()
        p2c_r, p2c_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.setpgid(0, 0)
                os.close(c2p_r)
                os.close(p2c_w)
                os.close(self.out.fd)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                if log_path:
                    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                import faulthandler

                die_with_parent()
                faulthandler.enable()  # a fatal signal (SIGSEGV...) leaves a stack in the log
                # On a timeout the server asks for every thread's stack before the kill, so a
                # hang leaves its location in the trial log.
                faulthandler.register(signal.SIGUSR1, all_threads=True)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                writer = LineWriter(c2p_w)
                channel = PipeChannel(writer, LineReader(p2c_r))
                try:
                    payload = handler(msg, channel)
                    writer.send({"type": "done", "payload": payload})
                except BaseException as exc:  # noqa: BLE001 - every failure is reported
                    traceback.print_exc()
                    writer.send({
                        "type": "error",
                        "cause": classify_exception(exc),
                        "message": _one_line(exc) if not isinstance(exc, UsageError) else str(exc),
                        "usage": isinstance(exc, UsageError),
                    })  # fmt: skip
            except BaseException:  # noqa: BLE001
                code = 70
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(c2p_w)
        os.close(p2c_r)
        child = LineReader(c2p_r)
        sel = selectors.DefaultSelector()
        sel.register(c2p_r, selectors.EVENT_READ, "child")
        sel.register(0, selectors.EVENT_READ, "control")
        deadline = time.monotonic() + timeout
        final: dict[str, Any] | None = None
        timed_out = cancelled = False
        try:
            while not child.eof:
                if final is not None:  # a result is in: leave the trial a moment to exit
                    deadline = min(deadline, time.monotonic() + EXIT_GRACE_S)
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = final is None
                    break
                for key, _ in sel.select(timeout=min(left, 1.0)):
                    if key.data == "child":
                        child.fill()
                        while (m := child.pop()) is not None:
                            if m["type"] == "report":
                                self.out.send({**m, "id": msg.get("id")})
                            elif final is None or final.get("type") != "error":
                                final = m
                    else:
                        self.inp.fill()
                        while (m := self.inp.pop()) is not None:
                            if m.get("op") == "prune_reply":
                                try:
                                    os.write(p2c_w, (json.dumps(m) + "\n").encode())
                                except OSError:  # the trial already ended (e.g. a DDP rank died)
                                    pass
                            elif m.get("op") in ("cancel", "shutdown"):
                                cancelled = True
                        if self.inp.eof:
                            cancelled = True
                if cancelled:
                    break
        finally:
            if timed_out:
                dump_stacks(pid)
            kill_group(pid)
            _, status = os.waitpid(pid, 0)
            kill_group(pid)  # stray processes the trial started (e.g. DDP ranks)
            sel.close()
            os.close(c2p_r)
            os.close(p2c_w)
        return final, status, timed_out, cancelled

    def handle(self, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), msg.get("id")
        if op == "ping":
            self.out.send({"type": "reply", "id": rid, "ok": True, "data": "pong"})
            return
        if op == "run":
            request = msg["request"]
            t0 = time.perf_counter()
            if not request.get("command"):
                self._warm(request["workload"])
            final, status, timed_out, cancelled = self._fork(
                msg, self._run, float(request.get("timeout_s", 300)), request.get("log_path")
            )
            outcome: dict[str, Any] = {"wall_s": time.perf_counter() - t0,
                                       "log_path": request.get("log_path")}  # fmt: skip
            if final is not None and final["type"] == "done" and not timed_out:
                payload = final["payload"] or {}
                outcome.update(status="pruned" if payload.get("pruned") else "ok",
                               metrics=payload.get("metrics", {}),
                               curves=payload.get("curves", {}),
                               knobs_read=payload.get("knobs_read"))  # fmt: skip
            elif final is not None and final["type"] == "error" and not timed_out:
                cause = "invalid" if final.get("usage") else final["cause"]
                outcome.update(status="failed", cause=cause, message=final["message"],
                               usage=bool(final.get("usage")))  # fmt: skip
            elif cancelled:
                outcome.update(status="failed", cause="crash", message="cancelled")
            else:
                cause, message = classify_exit(status, killed_for_timeout=timed_out)
                if timed_out:
                    message = f"exceeded the trial timeout of {request.get('timeout_s')} s"
                outcome.update(status="failed", cause=cause, message=message)
            self.out.send({"type": "result", "id": rid, **outcome})
            return
        handlers = {"describe": self._describe, "devices": self._devices}
        if op not in handlers:
            self.out.send({"type": "reply", "id": rid, "ok": False, "error": f"unknown op {op!r}"})
            return
        final, status, timed_out, _ = self._fork(msg, handlers[op], CONTROL_TIMEOUT_S, None)
        if final is not None and final["type"] == "done":
            self.out.send({"type": "reply", "id": rid, "ok": True, "data": final["payload"]})
        elif final is None and op == "describe":  # only the workload's code ran there: its fault
            err = f"--workload {msg.get('workload')}: {_ended(status, timed_out)}"
            self.out.send({"type": "reply", "id": rid, "ok": False, "error": err, "usage": True})
        else:
            err = final["message"] if final else classify_exit(status, killed_for_timeout=timed_out)[1]
            self.out.send({"type": "reply", "id": rid, "ok": False, "error": err,
                           "usage": bool(final and final.get("usage"))})  # fmt: skip

    def serve(self) -> int:
        try:
            versions = self.backend.preload()
        except ImportError as exc:
            var = f"PERFTUNE_PYTHON_{self.framework.upper()}"
            self.out.send({"type": "fatal", "message": (
                f"{self.framework} is not usable with {sys.executable} ({_one_line(exc)}); "
                f"install it there or set {var} to an interpreter that has it")})  # fmt: skip
            return 1
        except Exception as exc:  # noqa: BLE001
            self.out.send({"type": "fatal",
                           "message": f"cannot import {self.framework}: {_one_line(exc)}"})
            return 1
        self.out.send({"type": "ready", "pid": os.getpid(), "framework": self.framework,
                       "python": sys.executable, "versions": versions})  # fmt: skip
        while True:
            msg = self.inp.read_blocking()
            if msg is None or msg.get("op") == "shutdown":
                return 0
            self.handle(msg)


def _ended(status: int, timed_out: bool) -> str:
    """How a child that loaded a workload ended without a reply, in words."""
    if timed_out:
        return f"did not finish loading within {CONTROL_TIMEOUT_S:g} s"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)} while loading"
    return f"exited while loading (status {os.WEXITSTATUS(status)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perftune._worker")
    parser.add_argument("--framework", required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep process decides when we stop
    # If the sweep or worker process that started us is killed outright (SIGKILL: no EOF is
    # guaranteed to reach us while a trial waits on a pruning reply), go with it.
    die_with_parent()
    return Server(args.framework).serve()


if __name__ == "__main__":
    sys.exit(main())
