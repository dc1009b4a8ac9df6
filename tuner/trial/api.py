"""The one interface between perftune and a training loop: :class:`Trial`.

A user's training function takes a ``Trial`` and keeps its own loop; perftune hooks in at the
steps and evaluations (as Ray Tune's function trainables and Keras callbacks do)::

    import perftune

    @perftune.trainable(name="my-bert", target=0.90, mode="max", budget_s=120, framework="torch")
    def train(trial: perftune.Trial) -> None:
        cfg = trial.config                          # the sampled knobs
        model = trial.prepare(build_model())        # device, ddp/fsdp, channels_last, compile
        opt = trial.optimizer(model.parameters())   # the optimizer the config names
        loader = trial.dataloader(train_set, collate_fn=collate)  # or your own DataLoader
        while not trial.should_stop():
            for batch in loader:
                with trial.autocast():
                    loss = model(**batch).loss
                loss.backward(); opt.step(); opt.zero_grad()
                trial.step(samples=len(batch["labels"]), loss=loss)
                if trial.eval_due():
                    with trial.evaluating():        # not training time
                        acc = evaluate(model)
                    trial.report(acc)               # towards the target; the pruner decides
                    if trial.should_stop():
                        break

Every helper is optional: ``trial.config`` can be applied by hand; measurement needs only
``step``, ``evaluating`` and ``report``. Once the trial has ended, ``step()`` raises
:class:`StopTrial` (a clean ``SystemExit(0)``), so a loop that never asks ``should_stop()`` ends
too. The same function runs outside a sweep with the stored best config::

    trial = perftune.Trial.from_best("my-bert")        # the stored best, or the defaults
    result = trial.run(train)                       # ranks started as in the sweep

and a script perftune launches (``perftune sweep ... -- python train.py --bs {batch_size}``)
gets the same object from :meth:`Trial.connect`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from perftune.errors import NothingMeasured, UsageError
from perftune.trial._kit import Kit
from perftune.trial._meter import NO_STEPS, Meter, Plan, StopTrial

__all__ = ["StopTrial", "Trainable", "Trial", "current_trial", "trainable"]

#: Knobs each helper applies (recorded as read when the helper is used).
_HELPER_KNOBS = {
    "prepare": ("parallel_strategy", "world_size", "channels_last", "compile", "precision"),
    "optimizer": ("optimizer", "learning_rate", "momentum", "beta1", "beta2", "weight_decay"),
    "autocast": ("precision",),
    "dataloader": ("batch_size", "dataloader_workers", "pin_memory"),
    "scope": ("parallel_strategy", "world_size"),
}

_CURRENT: list[Trial] = []


def current_trial() -> Trial:
    """The trial running in this process: the one a training function was called with, or the
    one :meth:`Trial.connect` made in a launched script (connecting first if needed)."""
    if _CURRENT:
        return _CURRENT[-1]
    return Trial.connect()


class _Config(Mapping):
    """A read-only config that records which knobs the training code read."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        self.read.add(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"TrialConfig({self._values!r})"

    def mark(self, keys: tuple[str, ...] | set[str]) -> None:
        self.read.update(k for k in keys if k in self._values)

    def to_dict(self) -> dict[str, Any]:
        """The values, without marking them read."""
        return dict(self._values)


