"""A user's command as a trial, and the launched script's side of it (stdlib only).

``perftune sweep --name my-job --target 0.9 -- python train.py --bs {batch_size} --lr
{learning_rate}`` runs, per trial, the command with the template filled from the sampled config
(:func:`fill`), in the trial's process group (so the usual timeout kills it with everything it
started), with its output in the trial log. Inside, :func:`connect` (``perftune.Trial.connect()``)
gives the script the same :class:`~perftune.trial.Trial` as a training function gets, over the
environment perftune set: ``PERFTUNE_TRIAL`` (the request and a Unix socket). Rank 0 (``RANK``
under torchrun) talks to perftune over the socket: reports go to the pruner and its answers come
back; at exit the script's measurement is sent (or its error, classified as a trial's is).

A script that exits without connecting, or connects and reports nothing, is an error of the
workload (exit 2 for the sweep, after the first trial), not a silent zero; a non-zero exit is a
crash, or an OOM when the log says so; a hang is a timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import shutil
import socket
import string
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from perftune._proc import die_with_parent
from perftune.errors import NothingMeasured, TrialError, UsageError

__all__ = ["ENV", "command_space", "connect", "fill", "render", "run_command", "template_fields"]

#: The environment variable perftune sets for a launched command.
ENV = "PERFTUNE_TRIAL"


# ------------------------------------------------------------------------ the template
def template_fields(argv: list[str]) -> list[str]:
    """The knob names a command template uses (``{batch_size}``); ``{{`` and ``}}`` are
    literal braces. Raises :class:`UsageError` for a malformed template."""
    names: list[str] = []
    for arg in argv:
        try:
            parsed = list(string.Formatter().parse(arg))
        except ValueError as exc:
            raise UsageError(f"command template {arg!r}: {exc}") from None
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            if not field.isidentifier() or spec or conversion:
                raise UsageError(f"command template {arg!r}: {{{field}}} must be a plain knob "
                                 "name such as {batch_size}")  # fmt: skip
            names.append(field)
    return names


def render(value: Any) -> str:
    """A knob's value on a command line: booleans as ``true``/``false``, floats in full
    precision, everything else as ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def fill(argv: list[str], config: Mapping[str, Any]) -> list[str]:
    """The command with every ``{knob}`` replaced by the config's value."""
    values = {k: render(v) for k, v in config.items()}
    try:
        return [arg.format_map(values) for arg in argv]
    except KeyError as exc:
        raise UsageError(f"command template: {{{exc.args[0]}}} is not a knob of this trial's config "
                         f"(knobs: {', '.join(sorted(config))})") from None  # fmt: skip


def command_space(space: Any, argv: list[str]) -> Any:
    """The search space of a launched command: every ``{field}`` of the template must be one of
    its knobs, and ``parallel_strategy``/``world_size`` are held at their defaults unless the
    template names ``{world_size}`` (a command runs as many processes as it starts itself,
    e.g. ``torchrun --nproc-per-node {world_size}``)."""
    fields = template_fields(argv)
    unknown = [f for f in fields if f not in space.params]
    if unknown:
        raise UsageError(f"command template: {{{unknown[0]}}} is not a knob of the search space "
                         f"{space.name} (knobs: {', '.join(space.params)})")  # fmt: skip
    return space if "world_size" in fields else space.fixed(("parallel_strategy", "world_size"))


# ------------------------------------------------------------------------ perftune's side
def run_command(request: Any, channel: Any) -> dict[str, Any]:
    """Run ``request.command`` for one trial (in the trial process) and return its result, as a
    backend's ``run_trial`` does. Raises :class:`~perftune.errors.TrialError` (its cause set) or
    :class:`~perftune.errors.NothingMeasured` when the command gives no measurement. The
    batch-size probe (``measure="probe"``) launches the command once per batch size tried."""
    if request.measure == "probe":
        return _probe(request, channel)
    return _launch(request, channel)


