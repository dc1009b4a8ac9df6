"""PyTorch inference trials: a trained model served with one config, in a trial worker.

Knobs (``search_spaces/inference/cpu.yaml``): ``batch_size`` (samples per request),
``precision`` (``fp32``; ``bf16``/``fp16`` weights and inputs where the device has them),
``quantization`` (``none``; ``dynamic_int8``: ``torch.ao.quantization.quantize_dynamic`` on the
Linear layers, int8 weights and dynamically quantized activations, CPU only), ``compile``
(``torch.compile`` mode), ``inference_mode`` (``torch.inference_mode`` instead of
``torch.no_grad``), ``channels_last`` (conv models), ``num_threads`` (intra-op threads of each
replica) and ``replicas`` (threads serving at once, sharing the weights).

Weight-only int8 needs torchao, which perftune does not install: it is offered only where
``torchao`` is importable (:func:`quantizations`), and has never run here.

A language model whose workload says ``extra["generate"] = {"prompt": P, "new_tokens": N}``
(``gpt-tiny``) is served by generating: a request is ``batch_size`` prompts of ``P`` tokens, each
continued greedily by ``N`` tokens, one forward pass per token (the model has no KV cache, so a
step recomputes its context, as the model is written). A *sample* is then a generated token:
``throughput_sps`` is tokens per second, and ``p50_ms`` ... ``max_ms`` are per-token (per
decoding step) latencies; ``request_p99_ms`` is a whole request's.

The model comes from :func:`trained_model`: the workload's ``weights`` file if it names one,
else the file the sweep's ``fit`` request wrote (the workload trained once to its target by the
built-in loop, :func:`fit`).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from typing import Any

from perftune.backends._host import rss_peak_mb
from perftune.backends._serving import (
    check_workload,
    fit_result,
    metered_serve,
    quality_metrics,
    weights_path,
)
from perftune.errors import InvalidConfig, UsageError

QUANTIZATIONS = ("none", "dynamic_int8", "weight_only_int8")
PRECISIONS = {"cpu": ["fp32", "bf16"], "cuda": ["fp32", "bf16", "fp16"], "xpu": ["fp32", "bf16", "fp16"],
              "npu": ["fp32", "bf16", "fp16"], "mps": ["fp32", "fp16"], "tpu": ["fp32", "bf16"]}  # fmt: skip
PARAMS = ("batch_size", "precision", "quantization", "compile", "inference_mode", "channels_last",
          "num_threads", "replicas")  # fmt: skip


def quantizations(device_class: str) -> list[str]:
    """The quantizations this installation can run on ``device_class`` (stdlib only)."""
    if device_class != "cpu":  # quantize_dynamic's kernels (fbgemm, onednn, qnnpack) are CPU ones
        return ["none"]
    out = ["none", "dynamic_int8"]
    if importlib.util.find_spec("torchao") is not None:
        out.append("weight_only_int8")
    return out


def capabilities(device_class: str) -> dict[str, Any]:
    return {"params": list(PARAMS),
            "choices": {"precision": PRECISIONS.get(device_class, ["fp32"]),
                        "quantization": quantizations(device_class),
                        "compile": ["none", "default", "max-autotune"],
                        "inference_mode": [False, True], "channels_last": [False, True]}}  # fmt: skip


def fit(backend: Any, workload: Any, request: Any, channel: Any) -> dict[str, Any]:
    """Train ``workload`` once with ``request.config`` (the training space's defaults) to its
    target with the built-in loop, and save its weights to ``request.model_path``."""
    import torch

    from perftune.backends._base import TrialRequest
    from perftune.backends._torch import (
        TorchKit,
        _unwrapped,
        builtin_loop,
        device_record,
        validate_config,
    )
    from perftune.trial._run import run_rank

    check_workload(workload)
    train = TrialRequest(**{**request.to_dict(), "measure": "converge"})
    device = device_record(train)
    kit = TorchKit(train.config, validate_config(train.config, device), device, train)
    result = run_rank(builtin_loop(workload), kit, train, channel, workload.describe())
    fitted = fit_result(workload, result["metrics"], train.budget_s)
    model = _unwrapped(kit.models[-1]).to("cpu")
    tmp = f"{request.model_path}.tmp{os.getpid()}"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, request.model_path)  # a reader never sees half a file
    return fitted


def trained_model(workload: Any, request: Any):
    """The workload's model with its trained weights, on the CPU, in eval mode."""
    import torch

    path = weights_path(workload, request)
    model = workload.model()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - the user's file: report it as bad input
        raise UsageError(f"--workload {workload.name}: cannot load the weights {path}: "
                         f"{type(exc).__name__}: {str(exc)[:200]}") from None  # fmt: skip
    return model.eval()


def configure(model, config: dict[str, Any], device, example):
    """``model`` as ``config`` serves it: quantized, cast, laid out, compiled (a new module;
    ``model`` is left as it was)."""
    import torch

    quant = config.get("quantization", "none")
    precision = config.get("precision", "fp32")
    if quant != "none" and precision != "fp32":
        raise InvalidConfig(f"quantization {quant} runs in fp32 only, not {precision}")
    m = copy.deepcopy(model)
    if quant == "dynamic_int8":
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated for torchao
            warnings.simplefilter("ignore")
            m = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
    elif quant == "weight_only_int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(m, Int8WeightOnlyConfig())
    m = m.to(device)
    if precision in ("bf16", "fp16"):
        m = m.to({"bf16": torch.bfloat16, "fp16": torch.float16}[precision])
    if config.get("channels_last") and (example is None or example.dim() == 4):  # 4-D weights only
        m = m.to(memory_format=torch.channels_last)
    mode = config.get("compile", "none")
    if mode != "none":
        m = torch.compile(m, mode=None if mode == "default" else mode)
    return m


def prepare_inputs(x, config: dict[str, Any], device):
    """Inputs as the configured model takes them (dtype, memory format, device)."""
    import torch

    precision = config.get("precision", "fp32")
    if precision in ("bf16", "fp16") and config.get("quantization", "none") == "none":
        x = x.to({"bf16": torch.bfloat16, "fp16": torch.float16}[precision])
    if config.get("channels_last") and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device)