class Trial:
    """One configuration being measured (or, outside a sweep, used), as training code sees it.

    Built by perftune, never by the user: in a trial process for a training function, by
    :meth:`connect` in a launched script, by :meth:`from_best` outside a sweep. The framework
    part (device, process group, helpers) is a :class:`~perftune.trial._kit.Kit`, built when
    first needed.

    Attributes:
        config: the knobs (a read-only mapping that records what the code read).
        name: the workload's name; ``seed``: the trial's seed; ``measure``: ``converge``,
            ``throughput``, ``probe`` (in a sweep) or ``free`` (outside one).
        source: where the config came from: ``sweep``, ``stored`` or ``defaults``.
        record: the stored best-config record, when :meth:`from_best` found one.
    """

    def __init__(self, config: Mapping[str, Any], *, plan: Plan, kit: Kit | Callable[[], Kit],
                 channel: Any = None, name: str = "", seed: int = 0, source: str = "sweep",
                 record: Any = None, runner: Callable[..., dict[str, Any]] | None = None) -> None:  # fmt: skip
        self.config = _Config(config)
        self.plan, self.name, self.seed = plan, name, seed
        self.source, self.record = source, record
        self._kit_or_factory = (lambda: kit) if isinstance(kit, Kit) else kit
        self._channel, self._runner = channel, runner
        self._meter: Meter | None = None
        self._logged: dict[str, Any] = {}

    # -- the framework part, built when first needed
    @property
    def kit(self) -> Kit:
        if not isinstance(self._kit_or_factory, Kit):
            self._kit_or_factory = self._kit_or_factory()
            self.config.read |= self._kit_or_factory.applied & set(self.config)  # threads...
        return self._kit_or_factory

    @property
    def meter(self) -> Meter:
        if self._meter is None:
            kit = self.kit
            self._meter = Meter(self.plan, kit, self._channel if kit.rank == 0 else None,
                                rank=kit.rank, world=kit.world, check_every=kit.check_every,
                                energy=kit.energy, t_created=kit.t_created)  # fmt: skip
        return self._meter

    @property
    def measure(self) -> str:
        return self.plan.measure

    @property
    def framework(self) -> str:
        return self.kit.framework

    @property
    def device(self) -> Any:
        """The device this process trains on (``torch.device`` for PyTorch)."""
        return self.kit.device

    @property
    def rank(self) -> int:
        return self.kit.rank

    @property
    def local_rank(self) -> int:
        return self.kit.local_rank

    @property
    def world_size(self) -> int:
        """Processes training together (1 unless ddp/fsdp/multi-worker)."""
        return self.kit.world

    @property
    def is_chief(self) -> bool:
        return self.kit.rank == 0

    @property
    def global_batch_size(self) -> int:
        """``batch_size`` x replicas x processes: the samples of one optimizer step."""
        self.config.mark(("batch_size",))
        return int(self.config.to_dict().get("batch_size", 32)) * self.kit.replicas * self.kit.world

    # -- helpers (each optional; each records the knobs it applies)
    def _helper(self, name: str) -> Kit:
        self.config.mark(_HELPER_KNOBS.get(name, ()))
        return self.kit

    def prepare(self, model: Any) -> Any:
        """``model`` placed and wrapped as the config says (PyTorch: on the trial's device,
        channels_last, its forward in the config's precision (autocast, floating outputs
        returned in fp32, as accelerate does), DDP/FSDP/DataParallel, ``torch.compile``;
        TensorFlow: a model-building function is called under the strategy's scope; MindSpore:
        mixed precision)."""
        return self._helper("prepare").prepare(model)

    def optimizer(self, params: Any = None) -> Any:
        """The optimizer the config names (``optimizer``, ``learning_rate``, ``momentum``,
        ``beta1``/``beta2``, ``weight_decay``), built exactly as perftune's own loop builds it."""
        return self._helper("optimizer").optimizer(params)

    def autocast(self) -> contextlib.AbstractContextManager:
        """A context for the forward pass in the config's ``precision``."""
        return self._helper("autocast").autocast()

    def grad_scaler(self) -> Any:
        """PyTorch: a ``GradScaler``, enabled only for ``precision: fp16``."""
        return self._helper("autocast").grad_scaler()

    def scope(self) -> contextlib.AbstractContextManager:
        """Where to build models and optimizers (TensorFlow: the scope of the strategy the
        config's ``parallel_strategy`` and ``world_size`` name)."""
        return self._helper("scope").scope()

    def sampler(self, dataset: Any, *, shuffle: bool = True) -> Any:
        """A sampler giving this rank its share of ``dataset``, reshuffled every epoch."""
        return self.kit.sampler(dataset, shuffle=shuffle, seed=self.seed)

    def dataloader(self, dataset: Any, *, shuffle: bool = True, **kwargs: Any) -> Any:
        """PyTorch: a ``DataLoader`` over ``dataset`` with the config's ``batch_size``,
        ``dataloader_workers`` and ``pin_memory`` and this rank's sampler; ``kwargs`` (e.g.
        ``collate_fn``) are passed on."""
        return self._helper("dataloader").dataloader(dataset, shuffle=shuffle, seed=self.seed, **kwargs)

    def keras_callback(self, **options: Any) -> Any:
        """A ``keras.callbacks.Callback`` that drives this trial from ``model.fit``: see
        :meth:`perftune.backends._tensorflow.KerasKit.callback`."""
        return self.kit.callback(self, **options)

    def mindspore_callback(self, **options: Any) -> Any:
        """A ``mindspore.train.Callback`` that drives this trial from ``Model.train``."""
        return self.kit.callback(self, **options)

    # -- measurement
    def step(self, samples: int, loss: Any = None) -> None:
        """One optimizer step done, ``samples`` of them on this process. ``loss`` (optional)
        is checked for divergence at evaluations and window edges, never per step. Raises
        :class:`StopTrial` once the trial has ended."""
        self.meter.step(samples, loss)

    def eval_due(self) -> bool:
        """Whether an evaluation is due (every ``eval_interval_s`` of training time)."""
        return self.meter.eval_due()

    def evaluating(self) -> contextlib.AbstractContextManager:
        """A context whose time is excluded from the training clock."""
        return self.meter.evaluating()

    def report(self, value: float | None) -> None:
        """The validation metric of an evaluation. With several processes every rank calls it
        (rank 0's value counts; the others may pass None), so that every rank then agrees on
        :meth:`should_stop`."""
        self.meter.report(value)

    def evaluate(self, fn: Callable[..., float], *args: Any, **kwargs: Any) -> float:
        """Run the evaluation ``fn(*args, **kwargs)`` outside the training clock, report its
        value and return it: ``evaluating()`` and ``report()`` in one call."""
        with self.evaluating():
            value = fn(*args, **kwargs)
        self.report(value)
        return value

    def should_stop(self) -> bool:
        """True once the target is reached, the pruner stopped the trial, the budget is spent
        or the measurement is complete. The first call starts the training clock."""
        return self.meter.should_stop()

    def log(self, **metrics: float) -> None:
        """Extra numbers to record with the trial (last value wins; rank 0's are kept)."""
        for key, value in metrics.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"trial.log({key}=...): a finite number, got {value!r}")
            self._logged[key] = float(value)

    # -- the end
    def result(self, *, gather: bool = True) -> dict[str, Any]:
        """``{"metrics", "curves", "pruned", "knobs_read"}``: what was measured. With
        ``gather`` every rank calls it once its loop is done (memory figures are summed over
        the ranks); without, this rank's alone."""
        if self._meter is None:  # nothing ran: do not build a kit now (perhaps at exit)
            raise NothingMeasured(NO_STEPS)
        out = self.meter.result()
        metrics = out["metrics"]
        metrics.update(self.kit.memory(gather))
        metrics.update(setup_s=self.meter.setup_s, global_batch_size=self.global_batch_size,
                       **self.kit.extra_metrics())  # fmt: skip
        for key, value in self._logged.items():
            metrics.setdefault(key, value)
        out["knobs_read"] = sorted(self.config.read)
        return out

    def run(self, fn: Any) -> dict[str, Any]:
        """Run the training function ``fn`` (or a :class:`~perftune.workload.Workload`, trained by
        perftune's built-in loop) on this trial and return :meth:`result`. A config of several
        processes (ddp/fsdp) outside a sweep has its ranks started here, as a sweep starts
        them."""
        if self._runner is not None:
            return self._runner(fn, self)
        return run_function(fn, self)

    # -- other ways in
    @classmethod
    def connect(cls) -> Trial:
        """The trial of a script that perftune launched (``perftune sweep ... -- CMD``), from
        the environment perftune set; outside perftune, a trial in ``free`` mode over an empty
        config, so the script runs unchanged on its own."""
        from perftune.trial.launcher import connect

        return connect()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, *, framework: str = "torch",
                    device: str = "cpu", target: float | None = None, mode: str = "max",
                    seed: int = 0) -> Trial:  # fmt: skip
        """A trial over ``config`` (None: the framework's defaults on ``device``) outside a
        sweep, as :meth:`from_best` makes one over a stored config."""
        from perftune.trial._standalone import standalone_trial

        return standalone_trial(config, framework=framework, device=device, target=target,
                                mode=mode, seed=seed, source="given" if config else "defaults")  # fmt: skip

    @classmethod
    def from_best(cls, name: str, *, framework: str | None = None, device: str = "cpu",
                  objective: str = "time-to-target", home: str | None = None,
                  db: str | None = None, defaults: Mapping[str, Any] | None = None,
                  target: float | None = None, mode: str = "max", seed: int = 0) -> Trial:  # fmt: skip
        """A trial over the stored best config of workload ``name`` on ``device`` (or, when
        none is stored, ``defaults``, else the framework's defaults on this device), for
        running the tuned training function outside a sweep. The clock measures time to
        ``target`` if one is given (and stops there); nothing else stops the loop."""
        from perftune.trial._standalone import from_best

        return from_best(name, framework=framework, device=device, objective=objective,
                         home=home, db=db, defaults=defaults, target=target, mode=mode,
                         seed=seed)  # fmt: skip


