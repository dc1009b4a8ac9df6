"""The Python API for training scripts that want their tuned config."""

from __future__ import annotations

from typing import Any

from perftune.settings import Workspace


def best_config(workload: str, *, framework: str = "torch", device: str = "cpu",
                objective: str = "time-to-target", home: str | None = None,
                db: str | None = None) -> Any:  # fmt: skip
    """The stored best config record for (workload, framework, device, objective), or ``None``.

    ``record.config`` is the dict of tuned knobs (``batch_size``, ``learning_rate``,
    ``optimizer``...); ``record.value``, ``record.speedup`` and ``record.metrics`` say how good
    it is. The database is the workspace's (``home``, ``PERFTUNE_HOME``, ``./.perftune``) unless
    ``db`` (or ``PERFTUNE_DB``) names another.
    """
    from perftune.service import best_configs, has_database

    ws = Workspace.resolve(home, db=db)
    if not has_database(ws):
        return None
    found = best_configs(ws, workload, framework=framework, device=device, objective=objective)
    return found[0] if found else None


def serving(model: Any, config: dict[str, Any], *, framework: str = "torch", device: str = "cpu") -> Any:
    """Your trained model as a tuned inference config serves it: ``predict(inputs) -> outputs``.

    ``config`` is a stored inference best's (``perftune.best_config(name,
    objective="throughput-at-slo").config``): the model is copied, quantized, cast, laid out
    and compiled as the sweep measured it, this process's intra-op threads set to
    ``num_threads``, and ``predict`` runs it under ``torch.inference_mode`` or ``no_grad`` with
    the inputs converted alike. Serve ``batch_size`` samples per call from ``replicas``
    threads at once, as the trials did. PyTorch only (a TensorFlow config names its runtime and
    TFLite quantization: apply it with ``tf.lite.TFLiteConverter``)."""
    if framework != "torch":
        from perftune.errors import UsageError

        raise UsageError(f"perftune.serving: framework {framework!r}: PyTorch models only")
    import torch

    from perftune.backends._torch_infer import configure, prepare_inputs

    torch.set_num_threads(int(config.get("num_threads") or torch.get_num_threads()))
    dev = torch.device(device)
    served = configure(model.eval(), config, dev, None)
    grad_off = torch.inference_mode if config.get("inference_mode") else torch.no_grad

    def predict(inputs):
        with grad_off():
            return served(prepare_inputs(inputs, config, dev))

    return predict
