"""TensorFlow inference trials: a trained Keras model served with one config, in a trial worker.

Knobs (``search_spaces/inference/tensorflow-cpu.yaml``): ``batch_size`` (samples per request),
``runtime`` (``keras``: the Keras model called through a ``tf.function``, XLA-compiled with
``jit_compile``; ``tflite``: the model converted by ``tf.lite.TFLiteConverter`` and run by
``tf.lite.Interpreter``), ``quantization`` (TFLite only: ``none``; ``dynamic_range``: int8
weights, ``converter.optimizations = [tf.lite.Optimize.DEFAULT]``; ``float16``: float16 weights,
that plus ``target_spec.supported_types = [tf.float16]``), ``jit_compile`` (Keras runtime only),
``replicas`` (threads serving at once), ``intra_op_threads`` (threads of each replica) and
``inter_op_threads``.

Threads: a TFLite interpreter is not thread-safe, so every replica has its own, with
``num_threads = intra_op_threads``. The Keras runtime's replicas share the model and TensorFlow's
one intra-op pool, which is sized ``intra_op_threads * replicas`` (the replicas' share of the
cores together; exactly ``intra_op_threads`` with one replica), set before the TensorFlow runtime
starts in the trial process, as :class:`~perftune.backends._tensorflow.KerasKit` does.

CPU only: the built-in space is ``tensorflow-cpu`` and TFLite's interpreter runs on the CPU.
``tf.lite.Interpreter`` is deprecated in favour of LiteRT (package ``ai_edge_litert``, which
perftune does not install); TensorFlow 2.21 still ships and runs it, with a deprecation warning
that trials silence.

The model comes from :func:`trained_model`: the workload's ``weights`` file if it names one,
else the ``.weights.h5`` file the sweep's ``fit`` request wrote (the workload trained once to its
target by the built-in loop, :func:`fit`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
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

RUNTIMES = ("keras", "tflite")
QUANTIZATIONS = ("none", "dynamic_range", "float16")
PARAMS = ("batch_size", "runtime", "quantization", "jit_compile", "replicas", "intra_op_threads",
          "inter_op_threads")  # fmt: skip


def capabilities(device_class: str) -> dict[str, Any] | None:
    """What a TensorFlow inference trial honours on ``device_class`` (stdlib only); None where
    it does not serve (anything but the CPU)."""
    if device_class != "cpu":
        return None
    return {"params": list(PARAMS),
            "choices": {"runtime": list(RUNTIMES), "quantization": list(QUANTIZATIONS),
                        "jit_compile": [False, True]}}  # fmt: skip


def validate_config(config: dict[str, Any]) -> None:
    """Reject an inference config this module cannot honour (raises :class:`InvalidConfig`)."""
    runtime = config.get("runtime", "keras")
    quant = config.get("quantization", "none")
    if runtime not in RUNTIMES:
        raise InvalidConfig(f"runtime {runtime!r} is not supported (choose from: "
                            f"{', '.join(RUNTIMES)})")  # fmt: skip
    if quant not in QUANTIZATIONS:
        raise InvalidConfig(f"quantization {quant!r} is not supported (choose from: "
                            f"{', '.join(QUANTIZATIONS)})")  # fmt: skip
    if quant != "none" and runtime != "tflite":
        raise InvalidConfig(f"quantization {quant} needs runtime tflite, not {runtime}")
    if config.get("jit_compile", False) not in (False, True):
        raise InvalidConfig(f"jit_compile must be true or false, not {config.get('jit_compile')!r}")
    if config.get("jit_compile") and runtime != "keras":
        raise InvalidConfig("jit_compile applies to runtime keras only")
    for key in ("batch_size", "replicas", "intra_op_threads", "inter_op_threads"):
        value = config.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidConfig(f"{key} must be a positive integer, not {value!r}")


def fit(backend: Any, workload: Any, request: Any, channel: Any) -> dict[str, Any]:
    """Train ``workload`` once with ``request.config`` (the training space's defaults) to its
    target with the built-in loop, and save its weights to ``request.model_path``."""
    from perftune.backends._base import TrialRequest
    from perftune.backends._tensorflow import KerasKit, builtin_loop
    from perftune.backends._tensorflow import validate_config as validate_training
    from perftune.trial._run import run_rank

    check_workload(workload)
    if not str(request.model_path or "").endswith(".weights.h5"):
        raise UsageError(f"--workload {workload.name}: Keras saves weights to a .weights.h5 "
                         f"file, not {request.model_path!r}")  # fmt: skip
    train = TrialRequest(**{**request.to_dict(), "measure": "converge"})
    validate_training(train.config, train.device)
    kit = KerasKit(train.config, train)
    result = run_rank(builtin_loop(workload), kit, train, channel, workload.describe())
    fitted = fit_result(workload, result["metrics"], train.budget_s)
    model = kit.keep[0]
    tmp = f"{request.model_path[: -len('.weights.h5')]}.tmp{os.getpid()}.weights.h5"
    try:
        model.save_weights(tmp)  # Keras wants the .weights.h5 suffix on the temporary file too
        os.replace(tmp, request.model_path)  # a reader never sees half a file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return fitted


def trained_model(workload: Any, request: Any, example=None):
    """The workload's Keras model with its trained weights (built first: called on
    ``example``, one sample, where given)."""
    path = weights_path(workload, request)
    model = workload.model()
    try:
        if example is not None:
            model(example, training=False)  # a subclassed model has no variables until called
        model.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - the user's file: report it as bad input
        raise UsageError(f"--workload {workload.name}: cannot load the weights {path}: "
                         f"{type(exc).__name__}: {str(exc)[:200]}") from None  # fmt: skip
    return model


def tflite_model(tf, model, quantization: str) -> bytes:
    """``model`` converted to a TFLite flatbuffer with ``quantization``."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization in ("dynamic_range", "float16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def tflite_predictor(tf, content: bytes, threads: int, shape: tuple[int, ...]):
    """A ``predict(x)`` on its own ``tf.lite.Interpreter`` (one per replica: an interpreter is
    not thread-safe) with its input resized to ``shape``; it returns a copy of the output."""
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated ... use LiteRT"
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_content=content, num_threads=threads)
    (inp,) = interp.get_input_details()
    interp.resize_tensor_input(inp["index"], list(shape))
    interp.allocate_tensors()
    out_index = interp.get_output_details()[0]["index"]
    in_index, dtype = inp["index"], inp["dtype"]

    def predict(x):
        interp.set_tensor(in_index, x if x.dtype == dtype else x.astype(dtype))
        interp.invoke()
        return interp.get_tensor(out_index)  # a copy: the next invoke may overwrite the buffer

    return predict


