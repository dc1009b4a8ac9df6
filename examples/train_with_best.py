"""Train with the config perftune tuned for this machine (or the framework defaults).

After a sweep such as ``perftune sweep --workload mlp-digits``, a training script asks for the
stored best config of its workload on this device and trains with it::

    python examples/train_with_best.py                     # mlp-digits, ./.perftune
    python examples/train_with_best.py --home /tmp/ws \\
        --workload examples/my_workload.py:make_workload   # a workload of your own

The heart of it is one call::

    import tuner
    record = tuner.best_config("mlp-digits", framework="torch", device="cpu")
    config = record.config if record else DEFAULTS

The training loop below is a plain PyTorch loop, to show what each tuned knob means; it trains
until the workload's quality target is reached (or a time cap) and prints how long it took.
``--json`` prints one JSON object instead (the config used, where it came from, the result).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

import tuner
from tuner.backends import make_optimizer
from tuner.errors import PerftuneError


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_config() -> dict[str, Any]:
    """The framework defaults perftune itself starts from (its baseline trial): the defaults of
    the built-in CPU search space, e.g. batch 32, Adam at lr 1e-3, fp32, all cores."""
    from search_spaces import load_space

    space = load_space("torch", "cpu", resources={"cores": usable_cores(), "device_count": 1,
                                                  "memory_gib": 0.0})  # fmt: skip
    return space.defaults()


def tuned_config(workload: str, device: str, home: str | None) -> tuple[dict[str, Any], str]:
    """``(config, source)``: the stored best for ``workload`` on ``device``, else the defaults.

    ``source`` is ``"stored"`` or ``"defaults"``. ``best_config`` returns ``None`` when nothing is
    stored for the key, and raises :class:`PerftuneError` when there is no perftune database at
    all yet (no sweep ever ran in that workspace): both fall back to the defaults.
    """
    try:
        record = tuner.best_config(workload, framework="torch", device=device, home=home)
    except PerftuneError as exc:
        print(f"note: {exc}", file=sys.stderr)
        record = None
    if record is None:
        return default_config(), "defaults"
    print(f"using the tuned config of {record.workload} on {record.device_name}: "
          f"{record.value:.3g} {record.unit} ({record.speedup or 1:.2f}x the default)",
          file=sys.stderr)  # fmt: skip
    return dict(record.config), "stored"


def train(wl, cfg: dict[str, Any], *, max_seconds: float | None, seed: int) -> dict[str, Any]:
    """Train the :class:`tuner.Workload` ``wl`` with ``cfg`` until its target (or a time cap)."""
    import torch
    import torch.nn.functional as F

    # Data parallelism: this script trains in one process. DDP over ``world_size`` ranks averages
    # the gradients of ``world_size`` batches of ``batch_size``, which is one batch of
    # ``batch_size * world_size`` here, and each rank ran ``num_threads`` threads.
    world = int(cfg.get("world_size", 1)) if cfg.get("parallel_strategy") == "ddp" else 1
    batch_size = int(cfg.get("batch_size", 32)) * world
    torch.set_num_threads(int(cfg.get("num_threads") or usable_cores()) * world)
    torch.manual_seed(seed)

    classification = wl.loss == "cross_entropy"
    x_tr, y_tr, x_va, y_va = (torch.as_tensor(a) for a in wl.data())
    if not classification:
        y_tr, y_va = y_tr.float(), y_va.float()
    loss_fn = wl.loss if callable(wl.loss) else {"cross_entropy": F.cross_entropy,
                                                  "mse": F.mse_loss}[wl.loss]  # fmt: skip

    def metric(out, y) -> float:
        if callable(wl.metric):
            return float(wl.metric(out, y))
        if wl.metric == "accuracy":
            return float((out.argmax(dim=1) == y).float().mean())
        return float(F.mse_loss(out, y))

    def autocast():
        if cfg.get("precision", "fp32") == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    model = wl.model()
    opt = make_optimizer(model.parameters(), cfg)  # built exactly as the trials built it
    cap = float(max_seconds or wl.budget_s)
    train_s, value, steps, epochs, reached = 0.0, float("nan"), 0, 0, False
    next_eval = wl.eval_interval_s
    while not reached and train_s < cap:
        epochs += 1
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(x_tr), batch_size):
            t = time.perf_counter()
            idx = perm[i : i + batch_size]
            with autocast():
                loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_s += time.perf_counter() - t
            steps += 1
            # Evaluate every eval_interval_s of training, as perftune does (not timed).
            if train_s >= next_eval:
                next_eval = train_s + wl.eval_interval_s
                model.eval()
                with torch.no_grad(), autocast():
                    value = metric(model(x_va).float(), y_va)
                model.train()
                reached = wl.reached(value)
                if reached or train_s >= cap:
                    break
    return {"workload": wl.name, "reached_target": reached, "metric": value,
            "target": wl.target, "train_time_s": round(train_s, 3), "steps": steps,
            "epochs": epochs}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train with perftune's tuned config.")
    parser.add_argument("--workload", default="mlp-digits",
                        help="a built-in workload or FILE.py:FUNCTION (default mlp-digits)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--home", default=None,
                        help="perftune workspace [env PERFTUNE_HOME; default ./.perftune]")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="training-time cap [default: the workload's budget]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from tuner.workload import resolve

    workload = resolve(args.workload, "torch")  # what make_workload() returns, for FILE.py:FUNC
    name = workload.name  # the key perftune stored the tuned config under
    cfg, source = tuned_config(name, args.device, args.home)
    result = train(workload, cfg, max_seconds=args.max_seconds, seed=args.seed)
    result = {"config": cfg, "source": source, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{name}: {source} config {cfg}")
        state = "reached" if result["reached_target"] else "did not reach"
        print(f"{state} the target {result['target']} (metric {result['metric']:.4f}) after "
              f"{result['train_time_s']:.2f} s of training, {result['steps']} steps")  # fmt: skip
    return 0 if result["reached_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
