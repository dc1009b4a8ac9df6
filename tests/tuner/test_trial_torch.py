"""The Trial interface over real PyTorch (TorchKit) in this process: helpers, the batch-size
probe on a user's function, and a tuned config run outside a sweep (its DDP ranks started as a
sweep's trial starts them)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import perftune  # noqa: E402
from perftune.backends import NullChannel, TorchBackend, TrialRequest  # noqa: E402
from perftune.errors import UsageError  # noqa: E402

X = torch.randn(512, 8)
Y = (X.sum(1) > 0).long()


def tiny_train(trial: perftune.Trial) -> None:
    """A user's loop on a toy problem, through every helper."""
    model = trial.prepare(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)))
    opt = trial.optimizer(model.parameters())
    loader = trial.dataloader(torch.utils.data.TensorDataset(X, Y))
    while not trial.should_stop():
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb.to(trial.device)), yb.to(trial.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            trial.step(samples=len(xb), loss=loss)
            if trial.eval_due():
                with torch.no_grad():
                    acc = trial.evaluate(lambda: (model(X).argmax(1) == Y).float().mean().item())
                trial.log(last_acc=acc)


TRAIN = perftune.trainable(tiny_train, name="tiny", target=0.9, budget_s=20, eval_interval_s=0.05)
CONFIG = {"batch_size": 32, "learning_rate": 0.01, "optimizer": "adam", "num_threads": 1}


def run(config: dict, measure: str = "converge", channel=None) -> dict:
    req = TrialRequest(workload="-", framework="torch", device="cpu", config=config, measure=measure,
                       warmup_s=0.05, window_s=0.05, repeats=2)  # fmt: skip
    return TorchBackend().run_trial(TRAIN, req, channel or NullChannel())


def test_a_users_function_reaches_its_target():
    out = run(CONFIG)
    m = out["metrics"]
    assert m["reached_target"] and m["final_metric"] >= 0.9 and m["last_acc"] == m["final_metric"]
    assert m["global_batch_size"] == 32 and m["world_size"] == 1 and m["peak_rss_mb"] > 0
    assert set(out["knobs_read"]) >= {"batch_size", "learning_rate", "optimizer", "num_threads"}


def test_bf16_forward_with_fp32_outputs():
    """prepare() runs the forward in the config's precision and hands fp32 back, so a loss
    computed outside the model is computed in fp32."""
    seen = {}

    def train(trial):
        model = trial.prepare(torch.nn.Sequential(torch.nn.Linear(8, 2)))
        out = model(X[:4])
        seen.update(out=out.dtype, inside=_inner_dtype(model, model[0]))
        trial.step(samples=4)

    run_config = {**CONFIG, "precision": "bf16"}
    req = TrialRequest(workload="-", framework="torch", device="cpu", config=run_config, measure="probe")
    TorchBackend().run_trial(perftune.trainable(train, name="bf16", target=1.0), req, Reports())
    assert seen == {"out": torch.float32, "inside": torch.bfloat16}


def _inner_dtype(model, layer) -> torch.dtype:
    captured = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o.dtype))
    model(X[:2])
    handle.remove()
    return captured[0]


class Reports(NullChannel):
    def __init__(self) -> None:
        self.seen = []

    def report(self, step, value):
        self.seen.append((step, value))
        return False


def test_the_probe_runs_a_few_steps_per_batch_size_and_reads_oom():
    """The batch-size probe on a user's function: out-of-memory (here raised for batches over
    96, as CUDA raises it) means "does not fit"; doubling then bisection finds the edge."""

    def train(trial):
        bs = trial.config["batch_size"]
        while True:
            if bs > 96:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            trial.step(samples=bs)

    reports = Reports()
    req = TrialRequest(workload="-", framework="torch", device="cpu", measure="probe",
                       config={"batch_size": 32, "probe_max": 1024, "probe_margin": 0.0})  # fmt: skip
    out = TorchBackend().run_trial(perftune.trainable(train, name="probe", target=1.0), req, reports)
    m = out["metrics"]
    assert m["largest_fit"] == 96 and 96 < m["first_oom"] <= 128 and m["limited_by"] == "memory"
    assert (64, 1.0) in reports.seen and (128, 0.0) in reports.seen


def test_throughput_of_a_users_function():
    m = run(CONFIG, measure="throughput")["metrics"]
    assert m["windows"] == 2 and m["throughput_sps"] > 0 and m["steps_per_window"] >= 3


def test_from_config_runs_the_function_outside_a_sweep():
    trial = perftune.Trial.from_config(CONFIG, target=0.9)
    out = trial.run(TRAIN)
    assert trial.source == "given" and trial.measure == "free"
    assert out["metrics"]["reached_target"] and out["metrics"]["stopped_by"] == "target"


def test_a_ddp_config_outside_a_sweep_starts_its_ranks():
    config = {**CONFIG, "parallel_strategy": "ddp", "world_size": 2}
    trial = perftune.Trial.from_config(config, target=0.9)
    with pytest.raises(UsageError, match=r"trial.run\(train\)"):
        trial.device  # noqa: B018 - this process alone cannot be two ranks
    out = perftune.Trial.from_config(config, target=0.9).run(TRAIN)
    m = out["metrics"]
    assert m["world_size"] == 2 and m["reached_target"] and m["global_batch_size"] == 64
