"""``gpt-tiny``: a small decoder-only transformer on synthetic second-order Markov text (PyTorch).

The model is nanoGPT's: token + position embeddings, ``n_layer`` pre-LayerNorm blocks (causal
self-attention through ``torch.nn.functional.scaled_dot_product_attention``, a GELU MLP of width
``4 * d_model``), a final LayerNorm and an lm head tied to the token embedding. It maps
``(B, T)`` token ids to ``(B, T, V)`` logits. The trainer hands the inputs over as floats (it
converts every ``x`` array to floating point), so the forward pass casts them back to ``long``.

The data (NumPy, seeded, nothing downloaded) is a sparse second-order Markov chain over ``V``
tokens. A token is two digits, ``hi * n_lo + lo`` (``V = n_hi * n_lo``, see
:func:`split_vocab`). After the tokens ``a, b`` the next token's high digit is one of two
random digits chosen by ``b`` (probabilities :data:`HI_PROBS`) and its low digit one of two
random digits chosen by ``a`` (:data:`LO_PROBS`): every context ``(a, b)`` has ``k = 4``
successors, with the probabilities ``HI_PROBS x LO_PROBS``. Every run starts with two
independent uniform tokens. Sample ``i`` is ``x = s[:T]``, ``y = s[1:]`` of a run ``s`` of
``T + 1`` tokens.

Attention matters: the current token alone (a bigram model) gets about 2.57 nats on
``gpt-tiny``'s validation set; below that a model must attend to the previous position. (A
chain with a random successor set per context ``(a, b)`` was tried first: neither token alone
tells anything then, and the model sat at ``log V`` for hundreds of steps; the factored chain
gives a gradient towards the previous-position head from the start.)

Every context has the same successor probabilities, so the entropy floor (the best possible
mean cross-entropy, in nats) is exact and does not depend on the chain's stationary
distribution: position 0 predicts ``s[1]``, independent of ``s[0]`` (``log V``); the other
``T - 1`` positions see their full context (``H(p) = H(HI_PROBS) + H(LO_PROBS) = 1.2353``)::

    floor = ((T - 1) * H(p) + log V) / T

For ``gpt-tiny`` (``V = 128``, ``T = 32``) the floor is 1.3484 nats (the realised floor of its
256 validation sequences, :func:`empirical_floor`, is 1.3406); the target is
:data:`TINY_TARGET_MARGIN` above it, 1.6984.

Sizing, measured through the executor on an otherwise idle 2-core CPU (fp32, seeds 0-3): the
default config (adam, lr 1e-3, batch 32, one process) reaches the target in 8.8-10.3 s
(345-377 steps, 1100-1360 samples/s; a CPU shared with other jobs stretches that 2-3x); lr 3e-3
in 5.8-6.3 s; batch 16 with lr 3e-3 in 5.8 s; bf16 in 8.8 s; DDP on 2 ranks in 14 s; lr 1e-4
needs about 43 s (1600 steps) and misses the 30 s budget; lr 1e-2 and SGD at lr 1e-3 stall
(3.18 and 2.65 nats after 60 s).

``flops_per_sample`` is nanoGPT's estimate, ``(6 N + 12 L H Q T) * T`` (``N`` the parameters
without the position embedding, ``Q = d_model / n_head``; the tied lm head counts once, in
``N``). :func:`make_gpt_workload` builds larger variants (e.g. for a GPU benchmark).

Importing this module does not import torch; the model and the loss import it when called.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from perftune.errors import UsageError
from perftune.workload import Workload

#: Probabilities of the two high digits that may follow the previous token.
HI_PROBS: tuple[float, float] = (0.75, 0.25)
#: Probabilities of the two low digits that may follow the token before it.
LO_PROBS: tuple[float, float] = (0.6, 0.4)
#: Seed of the chain (successor table) and of the sequences.
DATA_SEED = 0

#: The built-in ``gpt-tiny`` (sized for a time-to-target trial of seconds on a 2-core CPU).
TINY_VOCAB = 128
TINY_SEQ_LEN = 32
TINY_D_MODEL = 128
TINY_N_LAYER = 2
TINY_N_HEAD = 4
TINY_N_TRAIN = 16384
TINY_N_VAL = 256
#: Target = entropy floor + this margin (nats).
TINY_TARGET_MARGIN = 0.35
#: Cap on training seconds: the default config needs about 9 s, lr 1e-4 about 43 s.
TINY_BUDGET_S = 30.0


# -- data -------------------------------------------------------------------------------------
def _entropy(probs: tuple[float, ...]) -> float:
    return float(-sum(p * math.log(p) for p in probs if p > 0))


def successor_entropy() -> float:
    """``H(p) = H(HI_PROBS) + H(LO_PROBS)`` in nats: the entropy of the next token given its
    two predecessors (the same for every context)."""
    return _entropy(HI_PROBS) + _entropy(LO_PROBS)


def entropy_floor(vocab: int, seq_len: int) -> float:
    """The lowest reachable expected validation loss (nats per token) of the chain's data:
    ``((T - 1) H(p) + log V) / T`` (position 0 only sees one token, which tells nothing)."""
    return ((seq_len - 1) * successor_entropy() + math.log(vocab)) / seq_len


def split_vocab(vocab: int) -> tuple[int, int]:
    """``(n_hi, n_lo)`` with ``n_hi * n_lo == vocab``: ``n_lo`` the largest divisor of ``vocab``
    not above its square root; token ``= hi * n_lo + lo``. Both must be at least 2."""
    n_lo = max(d for d in range(1, math.isqrt(vocab) + 1) if vocab % d == 0)
    if n_lo < 2:
        raise ValueError(f"vocab {vocab} must be a product of two factors >= 2 (e.g. 16 x 8)")
    return vocab // n_lo, n_lo


def _distinct_pairs(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """``(rows, 2)`` int64: two distinct values of ``range(n)`` per row, uniformly."""
    first = rng.integers(0, n, size=rows, dtype=np.int64)
    second = (first + rng.integers(1, n, size=rows, dtype=np.int64)) % n
    return np.stack([first, second], axis=1)


@functools.lru_cache(maxsize=4)
def markov_chain(vocab: int, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The chain's tables ``(hi_succ, lo_succ)``, int64 ``(V, 2)`` each: after ``a, b`` the
    next token's high digit is ``hi_succ[b, i]`` (``i`` drawn with :data:`HI_PROBS`) and its low
    digit ``lo_succ[a, j]`` (``j`` drawn with :data:`LO_PROBS`), independently."""
    n_hi, n_lo = split_vocab(vocab)
    rng = np.random.default_rng([seed, vocab])
    hi, lo = _distinct_pairs(rng, vocab, n_hi), _distinct_pairs(rng, vocab, n_lo)
    hi.flags.writeable = lo.flags.writeable = False
    return hi, lo


