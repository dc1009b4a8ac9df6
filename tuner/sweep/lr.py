"""The learning rate as a multiplier on a batch-size-scaled base rate.

A learning rate that suits one batch size does not suit another: it moves with the batch size
(linearly for SGD, by the square root for Adam-family optimizers: Goyal et al. 2017, Malladi et
al. 2022). Sampled on its own, the learning rate has to be found again at every batch size, and
a sampler that draws each knob independently (TPE's default, random search) mostly draws pairs
that do not train. Sampled as a multiplier on the default's rate moved to the trial's batch
size, every draw is a plausible pair and the multiplier's good range is about the same at every
batch size.

Stage 2 of the factored search (:mod:`.factored`) samples it this way. The joint search samples
the learning rate itself: replayed against a measured grid, the multiplier did not beat the
noise there (``benchmarks/README.md``, *The learning rate's scaling in the joint search*).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["FAMILY", "MULTIPLIER", "SQRT_RULE", "ScaledLrSpace", "base_lr", "lr_rule", "scaled_lr"]

#: Optimizers whose learning rate scales with the square root of the batch size.
SQRT_RULE = ("adam", "adamw", "rmsprop", "adagrad")
#: The range of the learning-rate multiplier (the scaled rate is then clipped to the space's).
MULTIPLIER = (1 / 8, 8.0)
#: Where an optimizer's good learning rates sit relative to Adam's at the same batch size (1 if
#: not listed). SGD with momentum and Adagrad train at about ten times Adam's rate (their usual
#: defaults, 1e-2 against 1e-3; measured on mlp-digits, benchmarks/search_quality/: SGD reaches
#: the target from 1e-2, Adam and AdamW up to 3e-3), so a base rate set for one family is moved
#: by this ratio for another, and the multiplier's range stays centred on rates that train.
FAMILY = {"sgd": 10.0, "adagrad": 10.0}


def lr_rule(optimizer: str) -> str:
    return "sqrt" if optimizer in SQRT_RULE else "linear"


def scaled_lr(base_lr: float, base_bs: int, bs: int, optimizer: str) -> float:
    """The base learning rate moved to batch size ``bs`` by ``optimizer``'s rule."""
    ratio = bs / base_bs
    return base_lr * (math.sqrt(ratio) if lr_rule(optimizer) == "sqrt" else ratio)


def base_lr(base: float, base_optimizer: str, optimizer: str) -> float:
    """The base rate ``base`` (set for ``base_optimizer``) moved to ``optimizer``'s family."""
    return base * FAMILY.get(optimizer, 1.0) / FAMILY.get(base_optimizer, 1.0)


class ScaledLrSpace:
    """``space`` with the learning rate suggested as ``lr_multiplier`` (log-uniform over
    :data:`MULTIPLIER`) on the baseline's rate moved to the trial's optimizer family
    (:data:`FAMILY`) and scaled to its batch size by the family's rule, clipped to the space's range; the rule is recorded as the trial's ``lr_rule`` attribute.
    A trial enqueued with its own params (the baseline, a warm start, a repeat) keeps them.
    Everything else is the space's."""

    def __init__(self, space, baseline: dict[str, Any]) -> None:
        self.space, self.baseline = space, baseline

    def __getattr__(self, name: str) -> Any:
        return getattr(self.space, name)

    def given(self, trial) -> dict[str, Any]:
        """Values the trial takes without suggesting them (none here; stage 2 of the factored
        search gives the systems knobs stage 1 chose)."""
        return {}

    def sample(self, trial, given: dict[str, Any] | None = None) -> dict[str, Any]:
        attrs = trial.user_attrs
        if attrs.get("baseline") or "warm_start" in attrs or attrs.get("repeat_enqueued"):
            return self.space.sample(trial, given)  # enqueued with its own params
        base, base_bs = float(self.baseline["learning_rate"]), int(self.baseline["batch_size"])
        config = self.space.sample(trial, given={**self.given(trial), **(given or {}), "learning_rate": base})
        multiplier = trial.suggest_float("lr_multiplier", *MULTIPLIER, log=True)
        spec, optimizer = self.space.params["learning_rate"], str(config.get("optimizer", ""))
        base = base_lr(base, str(self.baseline.get("optimizer", "")), optimizer)
        lr = scaled_lr(base, base_bs, int(config["batch_size"]), optimizer) * multiplier
        config["learning_rate"] = min(max(lr, spec.low), spec.high)
        trial.set_user_attr("lr_rule", lr_rule(optimizer))
        return config