def run_function(fn: Callable[[Trial], Any], trial: Trial) -> dict[str, Any]:
    """Call ``fn(trial)`` in this process (one rank) and return the trial's result."""
    _CURRENT.append(trial)
    try:
        with contextlib.suppress(StopTrial):
            fn(trial)
    finally:
        _CURRENT.pop()
    return trial.result()


# --------------------------------------------------------------------------- trainable
class Trainable:
    """A training function with what perftune needs to tune it: made by :func:`trainable`.

    Calling it calls the function. ``describe()`` gives the same fields as a
    :class:`~perftune.workload.Workload`'s."""

    def __init__(self, fn: Callable[[Trial], Any], *, name: str, target: float, mode: str = "max",
                 budget_s: float = 60.0, eval_interval_s: float = 0.25, framework: str = "torch",
                 flops_per_sample: float | None = None, description: str = "") -> None:  # fmt: skip
        _check_signature(fn)
        from perftune.workload import check_description

        self.fn = fn
        self.name, self.framework, self.mode = name, framework, mode
        self.target, self.budget_s, self.eval_interval_s = target, budget_s, eval_interval_s
        self.flops_per_sample, self.description = flops_per_sample, description
        check_description(self.describe())
        self.__name__ = getattr(fn, "__name__", "train")
        self.__doc__ = fn.__doc__

    def __call__(self, trial: Trial) -> Any:
        return self.fn(trial)

    def __repr__(self) -> str:
        return f"Trainable({self.name!r}, framework={self.framework!r}, target={self.target})"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "framework": self.framework, "kind": "function",
                "loss": "-", "metric": "-", "target": self.target, "mode": self.mode,
                "budget_s": self.budget_s, "eval_interval_s": self.eval_interval_s,
                "flops_per_sample": self.flops_per_sample, "description": self.description}  # fmt: skip

    def reached(self, value: float) -> bool:
        return value >= self.target if self.mode == "max" else value <= self.target


