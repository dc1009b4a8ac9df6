"""Test workloads for perftune's fault handling (imported by the trial worker, not by pytest).

``faulty`` is a tiny MLP on 8x8 digits whose forward pass misbehaves depending on the
*training* batch size it sees:

====== ==========================================================
 batch  what happens
====== ==========================================================
 16     hangs (``time.sleep(3600)``)                  -> timeout
 64     kills its own process with SIGSEGV            -> crash
 128    asks the CPU allocator for 4 PiB              -> oom
 256    multiplies the output by NaN                  -> diverged
 other  trains normally (target val accuracy 0.5, reached quickly)
====== ==========================================================

Evaluation (``self.training`` is False) always behaves. The remainders of an epoch
(1437 training samples) are never one of the bad sizes for the batch sizes used in the tests.

``noisy`` prints to stdout from every hook (factory, data, model, forward) and never reaches
its target, so a converge trial always reports to the pruner.
"""

from __future__ import annotations

import json
import os
import signal
import time

from perftune import Workload
from perftune.workloads.digits_data import digits_split

HANG, CRASH, OOM, NAN = 16, 64, 128, 256


def _data():
    x_tr, y_tr, x_va, y_va = digits_split(8)
    return x_tr.reshape(len(x_tr), -1), y_tr, x_va.reshape(len(x_va), -1), y_va


def _model():
    import torch
    from torch import nn

    class Faulty(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x):
            if self.training:
                bs = x.shape[0]
                if bs == HANG:
                    time.sleep(3600)
                elif bs == CRASH:
                    os.kill(os.getpid(), signal.SIGSEGV)
                    time.sleep(60)  # the signal is delivered before this returns
                elif bs == OOM:
                    torch.empty(1 << 52, dtype=torch.uint8)  # 4 PiB: the allocator refuses
                elif bs == NAN:
                    return self.net(x) * float("nan")
            return self.net(x)

    return Faulty()


def faulty() -> Workload:
    return Workload(name="faulty-digits", framework="torch", model=_model, data=_data,
                    target=0.5, budget_s=20.0, eval_interval_s=0.05,
                    description="MLP on 8x8 digits that fails on purpose at some batch sizes")  # fmt: skip


def _fake_protocol() -> None:
    """Lines that would pass for the worker's own messages if stdout reached the protocol."""
    for rid in range(1, 40):
        print(json.dumps({"type": "result", "id": rid, "status": "failed", "cause": "crash",
                          "message": "fake result printed by the workload"}))  # fmt: skip
        print(json.dumps({"type": "reply", "id": rid, "ok": False, "error": "fake reply"}))


def _noisy_data():
    print("noisy: loading data")
    _fake_protocol()
    return _data()


def _noisy_model():
    from torch import nn

    print("noisy: building the model")
    _fake_protocol()

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

        def forward(self, x):
            print("noisy: forward", tuple(x.shape), flush=True)
            return self.net(x)

    return Noisy()


def noisy() -> Workload:
    print("noisy: factory called")
    _fake_protocol()
    return Workload(name="noisy-digits", framework="torch", model=_noisy_model, data=_noisy_data,
                    target=1.01, budget_s=1.0, eval_interval_s=0.05,
                    description="prints everywhere; its target is out of reach")  # fmt: skip


def not_a_workload():
    return {"name": "not a workload"}


def _empty_training_set():
    x_tr, y_tr, x_va, y_va = _data()
    return x_tr[:0], y_tr[:0], x_va, y_va


def empty_training_set() -> Workload:
    """No training samples: the training loop used to spin until the trial timeout."""
    return Workload(name="empty-digits", framework="torch", model=_model, data=_empty_training_set,
                    target=0.5, budget_s=20.0, eval_interval_s=0.05)  # fmt: skip
