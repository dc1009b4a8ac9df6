"""The ranks of a multi-process trial (PyTorch DDP, TensorFlow multi-worker): one fork helper.

The trial process is rank 0 (the chief: it talks to the pruner); ``world - 1`` more ranks are
forked from it before any framework runtime starts, so they inherit the loaded data. All ranks
share the trial's process group, so the worker's kill on timeout reaches them all, and each rank
dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar

from perftune.backends._base import Channel
from perftune.errors import InvalidConfig

T = TypeVar("T")

#: Exit status of a rank that rejected the config (the chief rejects it too, and says why).
INVALID_EXIT = 2

#: Multi-process trainers are never freed: the processes end with ``os._exit``, and freeing a
#: distributed model after its process group is torn down can block forever.
KEEPALIVE: list = []


def run_ranks(world: int, rank_main: Callable[[int], object], chief: Callable[[], T],
              channel: Channel, what: str) -> T:  # fmt: skip
    """Fork ranks ``1..world-1`` running ``rank_main(rank)``, then run ``chief()`` here and
    return its result.

    A rank that dies before the chief has its result ends the trial at once through
    ``channel.fail`` (``oom`` if it was SIGKILLed, else ``crash``; ``what`` names it in the
    message), instead of the chief waiting in a collective until a timeout. A rank that
    rejected the config exits with :data:`INVALID_EXIT` and is not a crash: the chief raises
    the same :class:`InvalidConfig`. If the chief raises, the other ranks are killed.
    """
    pids = []
    for rank in range(1, world):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked rank
            code = 0
            from perftune._proc import die_with_parent

            die_with_parent()
            try:
                rank_main(rank)
            except InvalidConfig:
                code = INVALID_EXIT
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)

    stopping = threading.Event()

    def watch() -> None:
        for _ in pids:  # whichever rank ends first
            pid, status = os.waitpid(-1, 0)
            invalid = os.WIFEXITED(status) and os.WEXITSTATUS(status) == INVALID_EXIT
            if status != 0 and not invalid and not stopping.is_set():
                killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
                how = "was killed by SIGKILL" if killed else f"ended with wait status {status}"
                channel.fail("oom" if killed else "crash", f"{what} {pid} {how}")
                os._exit(3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = chief()
        stopping.set()  # the result is in: how the other ranks shut down no longer matters
        return result
    except BaseException:
        stopping.set()
        for pid in pids:  # they would wait for the chief in a collective until a timeout
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        raise
    finally:
        watcher.join(timeout=30)


__all__ = ["INVALID_EXIT", "KEEPALIVE", "free_ports", "run_ranks"]


#: Where :func:`free_ports` looks: below Linux's default ephemeral range (32768-60999).
PORT_RANGE = (20000, 32767)


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """``n`` distinct TCP ports free on every interface now, for servers that a trial's ranks
    start seconds later (TensorFlow's gRPC servers, MindSpore's scheduler).

    They are drawn outside the kernel's ephemeral range: a port ``bind(0)`` returned is free
    only until it is closed, and in the seconds before a rank binds it, any outgoing
    connection on the machine (a database, a tracking server) may take it as its local port,
    and the rank's server then fails to start. Ports outside that range are never handed out
    by the kernel; another program that picks ports by hand is the only race left."""
    rng = rng or random.Random()
    low, high = _ephemeral_range()
    lo, hi = PORT_RANGE if PORT_RANGE[1] < low or PORT_RANGE[0] > high else (1024, low - 1)
    ports: list[int] = []
    for _ in range(200 * n):
        if len(ports) == n:
            break
        port = rng.randint(lo, hi)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # as the gRPC server will
            except OSError:
                continue
        ports.append(port)
    if len(ports) < n:
        raise OSError(f"no {n} free TCP ports in {lo}-{hi}")
    return ports