def run_inference(workload: Any, request: Any) -> dict[str, Any]:
    """One inference trial: load, configure, measure quality on the validation set, then serve
    (:func:`~perftune.trial._serve.serve`) and report latencies, throughput, memory, energy."""
    import numpy as np

    from perftune.backends._tensorflow import _host_array, _metric

    check_workload(workload)
    if request.device.split(":", 1)[0] != "cpu":
        raise InvalidConfig(f"TensorFlow inference trials run on the CPU, not {request.device}")
    config = request.config
    validate_config(config)
    runtime = config.get("runtime", "keras")
    replicas = int(config.get("replicas", 1))
    threads = int(config.get("intra_op_threads") or max(1, usable_cores() // replicas))
    bs = int(config.get("batch_size", 1))

    import keras
    import tensorflow as tf

    # before any op runs in this (forked) process: the runtime's pools are sized once
    pool = threads * replicas if runtime == "keras" else threads
    tf.config.threading.set_intra_op_parallelism_threads(pool)
    inter = int(config.get("inter_op_threads") or usable_cores())
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    with contextlib.suppress(RuntimeError, ValueError):
        tf.config.set_visible_devices([], "GPU")
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(request.seed)

    _, _, x_va, y_va = workload.data()
    x_va = _host_array(x_va)
    n = len(x_va)
    if bs > n:
        raise InvalidConfig(f"batch_size {bs} is larger than the validation set ({n} samples)")
    reference = trained_model(workload, request, x_va[:1])
    ref_fn = tf.function(lambda x: tf.cast(reference(x, training=False), tf.float32))
    chunks = [ref_fn(tf.constant(x_va[i : i + 1024])).numpy() for i in range(0, n, 1024)]
    ref_out = np.concatenate(chunks)

    shape = (bs, *x_va.shape[1:])
    if runtime == "tflite":
        content = tflite_model(tf, reference, config.get("quantization", "none"))
        predicts = [tflite_predictor(tf, content, threads, shape) for _ in range(replicas)]
        requests = [(x_va[i : i + bs], bs) for i in range(0, n - bs + 1, bs)]
    else:
        fn = tf.function(lambda x: tf.cast(reference(x, training=False), tf.float32),
                         jit_compile=bool(config.get("jit_compile", False)))  # fmt: skip

        def predict_keras(x):
            return fn(x).numpy()  # returns once the result is on the host

        predicts = [predict_keras] * replicas
        requests = [(tf.constant(x_va[i : i + bs]), bs) for i in range(0, n - bs + 1, bs)]

    # quality: every validation sample, in batches of batch_size (the last one zero-padded to
    # a full batch, its padding's outputs dropped: one input shape, as served)
    outs = []
    for i in range(0, n, bs):
        x = x_va[i : i + bs]
        k = len(x)
        if k < bs:
            x = np.concatenate([x, np.zeros((bs - k, *x.shape[1:]), x.dtype)])
        y = predicts[0](x if runtime == "tflite" else tf.constant(x))
        outs.append(np.asarray(y, dtype=np.float32)[:k])
    out = np.concatenate(outs)
    quality = _metric(workload.metric, tf.constant(out), y_va)
    ref_quality = _metric(workload.metric, tf.constant(ref_out), y_va)

    result, energy = metered_serve(predicts, requests, request)
    metrics = {**result.metrics(), **quality_metrics(quality, ref_quality, workload.mode), **energy,
               "peak_rss_mb": rss_peak_mb(), "batch_size": bs}
    if runtime == "tflite":
        metrics["model_bytes"] = len(content)
    return {"metrics": metrics, "curves": {}, "pruned": False}