def _probe(request: Any, channel: Any) -> dict[str, Any]:
    """The largest ``batch_size`` the command trains with: a short launch per size (its
    ``trial.step()`` stops it after a few steps), out of memory meaning "does not fit"
    (doubling, then bisection, as for a training function)."""
    from dataclasses import replace

    from perftune.backends._probe import find_max_batch_size

    cfg = dict(request.config)
    high, margin = int(cfg.pop("probe_max", 4096)), float(cfg.pop("probe_margin", 0.1))

    def fits(bs: int) -> bool:
        try:
            _launch(replace(request, config={**cfg, "batch_size": bs}), channel)
            ok = True
        except TrialError as exc:
            if exc.cause != "oom":
                raise
            ok = False
        channel.report(bs, 1.0 if ok else 0.0)
        return ok

    result = find_max_batch_size(fits, start=int(cfg.get("batch_size", 32)), max_val=high, margin=margin)
    metrics = {"max_batch_size": result.max_batch_size, "largest_fit": result.largest_fit,
               "first_oom": result.first_oom, "limited_by": result.limited_by,
               "attempts": len(result.tried)}  # fmt: skip
    return {"metrics": metrics, "curves": {"probe": [[b, int(ok)] for b, ok in result.tried]},
            "pruned": False}  # fmt: skip


def _launch(request: Any, channel: Any) -> dict[str, Any]:
    argv = fill(request.command, request.config)
    folder = tempfile.mkdtemp(prefix="perftune-cmd-")
    path = os.path.join(folder, "trial.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(8)
        env = {**os.environ, ENV: json.dumps({"request": request.to_dict(), "socket": path})}
        sys.stdout.flush()
        sys.stderr.flush()
        log = open(request.log_path, "ab") if request.log_path else None  # noqa: SIM115
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT if log else None)  # fmt: skip
        except OSError as exc:
            raise UsageError(f"command {argv[0]!r}: cannot start it ({exc.strerror})") from None
        finally:
            if log is not None:
                log.close()
        final = _serve(server, proc, channel)
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)
    return _outcome(final, proc.returncode, request.log_path, argv)


def _serve(server: socket.socket, proc: subprocess.Popen, channel: Any) -> dict[str, Any]:
    """Relay the script's reports to the pruner until the command exits; return what the
    script said last (``hello``, ``done`` or ``error``; empty if it never connected)."""
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, None)
    buffers: dict[socket.socket, bytes] = {}
    final: dict[str, Any] = {}
    while True:
        exited = proc.poll() is not None
        for key, _ in sel.select(timeout=0.05 if exited else 0.5):
            if key.data is None:
                conn, _ = server.accept()
                buffers[conn] = b""
                sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            conn = key.fileobj
            chunk = conn.recv(65536)
            if not chunk:
                sel.unregister(conn)
                conn.close()
                continue
            buffers[conn] += chunk
            while b"\n" in buffers[conn]:
                line, buffers[conn] = buffers[conn].split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("type") == "report":
                    prune = bool(channel.report(int(msg["step"]), float(msg["value"])))
                    conn.sendall((json.dumps({"prune": prune}) + "\n").encode())
                else:  # "hello", then "done" or "error": the last word counts
                    final = msg
        if exited and not sel.select(timeout=0):
            break
    for key in list(sel.get_map().values()):
        if key.data is not None:
            key.fileobj.close()
    sel.close()
    return final


def _outcome(final: dict[str, Any], status: int, log_path: str | None, argv: list[str]) -> dict[str, Any]:
    if final.get("type") == "done":
        return final["payload"]
    if final.get("type") == "error":
        if final.get("usage"):
            raise NothingMeasured(final["message"]) if final.get("nothing") else UsageError(final["message"])
        err = TrialError(final["message"])
        err.cause = final.get("cause", "crash")
        raise err
    if status != 0:
        err = TrialError(f"the command exited with status {status}" + _last_error(log_path))
        err.cause = "oom" if status in (-9, 137) or _mentions_oom(log_path) else "crash"
        raise err
    if final.get("type") == "hello":
        raise NothingMeasured(f"the command ({argv[0]}) connected but exited without a result")
    raise NothingMeasured(
        f"the command ({' '.join(argv)[:200]}) exited 0 without reporting to perftune: call "
        "perftune.Trial.connect() in the script, then trial.step() per training step and "
        "trial.report(metric) per evaluation")  # fmt: skip


