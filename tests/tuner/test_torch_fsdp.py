"""FSDP2 wrapping (perftune.backends._torch._shard_units / _fully_shard): the policy on model
shapes other than an MLP, then real 2-rank gloo trials of those models."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tuner_worker import TINY, check_throughput, request
from torch import nn

from perftune.backends._torch import _shard_units
from perftune.executor import ProcessExecutor
from perftune.workload import resolve

MODELS = Path(__file__).resolve().parent / "workloads" / "fsdp_models.py"


def units(model) -> list[nn.Module]:
    """``_shard_units(model)``, checked: no parameter in two units (so no unit nests in another)."""
    found = _shard_units(model)
    owned = [set(u.parameters()) for u in found]
    assert len(set().union(*owned)) == sum(map(len, owned)), "a parameter in two FSDP groups"
    return found


def test_transformer_encoder_is_sharded_per_layer_not_per_submodule():
    model = resolve(f"{MODELS}:encoder").model()
    layer = model.encoder.layers[0]
    assert units(model) == [layer]  # MultiheadAttention and its out_proj inside, not apart


def test_gpt_blocks_are_units_and_the_tied_head_stays_with_the_root():
    model = resolve("gpt-tiny").model()
    assert units(model) == list(model.blocks)


def test_embedding_and_conv_models_shard_their_stacks():
    bag, resnet = (resolve(f"{MODELS}:{name}").model() for name in ("bag", "resnet"))
    assert units(bag) == [bag.mlp[0], bag.mlp[2]]  # the embedding table is the root's
    assert units(resnet) == list(resnet.blocks)  # and so are the stem and the head


@pytest.mark.parametrize("name", ["mlp-digits", "cnn-digits"])
def test_a_sequential_model_is_sharded_per_layer(name):
    model = resolve(name).model()
    assert units(model) == [m for m in model if list(m.parameters())]


def test_shared_parameters_and_modules_stay_with_the_root():
    emb, head, block = nn.Embedding(10, 4), nn.Linear(4, 10), nn.Linear(4, 4)
    head.weight = emb.weight  # tied
    tied = nn.Sequential(emb, nn.Sequential(block, nn.ReLU()), head)
    assert units(tied) == [tied[1]]
    repeated = nn.ModuleList([block, nn.Linear(4, 4), block])  # one layer applied twice
    assert units(repeated) == [repeated[1]]
    named = nn.ModuleDict({"a": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})
    assert units(named) == list(named.values())
    assert units(nn.Linear(4, 4)) == []  # no layer stack: the root alone


@pytest.fixture(scope="module")
def worker():
    with ProcessExecutor("torch") as ex:
        yield ex


@pytest.mark.slow
@pytest.mark.parametrize("name", ["encoder", "bag", "resnet", "gpt-tiny"])
def test_fsdp_trial_on_model_shapes(worker, tmp_path, name):
    """A real fsdp throughput trial over 2 gloo ranks: each rank holds about half the parameters
    (the embedding tables split unevenly by a row)."""
    spec = name if name == "gpt-tiny" else f"{MODELS}:{name}"
    config = {"batch_size": 16, "parallel_strategy": "fsdp", "world_size": 2, "num_threads": 1}
    out = worker.run(request(spec, config, tmp_path, measure="throughput", **TINY))
    check_throughput(out, world=2)
    assert out.metrics["param_shard_fraction"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.slow
def test_fsdp_transformer_trains_and_evaluates(worker, tmp_path):
    """A time-to-target run of the encoder: it learns, and its evaluations (eval mode, no grad)
    run sharded across both ranks too."""
    config = {"batch_size": 32, "parallel_strategy": "fsdp", "world_size": 2, "num_threads": 1,
              "learning_rate": 1e-2}  # fmt: skip
    out = worker.run(request(f"{MODELS}:encoder", config, tmp_path, budget_s=3.0))
    assert out.status == "ok", (out.cause, out.message)
    # About 0.2 accuracy after 8 steps, 0.45 after 32 (1.7 s on this machine); chance is 0.1.
    assert out.metrics["evals"] >= 1 and out.metrics["final_metric"] > 0.15, out.metrics
