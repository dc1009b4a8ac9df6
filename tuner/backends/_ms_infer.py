"""MindSpore inference trials: a trained model served with one config, in a trial worker.

The CPU only (``cuda``/``npu`` serving has not run here, so :func:`capabilities` offers none).

Knobs (``search_spaces/inference/mindspore-cpu.yaml``): ``batch_size`` (samples per request),
``precision`` (``fp32``; ``fp16``: ``Cell.to_float(mindspore.float16)``, fp16 weights and
activations, the fp32 inputs cast by the cell) and ``exec_mode`` (``pynative``, eager; ``graph``:
the Cell call compiled with ``mindspore.jit``, per trial, in the forked trial process).

What MindSpore 2.10's CPU backend cannot do, so this module offers no knob for it (each checked
under ``.venv-mindspore`` on a 2-core host):

* bf16: the CPU has no MatMul kernel for it (``Select CPU operator[MatMul] fail! Unsupported
  data type!``). fp16 runs, but 2x slower than fp32 in both exec modes: a knob the search may
  reject, kept because it really runs.
* MindSpore: no quantization on the CPU backend without mindspore_gs (golden-stick, a separate
  package perftune does not install). The base package's quantization ops are fake-quant ops
  for quantization-aware training and Ascend kernels; nothing turns a trained Cell into an
  int8 one on the CPU.
* Intra-op threads: ``mindspore.device_context.cpu.op_tuning.threads_num`` can be set once per
  process (so per trial, in the forked child), but 1 and 2 threads gave the same time for a
  2048x2048 MatMul and the same pool of kernel threads: it is set to the usable cores, as
  training does, and not tuned.
* Replicas (several threads serving at once): a Cell called from several Python threads
  returns wrong outputs in PyNative (4 of 600 concurrent calls differed from the single-thread
  result by up to 0.3) and raises framework errors under ``jit``: one request at a time.

The model comes from :func:`trained_model`: the workload's ``weights`` checkpoint if it names
one, else the file the sweep's ``fit`` request wrote (the workload trained once to its target
by the built-in loop, :func:`fit`).
"""

from __future__ import annotations

import os
from typing import Any

from perftune.backends._host import rss_peak_mb, usable_cores
from perftune.backends._serving import (
    check_workload,
    fit_result,
    metered_serve,
    quality_metrics,
    weights_path,
)
from perftune.errors import InvalidConfig, UsageError

PRECISIONS = {"cpu": ["fp32", "fp16"]}
EXEC_MODES = ("pynative", "graph")
PARAMS = ("batch_size", "precision", "exec_mode")


def capabilities(device_class: str) -> dict[str, Any] | None:
    """What a MindSpore inference trial honours on ``device_class`` (stdlib only), or None."""
    if device_class not in PRECISIONS:
        return None
    return {"params": list(PARAMS),
            "choices": {"precision": list(PRECISIONS[device_class]), "exec_mode": list(EXEC_MODES)}}  # fmt: skip


def validate(config: dict[str, Any], device: str) -> None:
    """Reject an inference config this module cannot run (raises :class:`InvalidConfig`)."""
    kind = device.split(":", 1)[0]
    if kind not in PRECISIONS:
        raise InvalidConfig(f"MindSpore serves models on the CPU only here, not {kind}")
    if config.get("precision", "fp32") not in PRECISIONS[kind]:
        raise InvalidConfig(f"precision {config.get('precision')!r} is not supported by MindSpore "
                            f"inference on {kind} (supported: {', '.join(PRECISIONS[kind])})")  # fmt: skip
    if config.get("exec_mode", "pynative") not in EXEC_MODES:
        raise InvalidConfig(f"exec_mode {config.get('exec_mode')!r} is not one of pynative, graph")
    if int(config.get("batch_size", 1)) < 1:
        raise InvalidConfig("batch_size must be >= 1")
    if int(config.get("replicas", 1)) != 1:
        raise InvalidConfig("replicas: a MindSpore Cell is not safe to call from several threads")