def generator(model, prompt_inputs, new_tokens: int, sync, steps: list[float], timing: dict[str, bool]):
    """``predict`` for a generating model: greedy decoding of ``new_tokens`` after the prompts;
    each step's time is appended to ``steps`` while ``timing["on"]``."""
    import time

    import torch

    def predict(x):
        ctx = prompt_inputs(x)
        for _ in range(new_tokens):
            t0 = time.perf_counter()
            nxt = model(ctx)[:, -1].float().argmax(-1, keepdim=True).to(ctx.dtype)
            ctx = torch.cat([ctx, nxt], dim=1)
            sync()
            if timing["on"]:
                steps.append(time.perf_counter() - t0)
        return ctx

    return predict


def run_inference(workload: Any, request: Any) -> dict[str, Any]:
    """One inference trial: load, configure, measure quality on the validation set, then serve
    (:func:`~perftune.trial._serve.serve`) and report latencies, throughput, memory, energy."""
    import torch

    from perftune.backends._torch import _metric, _tensors, device_record
    from perftune.backends._torch_accel import accelerator

    check_workload(workload)
    config, info = request.config, device_record(request)
    threads = int(config.get("num_threads") or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(request.seed)
    acc = accelerator(info["kind"])
    acc.set_device(0)
    device = acc.device(0)
    _, _, x_va, y_va = _tensors(torch, workload, "cpu")
    reference = trained_model(workload, request)
    bs = int(config.get("batch_size", 1))
    model = configure(reference, config, device, x_va[:1])
    grad_off = torch.inference_mode if config.get("inference_mode") else torch.no_grad

    def predict(x):
        with grad_off():
            out = model(prepare_inputs(x, config, device))
        acc.synchronize()
        return out

    with torch.no_grad():
        ref_out = torch.cat([reference(x_va[i : i + 1024]) for i in range(0, len(x_va), 1024)])
        out = torch.cat([predict(x_va[i : i + bs]).float().cpu() for i in range(0, len(x_va), bs)])
    quality = _metric(torch, workload.metric, out, y_va)
    ref_quality = _metric(torch, workload.metric, ref_out, y_va)
    gen, steps, timing = workload.extra.get("generate"), [], {"on": False}
    per_request = gen["new_tokens"] if gen else 1  # samples a request yields: generated tokens
    requests = [(x_va[i : i + bs, : gen["prompt"]] if gen else x_va[i : i + bs], len(x_va[i : i + bs]) * per_request)
                for i in range(0, len(x_va) - bs + 1, bs)]  # fmt: skip
    if not requests:
        raise InvalidConfig(f"batch_size {bs} is larger than the validation set ({len(x_va)} samples)")
    if gen:  # token ids stay float32 (the model casts them), whatever the precision

        def decode_step(ctx):
            with grad_off():
                return model(ctx)

        predict = generator(decode_step, lambda x: x.to(device), gen["new_tokens"], acc.synchronize, steps, timing)
    result, energy = metered_serve([predict] * int(config.get("replicas", 1)), requests, request, kind=info["kind"],
                                   on_thread=lambda: torch.set_num_threads(threads),
                                   on_phase=lambda timed: timing.update(on=timed))  # fmt: skip
    served = result.metrics()
    if gen:  # latencies per generated token; the request's as well
        from perftune.trial._serve import percentiles

        served = {**served, "request_p99_ms": served["p99_ms"], "new_tokens": gen["new_tokens"],
                  **{f"{k}_ms": v * 1000 for k, v in percentiles(steps).items()}}  # fmt: skip
    metrics = {**served, **quality_metrics(quality, ref_quality, workload.mode), **energy,
               "peak_rss_mb": rss_peak_mb(), "batch_size": bs}
    peak = acc.peak_memory_bytes()
    if peak is not None:
        metrics["peak_device_memory_mb"] = peak / 2**20
    return {"metrics": metrics, "curves": {}, "pruned": False}
