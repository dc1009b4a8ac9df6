"""The built-in ``gpt-tiny`` workload: its data, entropy floor, model, FLOPs and metadata (fast)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from perftune.workload import BUILTIN_WORKLOADS, resolve
from perftune.workloads import torch_gpt as g

V, T = g.TINY_VOCAB, g.TINY_SEQ_LEN


def small_data(seed: int = 0):
    return g.markov_data(V, T, 64, 32, seed)


def test_data_is_deterministic_and_shaped():
    a, b = small_data(), g.markov_data.__wrapped__(V, T, 64, 32, 0)  # bypass the cache
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    x_tr, y_tr, x_va, y_va = a
    assert x_tr.shape == y_tr.shape == (64, T) and x_va.shape == y_va.shape == (32, T)
    assert x_tr.dtype == np.int64 and 0 <= x_tr.min() and x_tr.max() < V
    np.testing.assert_array_equal(x_tr[:, 1:], y_tr[:, :-1])  # y is x shifted by one
    assert not np.array_equal(x_tr[:32], x_va)  # train and validation streams differ
    assert not np.array_equal(g.markov_data(V, T, 64, 32, 1)[0], x_tr)  # the seed matters


def test_every_token_follows_the_chain():
    x, y, _, _ = small_data()
    tokens, probs = g.successors(x[:, :-1], x[:, 1:], V)
    assert (tokens == y[:, 1:, None]).any(-1).all()  # each y[t] is a successor of x[t-1], x[t]
    assert all(len(set(row)) == 4 for row in tokens.reshape(-1, 4)[:200])  # k = 4, distinct
    np.testing.assert_allclose(probs.sum(-1), 1.0)


def test_entropy_floor_is_exact_and_below_the_target():
    h = -sum(p * math.log(p) for p in np.outer(g.HI_PROBS, g.LO_PROBS).ravel())
    assert g.successor_entropy() == pytest.approx(h)
    floor = g.entropy_floor(V, T)
    assert floor == pytest.approx(((T - 1) * h + math.log(V)) / T)
    wl = g.gpt_tiny()
    assert floor < wl.target < math.log(V)
    _, _, x_va, y_va = g.markov_data(V, T, g.TINY_N_TRAIN, g.TINY_N_VAL)
    assert g.empirical_floor(x_va, y_va, V) == pytest.approx(floor, abs=0.02)
    assert g.empirical_floor(x_va, y_va, V) < wl.target - 0.3


def test_describe_and_registry():
    assert BUILTIN_WORKLOADS["gpt-tiny"] == {"torch": "perftune.workloads.torch_gpt:gpt_tiny"}
    d = resolve("gpt-tiny", "torch").describe()
    assert d["name"] == "gpt-tiny" and d["mode"] == "min" and d["framework"] == "torch"
    assert d["flops_per_sample"] > 0
    assert d["metric"] == "val_cross_entropy" and d["loss"] == "token_cross_entropy"


def test_flops_follow_nanogpt_estimate():
    n, total = g.n_params(V, T, 128, 2)
    assert total - n == T * 128  # only the position embedding is left out
    q = 128 // 4
    assert g.gpt_flops_per_sample(V, T, 128, 2, 4) == (6 * n + 12 * 2 * 4 * q * T) * T


def test_make_gpt_workload_variants_and_bad_sizes():
    from perftune.errors import UsageError

    wl = g.make_gpt_workload(vocab=1024, seq_len=128, d_model=256, n_layer=4, n_head=8)
    assert wl.name == "gpt-L4-d256-v1024-t128" and wl.mode == "min"
    assert wl.target > g.entropy_floor(1024, 128)
    assert wl.flops_per_sample == g.gpt_flops_per_sample(1024, 128, 256, 4, 8)
    with pytest.raises(UsageError, match="entropy floor"):
        g.make_gpt_workload(target=1.0)
    with pytest.raises(UsageError, match="n_head"):
        g.make_gpt_workload(d_model=100, n_head=3)
    with pytest.raises(UsageError, match="vocab"):
        g.make_gpt_workload(vocab=127)


def test_importing_the_module_does_not_import_torch():
    code = "import sys, perftune.workloads.torch_gpt as g; g.gpt_tiny(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_model_forward_and_a_few_steps_lower_the_loss():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    wl = g.gpt_tiny()
    model = wl.model()
    n, total = g.n_params(V, T, g.TINY_D_MODEL, g.TINY_N_LAYER)
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.lm_head.weight is model.wte.weight  # tied
    x, y, _, _ = small_data()
    xb, yb = torch.as_tensor(x[:16]).float(), torch.as_tensor(y[:16])  # the trainer sends floats
    out = model(xb)
    assert out.shape == (16, T, V)
    first = float(wl.loss(out, yb).detach())
    assert first == pytest.approx(math.log(V), abs=0.2)  # untrained: about uniform
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss = wl.loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = wl.metric(model(xb), yb)
    assert isinstance(after, float) and after < first - 0.5