def fit(backend: Any, workload: Any, request: Any, channel: Any) -> dict[str, Any]:
    """Train ``workload`` once with ``request.config`` (the training space's defaults) to its
    target with the built-in loop, and save its parameters to ``request.model_path`` (a
    MindSpore checkpoint)."""
    from perftune.backends._base import TrialRequest
    from perftune.backends._mindspore import MindSporeKit, builtin_loop, validate_config
    from perftune.trial._run import run_rank

    check_workload(workload)
    if not request.model_path:
        raise UsageError("a fit request needs model_path (where to write the checkpoint)")
    train = TrialRequest(**{**request.to_dict(), "measure": "converge"})
    validate_config(train.config, train.device)
    if train.config.get("parallel_strategy", "single") != "single":
        raise UsageError("the model to serve is trained in one process (parallel_strategy single)")
    nets: list[Any] = []

    class FitKit(MindSporeKit):  # keeps the network the built-in loop builds, to save it
        def prepare(self, model):
            nets.append(model)
            return super().prepare(model)

    kit = FitKit(train.config, train)
    result = run_rank(builtin_loop(workload), kit, train, channel, workload.describe())
    fitted = fit_result(workload, result["metrics"], train.budget_s)
    if not nets:
        raise UsageError(f"--workload {workload.name}: the training loop built no network to save")
    # save_checkpoint appends ".ckpt" to a name without it: the temporary name keeps the suffix.
    tmp = f"{request.model_path}.tmp{os.getpid()}.ckpt"
    kit.ms.save_checkpoint(nets[-1], tmp)
    os.replace(tmp, request.model_path)  # a reader never sees half a file
    return fitted


def trained_model(workload: Any, request: Any):
    """The workload's network with its trained parameters, in inference mode (fp32)."""
    import mindspore as ms

    path = weights_path(workload, request)
    net = workload.model()
    try:
        missing, _ = ms.load_param_into_net(net, ms.load_checkpoint(path), strict_load=True)
    except Exception as exc:  # noqa: BLE001 - the user's file: report it as bad input
        raise UsageError(f"--workload {workload.name}: cannot load the checkpoint {path}: "
                         f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}") from None  # fmt: skip
    if missing:
        raise UsageError(f"--workload {workload.name}: the checkpoint {path} lacks "
                         f"{len(missing)} parameters of the model (e.g. {missing[0]})")  # fmt: skip
    net.set_train(False)
    return net


def configure(workload: Any, request: Any, config: dict[str, Any]):
    """``predict(x)``: the trained model as ``config`` serves it (cast, compiled), returning
    the outputs as a float32 NumPy array (so every call ends once its result is ready)."""
    import mindspore as ms

    net = trained_model(workload, request)
    if config.get("precision", "fp32") == "fp16":
        net.to_float(ms.float16)
    call = net
    if config.get("exec_mode", "pynative") == "graph":

        def forward(x):
            return net(x)

        call = ms.jit(forward)

    def predict(x):
        return call(x).astype(ms.float32).asnumpy()

    return predict


def run_inference(workload: Any, request: Any) -> dict[str, Any]:
    """One inference trial: load, configure, measure quality on the validation set, then serve
    (:func:`~perftune.trial._serve.serve`) and report latencies, throughput, memory, energy."""
    import mindspore as ms
    import numpy as np

    from perftune.backends._mindspore import _arrays, _metric

    check_workload(workload)
    config = request.config
    validate(config, request.device)
    ms.set_device("CPU")
    ms.device_context.cpu.op_tuning.threads_num(usable_cores())  # once per process: this trial's
    ms.set_seed(request.seed)
    _, _, x_va, y_va = _arrays(workload)
    bs = int(config.get("batch_size", 1))
    requests = [(ms.Tensor(x_va[i : i + bs]), bs) for i in range(0, len(x_va) - bs + 1, bs)]
    if not requests:
        raise InvalidConfig(f"batch_size {bs} is larger than the validation set ({len(x_va)} samples)")
    reference = trained_model(workload, request)
    predict = configure(workload, request, config)
    ref_out = np.concatenate([reference(ms.Tensor(x_va[i : i + 1024])).asnumpy()
                              for i in range(0, len(x_va), 1024)])  # fmt: skip
    out = np.concatenate([predict(ms.Tensor(x_va[i : i + bs])) for i in range(0, len(x_va), bs)])
    y = ms.Tensor(y_va)
    quality = _metric(workload.metric, ms.Tensor(out.astype(np.float32)), y)
    ref_quality = _metric(workload.metric, ms.Tensor(ref_out.astype(np.float32)), y)
    result, energy = metered_serve([predict], requests, request)
    metrics = {**result.metrics(), **quality_metrics(quality, ref_quality, workload.mode), **energy,
               "peak_rss_mb": rss_peak_mb(), "batch_size": bs}
    return {"metrics": metrics, "curves": {}, "pruned": False}