def trainable(fn: Callable[[Trial], Any] | None = None, *, name: str, target: float,
              mode: str = "max", budget_s: float = 60.0, eval_interval_s: float = 0.25,
              framework: str = "torch", flops_per_sample: float | None = None,
              description: str = "") -> Any:  # fmt: skip
    """Make ``train(trial)`` tunable: ``perftune sweep --workload FILE.py:train``.

    Args:
        name: the workload's name (the MLflow experiment, the key of the stored best).
        target, mode: the validation metric's target; ``max`` if higher is better.
        budget_s: training seconds a time-to-target trial may take at most.
        eval_interval_s: training seconds between due evaluations (``trial.eval_due()``).
        framework: ``torch``, ``tensorflow`` or ``mindspore``: which interpreter and backend
            run the trials (``perftune sweep`` reads it from here: no ``--framework``).
    """
    options = dict(name=name, target=target, mode=mode, budget_s=budget_s,
                   eval_interval_s=eval_interval_s, framework=framework,
                   flops_per_sample=flops_per_sample, description=description)  # fmt: skip
    if fn is None:
        return lambda f: Trainable(f, **options)
    return Trainable(fn, **options)


def _check_signature(fn: Any) -> None:
    """A training function takes exactly one positional argument, the trial."""
    if not callable(fn):
        raise UsageError(f"@perftune.trainable: {fn!r} is not a function")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]  # fmt: skip
    star = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    if len(params) != 1 and not (star and not params):
        name = getattr(fn, "__name__", "the function")
        raise UsageError(f"@perftune.trainable: {name}{sig} must take exactly one argument, the "
                         "trial (def train(trial): ...)")  # fmt: skip