def successors(a, b, vocab: int, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The 4 tokens that may follow ``a, b`` and their probabilities: ``(tokens, probs)``,
    ``(..., 4)`` each for arrays ``a``, ``b`` of token ids."""
    hi_succ, lo_succ = markov_chain(vocab, seed)
    _, n_lo = split_vocab(vocab)
    h, lo = hi_succ[np.asarray(b)], lo_succ[np.asarray(a)]  # (..., 2) each
    tokens = (h[..., :, None] * n_lo + lo[..., None, :]).reshape(*h.shape[:-1], 4)
    probs = np.outer(HI_PROBS, LO_PROBS).reshape(4)
    return tokens, np.broadcast_to(probs, tokens.shape)


def sample_sequences(n: int, length: int, vocab: int, *, seed: int,
                     chain_seed: int = DATA_SEED) -> np.ndarray:  # fmt: skip
    """``n`` runs of ``length`` tokens of the chain (int64, ``(n, length)``): two uniform
    start tokens, then each token drawn from the successors of the two before it."""
    hi_succ, lo_succ = markov_chain(vocab, chain_seed)
    _, n_lo = split_vocab(vocab)
    rng = np.random.default_rng([seed, 1])
    s = np.empty((n, length), dtype=np.int64)
    s[:, : min(2, length)] = rng.integers(0, vocab, size=(n, min(2, length)))
    for t in range(2, length):
        i = (rng.random(n) >= HI_PROBS[0]).astype(np.int64)
        j = (rng.random(n) >= LO_PROBS[0]).astype(np.int64)
        s[:, t] = hi_succ[s[:, t - 1], i] * n_lo + lo_succ[s[:, t - 2], j]
    return s


@functools.lru_cache(maxsize=4)
def markov_data(
    vocab: int, seq_len: int, n_train: int, n_val: int, seed: int = DATA_SEED
) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_val, y_val)``: int64 ``(n, seq_len)`` arrays, ``y`` the ``x``
    shifted by one token. Deterministic in the arguments; train and validation sequences come
    from the same chain, from different random streams."""
    out = []
    for n, stream in ((n_train, 1), (n_val, 2)):
        s = sample_sequences(n, seq_len + 1, vocab, seed=seed * 1000 + stream, chain_seed=seed)
        x, y = np.ascontiguousarray(s[:, :-1]), np.ascontiguousarray(s[:, 1:])
        out += [x, y]
    return out[0], out[1], out[2], out[3]


def empirical_floor(x: np.ndarray, y: np.ndarray, vocab: int, seed: int = DATA_SEED) -> float:
    """The true model's mean cross-entropy (nats) on these very sequences: the floor a
    validation set of finite size actually has (close to :func:`entropy_floor`)."""
    x, y = np.asarray(x), np.asarray(y)
    nll = np.full(y.shape, math.log(vocab))
    tokens, probs = successors(x[:, :-1], x[:, 1:], vocab, seed)  # predict y[:, 1:]
    nll[:, 1:] = -np.log((probs * (tokens == y[:, 1:, None])).sum(-1))
    return float(nll.mean())


# -- model ------------------------------------------------------------------------------------
def n_params(vocab: int, seq_len: int, d_model: int, n_layer: int) -> tuple[int, int]:
    """``(N, total)``: the parameters without the position embedding (nanoGPT's
    ``non_embedding`` count; the tied lm head is the token embedding) and all of them."""
    d = d_model
    attn = (3 * d * d + 3 * d) + (d * d + d)
    mlp = (4 * d * d + 4 * d) + (4 * d * d + d)
    block = 2 * d + attn + 2 * d + mlp  # ln_1, attention, ln_2, MLP
    n = vocab * d + n_layer * block + 2 * d
    return n, n + seq_len * d


def gpt_flops_per_sample(vocab: int, seq_len: int, d_model: int, n_layer: int,
                         n_head: int) -> float:  # fmt: skip
    """nanoGPT's training FLOPs per sequence: ``(6 N + 12 L H Q T) * T``."""
    n, _ = n_params(vocab, seq_len, d_model, n_layer)
    q = d_model // n_head
    per_token = 6 * n + 12 * n_layer * n_head * q * seq_len
    return float(per_token * seq_len)


def build_gpt(vocab: int, seq_len: int, d_model: int, n_layer: int, n_head: int):
    """A fresh, untrained nanoGPT-style ``torch.nn.Module``: ``(B, T)`` ids -> ``(B, T, V)``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    if d_model % n_head:
        raise ValueError(f"d_model {d_model} is not a multiple of n_head {n_head}")

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(d_model)
            self.c_attn = nn.Linear(d_model, 3 * d_model)
            self.c_proj = nn.Linear(d_model, d_model)
            self.ln_2 = nn.LayerNorm(d_model)
            self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                     nn.Linear(4 * d_model, d_model))  # fmt: skip

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
            q, k, v = (z.view(b, t, n_head, c // n_head).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(a.transpose(1, 2).reshape(b, t, c))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(vocab, d_model)
            self.wpe = nn.Embedding(seq_len, d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(d_model)
            self.lm_head = nn.Linear(d_model, vocab, bias=False)
            self.lm_head.weight = self.wte.weight  # weight tying
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))
                elif p.dim() == 2:
                    nn.init.normal_(p, 0.0, 0.02)
                elif name.endswith(".bias"):
                    nn.init.zeros_(p)

        def forward(self, idx):
            idx = idx.long()  # the trainer passes every input as floats
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.blocks:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return GPT()


def token_cross_entropy(outputs, targets):
    """The training loss: mean cross-entropy of ``(B, T, V)`` logits against ``(B, T)`` ids."""
    import torch.nn.functional as F

    logits = outputs.float().reshape(-1, outputs.shape[-1])
    return F.cross_entropy(logits, targets.reshape(-1).long())


def val_cross_entropy(outputs, targets) -> float:
    """The validation metric: mean cross-entropy in nats per token over the whole set."""
    return float(token_cross_entropy(outputs, targets).item())


# -- workloads --------------------------------------------------------------------------------
def make_gpt_workload(*, vocab: int = TINY_VOCAB, seq_len: int = TINY_SEQ_LEN,
                      d_model: int = TINY_D_MODEL, n_layer: int = TINY_N_LAYER,
                      n_head: int = TINY_N_HEAD, n_train: int = TINY_N_TRAIN,
                      n_val: int = TINY_N_VAL, target: float | None = None,
                      budget_s: float = TINY_BUDGET_S, name: str | None = None,
                      eval_interval_s: float = 0.25,
                      seed: int = DATA_SEED) -> Workload:  # fmt: skip
    """A GPT workload on the chain's data; the defaults are ``gpt-tiny``'s. ``target`` (mean
    validation cross-entropy, nats) defaults to the entropy floor + :data:`TINY_TARGET_MARGIN`;
    a given target must lie above the floor (how far above decides how long the larger
    variants train: measure it). ``name`` defaults to
    ``gpt-L{n_layer}-d{d_model}-v{vocab}-t{seq_len}``.
    Keep ``n_val`` small: the trainer holds all the validation logits, ``n_val * seq_len *
    vocab`` floats, at once. Raises :class:`~perftune.errors.UsageError` for impossible sizes."""
    floor = entropy_floor(vocab, seq_len)
    if target is None:
        target = floor + TINY_TARGET_MARGIN
    if not target > floor:
        raise UsageError(
            f"gpt workload: target {target} is not above the entropy floor {floor:.4f}"
        )
    if d_model % n_head:
        raise UsageError(f"gpt workload: d_model {d_model} is not a multiple of n_head {n_head}")
    for field, value in (("n_train", n_train), ("n_val", n_val), ("seq_len", seq_len)):
        if value < 1:
            raise UsageError(f"gpt workload: {field} must be >= 1, got {value}")
    try:
        split_vocab(vocab)
    except ValueError as exc:
        raise UsageError(f"gpt workload: {exc}") from None
    name = name or f"gpt-L{n_layer}-d{d_model}-v{vocab}-t{seq_len}"
    desc = (f"GPT {n_layer}x{d_model} ({n_head} heads) on 2nd-order Markov tokens V={vocab} "
            f"T={seq_len}; target val loss {target:.3f} nats (floor {floor:.3f})")  # fmt: skip
    return Workload(
        name=name,
        framework="torch",
        model=lambda: build_gpt(vocab, seq_len, d_model, n_layer, n_head),
        data=lambda: markov_data(vocab, seq_len, n_train, n_val, seed),
        target=float(target),
        loss=token_cross_entropy,
        metric=val_cross_entropy,
        mode="min",
        budget_s=budget_s,
        eval_interval_s=eval_interval_s,
        flops_per_sample=gpt_flops_per_sample(vocab, seq_len, d_model, n_layer, n_head),
        description=desc,
        extra={"vocab": vocab, "seq_len": seq_len, "d_model": d_model, "n_layer": n_layer,
               "n_head": n_head, "n_train": n_train, "n_val": n_val, "entropy_floor": floor,
               # served by generating (--task inference): a prompt of half a sequence, the rest
               # generated greedily token by token (perftune.backends._torch_infer.generator)
               "generate": {"prompt": seq_len // 2, "new_tokens": seq_len - seq_len // 2}},
    )  # fmt: skip


def gpt_tiny() -> Workload:
    """The built-in ``gpt-tiny``."""
    return make_gpt_workload(name="gpt-tiny")


__all__ = [
    "DATA_SEED",
    "HI_PROBS",
    "LO_PROBS",
    "build_gpt",
    "empirical_floor",
    "entropy_floor",
    "gpt_flops_per_sample",
    "gpt_tiny",
    "make_gpt_workload",
    "markov_chain",
    "markov_data",
    "n_params",
    "sample_sequences",
    "split_vocab",
    "successors",
    "successor_entropy",
    "token_cross_entropy",
    "val_cross_entropy",
]