def _log_tail(log_path: str | None, size: int = 16384) -> str:
    if not log_path:
        return ""
    with contextlib.suppress(OSError), open(log_path, "rb") as f:
        f.seek(max(0, os.path.getsize(log_path) - size))
        return f.read().decode(errors="replace")
    return ""


def _mentions_oom(log_path: str | None) -> bool:
    from perftune.backends._base import _OOM_MARKERS

    tail = _log_tail(log_path).lower()
    return any(marker in tail for marker in _OOM_MARKERS)


def _last_error(log_path: str | None) -> str:
    lines = [ln.strip() for ln in _log_tail(log_path).splitlines() if "Error" in ln or "error" in ln]
    return f": {lines[-1][:300]}" if lines else ""


# ------------------------------------------------------------------------ the script's side
class _SocketChannel:
    """Rank 0's line to perftune: reports (answered with the pruner's decision), the end."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall((json.dumps(msg, default=str) + "\n").encode())

    def report(self, step: int, value: float) -> bool:
        self.send({"type": "report", "step": int(step), "value": float(value)})
        reply = self.reader.readline()
        return bool(reply and json.loads(reply).get("prune"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


_STATE: dict[str, Any] = {}


def connect() -> Any:
    """The :class:`~perftune.trial.Trial` of this process (see the module docstring). Called
    again, it returns the same trial."""
    from perftune.trial.api import _CURRENT

    if _CURRENT:
        return _CURRENT[-1]
    if "trial" in _STATE:
        return _STATE["trial"]
    raw = os.environ.get(ENV)
    trial = _launched(json.loads(raw)) if raw else _free()
    _STATE["trial"] = trial
    return trial


def _launched(env: dict[str, Any]) -> Any:
    from perftune.backends import TrialRequest, get_backend
    from perftune.trial._run import plan_for
    from perftune.trial.api import Trial

    request = TrialRequest.from_dict(env["request"])
    description = request.description or {}
    rank = int(os.environ.get("RANK", 0))
    channel = _SocketChannel(env["socket"]) if rank == 0 else None
    if channel is not None:
        channel.send({"type": "hello", "pid": os.getpid(), "world": int(os.environ.get("WORLD_SIZE", 1))})
    die_with_parent()  # torchrun's workers run in sessions of their own: no rank outlives a trial
    trial = Trial(request.config, plan=plan_for(request, description), channel=channel,
                  kit=lambda: get_backend(request.framework)().standalone_kit(request),
                  name=description.get("name", ""), seed=request.seed)  # fmt: skip
    if channel is not None:
        _STATE["error"] = None
        previous = sys.excepthook

        def hook(kind, exc, tb):
            _STATE["error"] = exc
            previous(kind, exc, tb)

        sys.excepthook = hook
        atexit.register(_send_result, trial, channel)
    return trial


def _send_result(trial: Any, channel: _SocketChannel) -> None:
    """At exit, rank 0 sends the measurement, or the error that ended the script."""
    from perftune.backends._base import classify_exception

    exc = _STATE.get("error")
    try:
        if exc is None:
            channel.send({"type": "done", "payload": trial.result(gather=False)})
        else:
            raise exc
    except NothingMeasured as err:
        channel.send({"type": "error", "usage": True, "nothing": True, "message": str(err)})
    except UsageError as err:
        channel.send({"type": "error", "usage": True, "message": str(err)})
    except BaseException as err:  # noqa: BLE001 - reported as the trial's failure
        text = str(err).strip().splitlines()
        channel.send({"type": "error", "cause": classify_exception(err),
                      "message": f"{type(err).__name__}: {text[0] if text else ''}"[:500]})  # fmt: skip
    finally:
        channel.close()


def _free() -> Any:
    """Outside perftune: a ``free`` trial over the framework's defaults on the CPU (the script
    runs as it would without perftune; the clock still measures)."""
    from perftune.trial._standalone import standalone_trial

    framework = next((f for f, m in (("torch", "torch"), ("tensorflow", "tensorflow"),
                                     ("mindspore", "mindspore")) if m in sys.modules), "torch")  # fmt: skip
    return standalone_trial(None, framework=framework, device="cpu", source="defaults")
