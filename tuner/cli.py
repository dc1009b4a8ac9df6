"""The ``perftune`` command: a thin Typer + Rich layer over :mod:`perftune.service`.

Exit codes: 0 success, 2 bad input (one line naming what is wrong, nothing written), 1 a
runtime failure, 130 interrupted.

Everything printed goes through :data:`out` and :data:`err`, consoles that read neither Rich
markup nor emoji codes: workload names, devices, errors and configs are user or stored text
(``cuda:x:`` must not turn into an emoji, ``[/x]`` must not raise a MarkupError). What is
styled on purpose is a :class:`rich.text.Text` with a style (see :func:`_styled`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from perftune._optuna import PRUNERS, SAMPLERS
from perftune.backends import BACKENDS
from perftune.errors import PerftuneError, UsageError
from perftune.objectives import OBJECTIVES, TASKS, objective_name
from perftune.service import FORMATS
from perftune.storage import SWEEP_STATES
from perftune.sweep.config import BATCH_PROBES, MODES, WARM_STARTS, check_choice
from perftune.sweep.pareto import PICKS
from perftune.sweep.policy import POLICIES

#: Its help is the docstring of :func:`_root`, the callback that takes ``--version``.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)
db_app = typer.Typer(no_args_is_help=True, help="perftune's config database.")
app.add_typer(db_app, name="db")

#: Plain text in, plain text out: no markup, no emoji codes (styles only through Text).
out = Console(markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)

Home = Annotated[str | None, typer.Option("--home", help="Workspace folder [env PERFTUNE_HOME; default ./.perftune]")]
Storage = Annotated[str | None, typer.Option("--storage", help="Optuna storage URL [env PERFTUNE_STORAGE]")]
Tracking = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI [env PERFTUNE_TRACKING_URI]")]
Db = Annotated[str | None, typer.Option("--db", help="perftune database URL [env PERFTUNE_DB]")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr: only the result and errors [env PERFTUNE_NO_PROGRESS=1].")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="A line per finished trial, and perftune's debug log, on stderr [env PERFTUNE_LOG_LEVEL].")]
#: The levels ``PERFTUNE_LOG_LEVEL`` takes (perftune's loggers, ``perftune.*``; default warning).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _choice(flag: str, choices: Sequence[str], text: str) -> Any:
    """An option taking one of ``choices`` (from the registry that defines them): shown as
    ``<a|b|c>`` in ``--help``, offered by shell completion, and any other value a one-line
    :class:`UsageError` naming ``flag`` (exit 2)."""
    choices = tuple(choices)

    def parse(value: str) -> str:
        check_choice(flag, value, choices)
        return value

    return typer.Option(flag, help=text, parser=parse, metavar=f"<{'|'.join(choices)}>",
                        autocompletion=lambda incomplete: [c for c in choices if c.startswith(incomplete)])  # fmt: skip


def _choices(flag: str, choices: Sequence[str], text: str) -> Any:
    """An option taking one of ``choices`` or several, comma-separated (``a,b``): shown as
    ``<a|b|c>[,...]`` in ``--help``, each part completed and checked as :func:`_choice` does."""
    choices = tuple(choices)

    def parse(value: str) -> str:
        for part in value.split(","):
            if part.strip() not in choices:
                check_choice(flag, value, choices)
        return value

    def complete(incomplete: str) -> list[str]:
        head, _, last = incomplete.rpartition(",")
        return [f"{head},{c}" if head else c for c in choices if c.startswith(last)]

    return typer.Option(flag, help=text, parser=parse, metavar=f"<{'|'.join(choices)}>[,...]",
                        autocompletion=complete)


def _version(value: bool) -> None:
    if value:
        from perftune.service import version

        out.print(f"perftune {version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print perftune's version and exit.")] = False) -> None:  # fmt: skip
    """Automated performance tuning for deep-learning workloads."""


def _ws(home=None, storage=None, tracking_uri=None, db=None):
    from perftune.settings import Workspace

    return Workspace.resolve(home, storage=storage, tracking_uri=tracking_uri, db=db)


#: Terminals at least this wide get the tables' optional columns (MFU, energy, a sweep's stored
#: best config); narrower ones get those values on the lines under the table (and in --json).
WIDE = 100


def _table(title: str, *columns: str, whole: Sequence[str] = ()) -> Table:
    """A table for :func:`_print_table`; the ``whole`` columns hold short names (a state, an
    objective such as ``time-to-target``) best not broken inside a word."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=col in whole)
    return table


def _print_table(table: Table) -> None:
    """Print ``table`` fitted to the terminal without cutting a value (no ellipsis, no cropping):
    every cell wraps at spaces and folds a word longer than its column. When the table is wider
    than the terminal, the columns made ``no_wrap`` keep their widest line if that leaves the
    others 12 characters each, else narrow to their longest word if that leaves the others 4;
    the others share the rest (else, or when every column is ``no_wrap``, Rich narrows the
    widest)."""
    def lines(cell: Any) -> list[str]:
        return (cell.plain if isinstance(cell, Text) else str(cell)).splitlines() or [""]

    def widest(column, split) -> int:
        return max(len(part) for cell in (column.header, *column.cells) for line in lines(cell)
                   for part in split(line))  # fmt: skip

    whole = [i for i, c in enumerate(table.columns) if c.no_wrap]
    others, border = len(table.columns) - len(whole), 3 * len(table.columns) + 1
    widths = {}
    if others and sum(widest(c, lambda line: [line]) for c in table.columns) + border > out.width:
        for split, least in ((lambda line: [line], 12), (str.split, 4)):
            widths = {i: widest(table.columns[i], split) for i in whole}
            if sum(widths.values()) + least * others + border <= out.width:
                break
        else:
            widths = {}
    for i, column in enumerate(table.columns):
        column.overflow, column.no_wrap, column.width = "fold", False, widths.get(i)
    out.print(table)


def _env_flag(name: str) -> bool:
    """An on/off environment variable: unset, empty, ``0``, ``false``, ``no`` and ``off`` are off."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _no_progress(quiet: bool) -> bool:
    """No progress on stderr: ``-q`` or ``PERFTUNE_NO_PROGRESS`` (``--json`` keeps it: stdout
    carries the JSON, stderr the progress)."""
    return quiet or _env_flag("PERFTUNE_NO_PROGRESS")


class _StderrHandler(logging.StreamHandler):
    """A log handler on whatever ``sys.stderr`` is when a record is written."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _logging(verbose: bool = False) -> None:
    """Set perftune's loggers (``perftune.*``) to ``PERFTUNE_LOG_LEVEL`` (default warning), or to
    debug with ``-v``, written on stderr. An unknown level is a usage error naming the variable."""
    level = os.environ.get("PERFTUNE_LOG_LEVEL", "").strip().lower() or "warning"
    if level not in LOG_LEVELS:
        raise UsageError(f"PERFTUNE_LOG_LEVEL {level}: choose {', '.join(LOG_LEVELS)}")
    logger = logging.getLogger("perftune")
    logger.setLevel(logging.DEBUG if verbose else level.upper())
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}{(' ' + unit) if unit else ''}"
    return str(v)


def _styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and ``(text, style)`` pairs, e.g.
    ``_styled("fastest here: ", (device, "bold"))``: the text is never read as markup."""
    return Text.assemble(*parts)


def _config_text(cfg: dict[str, Any] | None) -> str:
    if not cfg:
        return "-"
    return ", ".join(f"{k}={_fmt(v)}" for k, v in cfg.items())


@app.command()
def devices(
    framework: Annotated[str, _choice("--framework", (*BACKENDS, "all"), "A framework, or all of them.")] = "all",
    refresh: Annotated[bool, typer.Option("--refresh", help="Discover again (the devices are cached in the workspace per interpreter and framework version).")] = False,
    home: Home = None, json_out: Json = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="perftune's debug log on stderr (each framework's devices: cached or discovered) [env PERFTUNE_LOG_LEVEL].")] = False,
) -> None:
    """List the devices each framework finds on this machine."""
    from perftune.service import list_devices

    _logging(verbose)
    found = list_devices(None if framework == "all" else [framework], cache_dir=_ws(home).home, refresh=refresh)
    if json_out:
        print(json.dumps(found, indent=2, default=str))
        return
    table = _table("Devices", "framework", "kind", "name", "count", "memory", "cores", "fingerprint",
                   whole=("framework", "kind", "fingerprint"))  # fmt: skip
    for d in found:
        if d.get("error"):
            table.add_row(d["framework"], "-", _styled((d["error"], "red")), "", "", "", "")
            continue
        mem = f"{d['memory_bytes'] / 2**30:.1f} GiB" if d.get("memory_bytes") else "-"
        table.add_row(d["framework"], d["kind"], d["name"], str(d["count"]), mem,
                      str(d.get("cores", "-")), d["fingerprint"][:12])  # fmt: skip
    _print_table(table)


class _Progress:
    """A sweep's progress on stderr. On a terminal: a live bar over trials (then one over the
    confirmation runs) whose last column says what runs now ("baseline running", "trial 5/16
    running", "probing batch size", "confirming candidate 2/3 (candidate-4), round 1"), and with
    ``verbose`` a line per finished trial above it. Elsewhere (a file, a pipe, where a live bar
    would show only once it ended): one line per event, as it happens."""

    def __init__(self, unit: str, verbose: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.unit, self.verbose, self.live = unit, verbose, err.is_terminal
        self.bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}", markup=False),
                            console=err, transient=False)  # fmt: skip
        self.task = self.confirm_task = self.probe_task = None
        self.total = 0

    def text(self, event: str, data: dict[str, Any]) -> str | None:
        """What an event says, in a few words (None: nothing to say)."""
        if event == "start":
            self.total, self.unit = data["total"], data.get("unit") or self.unit  # a stage's own
            stage = f"{data['stage']} stage: " if data.get("stage") else ""
            return f"{stage}{data['done']}/{data['total']} trials done"
        if event == "probe":
            return f"probing batch size (up to {data['max']})"
        if event == "probed":
            bound = data.get("max_batch_size")
            return f"batch size bounded at {bound}" if bound else "batch probe: no bound found"
        if event == "running":
            return "baseline running" if data.get("baseline") else f"trial {data['i']}/{data['total']} running"
        if event == "trial":
            state = data["state"].lower() if not data.get("cause") else data["cause"]
            return (f"trial {data['done']}/{self.total}: #{data['number']} {state} "
                    f"{_fmt(data['value'], self.unit)} | best {_fmt(data['best'], self.unit)}")  # fmt: skip
        if event == "confirm":
            return (f"confirming candidate {data['candidate']}/{data['candidates']} ({data['label']}), "
                    f"round {data['repeat']}")  # fmt: skip
        if event == "warm_start":
            return _warm_line(data)
        if event == "fit":
            return f"training {data['workload']} once to serve it (cached in {data['path']})"
        if event == "fitted":
            return f"trained: metric {_fmt(data.get('fit_metric'))} after {_fmt(data.get('fit_time_s'), 's')}"
        return None

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        text = self.text(event, data)
        if not self.live or event in ("warm_start", "fit", "fitted"):
            if text:
                err.print(text, markup=False, highlight=False, soft_wrap=True)
            return
        self.bar.start()  # (again: a no-op)
        if event == "start":
            self.task = self.bar.add_task("trials", total=data["total"], completed=data["done"], info="")
        elif event == "probe":
            self.probe_task = self.bar.add_task("batch probe", total=None, info=text)
        elif event == "probed" and self.probe_task is not None:
            self.bar.update(self.probe_task, total=1, completed=1, info=text)
        elif event == "running" and self.task is not None:
            self.bar.update(self.task, info=text)
        elif event == "trial" and self.task is not None:
            self.bar.update(self.task, completed=data["done"], info=text)
            if self.verbose:
                self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        elif event == "confirm":
            if self.confirm_task is None:
                self.confirm_task = self.bar.add_task("confirm", total=data["total"], info="")
            self.bar.update(self.confirm_task, completed=data["i"] - 1, info=text)

    def stop(self) -> None:
        if self.confirm_task is not None:
            self.bar.update(self.confirm_task, completed=self.bar.tasks[self.confirm_task].total, info="")
        self.bar.stop()


@app.command()
def sweep(
    command: Annotated[list[str] | None, typer.Argument(help="After --: a training command to run per trial, its {knob} fields filled from the config (launcher mode), e.g. -- python train.py --bs {batch_size}.", show_default=False)] = None,
    workload: Annotated[str | None, typer.Option(help="Built-in name (mlp-digits, cnn-digits, gpt-tiny), or FILE.py:FUNC / module:FUNC: a @perftune.trainable training function or a Workload factory.")] = None,
    framework: Annotated[str | None, _choice("--framework", BACKENDS, "[default: what the workload file declares, else torch]")] = None,
    name: Annotated[str | None, typer.Option(help="Launcher mode: the workload's name (where results are stored).")] = None,
    target: Annotated[float | None, typer.Option(help="Launcher mode: the metric's target (what trial.report() reports).")] = None,
    mode: Annotated[str, _choice("--mode", MODES, "Launcher mode: max if a higher metric is better, else min.")] = "max",
    eval_interval: Annotated[float | None, typer.Option(help="Launcher mode: training seconds between due evaluations (trial.eval_due()) [default 0.25].")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps, xpu, npu (Ascend) or tpu; KIND:INDEX picks one; "
                                             "'all': one study per device found, then a cross-device table")] = "cpu",
    objective: Annotated[str | None, _choices("--objective", OBJECTIVES, "What to optimise [default: time-to-target; "
                                                                       "--task inference: throughput-at-slo]; several, "
                                                                       "comma-separated (time-to-target,energy): a Pareto front.")] = None,
    task: Annotated[str | None, _choice("--task", TASKS, "training, or inference: serve the trained model "
                                                         "[default: the objective's].")] = None,
    slo_p99_ms: Annotated[float | None, typer.Option("--slo-p99-ms", help="Inference: the p99 request latency target, in ms "
                                                                         "(throughput-at-slo counts configs under it only).")] = None,
    max_quality_drop: Annotated[float | None, typer.Option(help="Inference: the most quality (metric units) a config may lose "
                                                                "against the trained fp32 model [default 0.01].")] = None,
    request_rate: Annotated[float | None, typer.Option(help="Inference, --objective latency: requests per second arriving "
                                                            "(Poisson); queueing counts [default: back to back].")] = None,
    trials: Annotated[int, typer.Option(help="Total trials in the study (re-running resumes up to it).")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
    space: Annotated[str | None, typer.Option(help="YAML file overriding or extending the built-in search space.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name [default WORKLOAD-FRAMEWORK-DEVICE-OBJECTIVE].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the sampler and training.")] = None,
    sampler: Annotated[str, _choice("--sampler", SAMPLERS, "Optuna's sampler.")] = "tpe",
    pruner: Annotated[str, _choice("--pruner", PRUNERS, "Optuna's pruner (none: no pruning).")] = "median",
    confirm_top: Annotated[int, typer.Option(help="Candidates re-measured before storing.")] = 2,
    confirm_repeats: Annotated[int, typer.Option(help="Paired rounds (repeats) of the confirmation at least.")] = 3,
    confirm_max_repeats: Annotated[int | None, typer.Option(help="Rounds at most: they go on until the best's speedup is known to ±10% (95% CI). Default 6 (from 3 repeats on).")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Seconds before a trial is killed.")] = None,
    budget: Annotated[float | None, typer.Option(help="Training seconds cap per time-to-target trial.")] = None,
    batch_probe: Annotated[str, _choice("--batch-probe", BATCH_PROBES, "Bound batch_size by the largest that fits, probed first: "
                                                                       "auto (on accelerators), on or off.")] = "auto",
    workers: Annotated[int, typer.Option(help="Trial processes on this machine working on the study at once "
                                              "(needs --storage postgresql://... or journal:///FILE).")] = 1,
    max_retry: Annotated[int, typer.Option(help="Retries of a trial whose worker died mid-trial.")] = 2,
    heartbeat: Annotated[float, typer.Option(help="Seconds between a running trial's heartbeats.")] = 30.0,
    grace_period: Annotated[float, typer.Option(help="Seconds without a heartbeat before a trial counts as dead.")] = 120.0,
    warm_start: Annotated[str, _choice("--warm-start", WARM_STARTS, "auto: a new study first tries the stored bests of this workload "
                                                                   "from other devices and objectives (up to 5); off: not.")] = "auto",
    patience: Annotated[int | None, typer.Option(help="End the search once this many completed trials in a row "
                                                      "improved the best by less than 1%.")] = None,
    search: Annotated[str, _choice("--search", POLICIES, "factored: throughput first, then samples to target (time to target only); "
                                                         "joint: every knob at once; auto: joint (it won on two of three measured workloads, docs/benchmarks.md).")] = "auto",
    confirm_again: Annotated[bool, typer.Option("--confirm-again", help="A finished sweep's rerun shows its stored result; this runs its confirmation round again.")] = False,
    home: Home = None, storage: Storage = None, tracking_uri: Tracking = None, db: Db = None,
    json_out: Json = False, quiet: Quiet = False, verbose: Verbose = False,
) -> None:
    """Run (or resume) a tuning sweep and store the confirmed best config."""
    from perftune.objectives import get_objective
    from perftune.service import sweep as run
    from perftune.sweep import SweepConfig

    cfg = SweepConfig(workload=workload, framework=framework, device=device, objective=objective,
                      trials=trials, timeout=timeout, space=space, study=study, seed=seed,
                      sampler=sampler, pruner=pruner, confirm_top=confirm_top,
                      confirm_repeats=confirm_repeats, confirm_max_repeats=confirm_max_repeats, trial_timeout=trial_timeout, budget_s=budget,
                      batch_probe=batch_probe, workers=workers, max_retry=max_retry,
                      heartbeat_s=heartbeat, grace_s=grace_period, command=command or None,
                      name=name, target=target, mode=mode, eval_interval_s=eval_interval,
                      warm_start=warm_start, patience=patience, search=search,
                      confirm_again=confirm_again, task=task, slo_p99_ms=slo_p99_ms,
                      max_quality_drop=max_quality_drop, request_rate=request_rate)  # fmt: skip
    cfg.validate()
    ws = _ws(home, storage, tracking_uri, db)
    unit = get_objective(objective_name(cfg.objective)).unit
    _logging(verbose)
    quiet = _no_progress(quiet)

    def _terminate(signum, frame):  # `kill PID` stops a sweep as cleanly as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    if device == "all":
        _sweep_all(cfg, ws, unit, quiet, json_out, verbose)
        return
    progress = None if quiet else _Progress(unit, verbose)
    try:
        report = run(cfg, ws, progress)
    finally:
        if progress is not None:
            progress.stop()
    if json_out:
        if report.already_complete and not quiet:
            err.print(_complete_line(report), markup=False, highlight=False, soft_wrap=True)
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_report(report, ws)
    if report.front is not None and report.front["points"]:
        return
    if report.best is None and (report.inference or {}).get("closest"):
        raise PerftuneError("no config met the limits: nothing stored (see the closest config above)")
    if report.best is None:
        raise PerftuneError("no configuration reached a result: see the failures above")


@app.command()
def worker(
    study: Annotated[str | None, typer.Option(help="The study to join (perftune sweep names it WORKLOAD-FRAMEWORK-DEVICE-OBJECTIVE).")] = None,
    queue: Annotated[bool, typer.Option("--queue", help="Run the sweeps submitted to the API (queued in the database), oldest first.")] = False,
    poll: Annotated[float, typer.Option(help="--queue: seconds between looks at an empty queue.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="--queue: run at most one sweep; exit if none is queued.")] = False,
    max_sweeps: Annotated[int | None, typer.Option(help="--queue: exit after this many sweeps.")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="--queue: exit once the queue has been empty this many seconds.")] = None,
    worker_index: Annotated[int, typer.Option(help="This worker's number (offsets the sampler's seed).")] = 1,
    home: Home = None, storage: Storage = None, tracking_uri: Tracking = None, db: Db = None,
    json_out: Json = False, quiet: Quiet = False, verbose: Verbose = False,
) -> None:
    """Join an existing sweep's study (--study), or run queued sweeps (--queue)."""
    from perftune.service import join_sweep
    from perftune.sweep import check_number

    if (study is None) == (not queue):
        raise UsageError("--study NAME or --queue: give exactly one")
    for flag, value in (("--poll", poll), ("--idle-exit", idle_exit)):
        if value is not None:
            check_number(flag, value, 0, 86_400, "seconds")
    if max_sweeps is not None:
        check_number("--max-sweeps", max_sweeps, 1, 1_000_000)
    ws = _ws(home, storage, tracking_uri, db)
    _logging(verbose)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    if queue:
        from perftune.service import run_queue

        result = run_queue(ws, poll=poll, max_sweeps=1 if once else max_sweeps,
                           idle_exit=(0.0 if once and idle_exit is None else idle_exit),
                           log=None if quiet else  # what a queue worker does: a log, not progress
                           (lambda msg: err.print(f"perftune worker: {msg}", highlight=False)))  # fmt: skip
        if json_out:
            print(json.dumps(result, indent=2, default=str))
        return
    progress = None if _no_progress(quiet) else _Progress("", verbose)
    try:
        result = join_sweep(study, ws, progress, worker_index=worker_index)
    finally:
        if progress is not None:
            progress.stop()
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        out.print(f"{result['worker']} ran {result['trials_run']} trial(s); the study has "
                  f"{result['trials_done']} of {result['trials']}")  # fmt: skip


@app.command()
def sweeps(
    state: Annotated[str | None, _choice("--state", SWEEP_STATES, "Only sweeps in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1 to 10000), newest first.")] = 50,
    home: Home = None, db: Db = None, tracking_uri: Tracking = None, json_out: Json = False,
) -> None:
    """List sweeps, newest first: state, progress, best so far (queued ones included)."""
    from perftune.service import list_sweeps

    found = list_sweeps(_ws(home, db=db, tracking_uri=tracking_uri), state=state, limit=limit)
    if json_out:
        print(json.dumps(found, indent=2, default=str))
        return
    wide = out.width >= WIDE
    table = _table("Sweeps", "id", "state", "workload", "device", "objective", "trials", "best",
                   *(["best config"] if wide else []), whole=("id", "state", "objective", "trials", "best"))  # fmt: skip
    for r in found:
        state = r["state"] + (" (cancelling)" if r["cancel_requested"] and r["state"] == "running" else "")
        table.add_row(str(r["id"]), state, f"{_fmt(r['workload'])} ({_fmt(r['framework'])})",
                      _fmt(r["device_kind"]), r["objective"], f"{r['trials_done']}/{_fmt(r.get('trials_total'))}",
                      _sweep_value(r), *([_fmt(r["best_config_id"])] if wide else []))  # fmt: skip
    _print_table(table)
    for r in found:
        if r.get("error"):
            out.print(f"#{r['id']} error: {r['error']}", soft_wrap=True, highlight=False)


def _sweep_value(r: dict[str, Any]) -> str:
    """A sweep's result as ``perftune best`` shows a value: the confirmed one with its unit, else
    the search's best so far marked ``(search)``."""
    if r.get("confirmed_value") is not None:
        return _fmt(r["confirmed_value"], r.get("unit") or "")
    if r.get("best_value") is not None:
        return f"{_fmt(r['best_value'], r.get('unit') or '')} (search)"
    return "-"


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    allow_dir: Annotated[list[str] | None, typer.Option("--allow-dir", metavar="<dir>", help="A directory submitted FILE.py workloads and space YAMLs may live under; repeatable: --allow-dir A --allow-dir B (also PERFTUNE_WORKLOAD_DIRS).")] = None,
    home: Home = None, storage: Storage = None, tracking_uri: Tracking = None, db: Db = None,
) -> None:
    """Serve the HTTP API: best configs, devices, the sweep queue (writes need PERFTUNE_API_TOKEN)."""
    from perftune.service import allowed_dirs, prepare_server
    from perftune.storage import redact_url

    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: must be between 1 and 65535")
    for d in allow_dir or []:
        if not os.path.isdir(d):
            raise UsageError(f"--allow-dir {d}: not a directory")
    ws = _ws(home, storage, tracking_uri, db)
    try:
        import uvicorn

        from perftune.server import create_app
    except ImportError as exc:
        raise UsageError(f"perftune serve needs FastAPI and uvicorn ({exc}): pip install perftune") from None
    prepare_server(ws)
    token = os.environ.get("PERFTUNE_API_TOKEN") or None
    dirs = allowed_dirs(allow_dir or [])
    err.print(f"perftune API on http://{host}:{port} (db {redact_url(ws.db)}; "
              + ("writes need the bearer token PERFTUNE_API_TOKEN" if token else
                 "read-only: set PERFTUNE_API_TOKEN to accept sweeps")
              + f"; workload files from: {', '.join(dirs) or 'none'})", highlight=False, soft_wrap=True)  # fmt: skip
    uvicorn.run(create_app(ws, token=token, allow_dirs=dirs), host=host, port=port,
                log_level=os.environ.get("PERFTUNE_LOG_LEVEL", "info"))  # fmt: skip


def _sweep_all(cfg, ws, unit: str, quiet: bool, json_out: bool, verbose: bool = False) -> None:
    from perftune.service import sweep_all_devices

    bars: list[_Progress] = []

    def progress(dev):
        if quiet:
            return None
        err.print(_styled((dev.spec, "bold"), f": {dev.name}"))
        bars.append(_Progress(unit, verbose))
        return bars[-1]

    def finish_bar() -> None:
        while bars:
            bars.pop().stop()

    try:
        result = sweep_all_devices(cfg, ws, lambda dev: (finish_bar(), progress(dev))[1])
    finally:
        finish_bar()
    if json_out:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_devices_table(result)
    if result["winner"] is None:
        raise PerftuneError("no device reached a result: see the errors above")


def _print_devices_table(result: dict[str, Any]) -> None:
    unit = result["unit"] or ""
    # MFU and energy columns only when some device has them (keeps the table narrow).
    extra = [(col, key) for col, key in (("MFU", "mfu"), ("J/sample", "joules_per_sample"))
             if any(r.get(key) is not None for r in result["devices"])]  # fmt: skip
    table = _table("Best config per device" + (f" (objective in {unit}, "
                   f"{'lower' if result['direction'] == 'minimize' else 'higher'} is better)" if unit else ""),
                   "device", "name", "best", "spread", "speedup", *(c for c, _ in extra), "max batch",
                   whole=("device", "best", "spread", "speedup", "MFU", "J/sample", "max batch"))  # fmt: skip
    for r in result["devices"]:
        if "error" in r:
            table.add_row(r["device"], r.get("name") or "-", _styled(("failed", "red")), *[""] * (3 + len(extra)))
            continue
        mark = (" wins", "bold green") if r["winner"] else ""
        table.add_row(r["device"], r["name"], _styled(_fmt(r["value"]), mark),
                      f"±{r['spread'] * 100:.0f}%" if r["spread"] is not None else "-",
                      f"{r['speedup']:.2f}x" if r["speedup"] else "-",
                      *(_metric_text(r, key) for _, key in extra), _fmt(r.get("max_batch_size")))  # fmt: skip
    _print_table(table)
    for r in result["devices"]:
        text = f"error: {r['error']}" if "error" in r else f"config: {_config_text(r['config'])}"
        out.print(f"{r['device']} {text}", soft_wrap=True, highlight=False)
    if result["winner"]:
        out.print(_styled("fastest here: ", (result["winner"], "bold")))


def _metric_text(m: dict[str, Any], key: str) -> str:
    """``41.2%`` for ``mfu``, else the number (``-`` when not measured)."""
    return f"{m['mfu'] * 100:.1f}%" if key == "mfu" and m.get("mfu") is not None else _fmt(m.get(key))


def _speedup_text(gain: float | None, interval: Sequence[float] | None = None) -> str:
    """``2.31x [2.05, 2.60]``: a speedup with its 95% confidence interval when it has one."""
    if not gain:
        return "-"
    return f"{gain:.2f}x" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def _complete_line(r) -> str:
    """A finished sweep's rerun: which sweep finished it, and how to confirm again."""
    done = r.already_complete
    return (f"{r.study_name} is complete: sweep #{done['sweep_id']} finished it at {done['finished_at']}; "
            "its stored result (perftune sweep ... --confirm-again confirms again)")


def _print_front(r, ws) -> None:
    """A multi-objective sweep's report: its confirmed Pareto front as a table, then how to
    pick one point from the store."""
    front = r.front or {}
    names, units = front.get("objectives") or [], front.get("units") or []
    base_cfg = next((p["config"] for p in front.get("points", []) if p["label"] == "baseline"), None)
    table = _table(f"Pareto front: {r.workload} / {r.framework} / {r.device['kind']} / {r.objective}", "point",
                   *[f"{n} ({u})" for n, u in zip(names, units, strict=True)], "runs", "config",
                   whole=("point", "runs"))  # fmt: skip
    for p in front.get("points", []):
        cells = [_fmt(v) + (f"\n[{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else "")
                 for v, iv in zip(p["values"], p["intervals"], strict=True)]  # fmt: skip
        label = "default" if p["label"] == "baseline" else f"trial {p['trial_number']}"
        shown = "framework default" if p["label"] == "baseline" else _config_text(
            {k: v for k, v in p["config"].items() if (base_cfg or {}).get(k) != v} if base_cfg else p["config"])
        table.add_row(label, *cells, str(p["rounds"]), shown)
    _print_table(table)
    if front.get("dominated"):
        out.print(f"dominated after confirmation: {', '.join(front['dominated'])}", highlight=False)
    for warning in r.warnings:
        out.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"stored: perftune best --workload {r.workload} --framework {r.framework} --device "
              f"{r.device['kind']} --pick fastest|efficient|smallest|balanced (or --weights "
              f"{names[0] if names else 'time'}=1,...)" + (f" --home {ws.home}" if str(ws.home) != os.path.abspath(".perftune") else ""),
              highlight=False, soft_wrap=True)  # fmt: skip
    out.print("MLflow: perftune ui   (run " + str(r.mlflow_run_id) + "; plots/pareto_front.html)")


def _print_report(r, ws) -> None:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(r.trials.items()))
    if getattr(r, "front", None) is not None:
        out.print(_styled("\n", (r.study_name, "bold"), f": {counts}"))
        _print_front(r, ws)
        return
    if getattr(r, "already_complete", None):
        out.print(_complete_line(r), markup=False, highlight=False, soft_wrap=True)
    out.print(_styled("\n", (r.study_name, "bold"), f": {counts}"))
    if r.failures:
        causes: dict[str, int] = {}
        for f in r.failures:
            causes[f["cause"]] = causes.get(f["cause"], 0) + 1
        out.print("failed trials: " + ", ".join(f"{c} x{n}" for c, n in causes.items())
                  + f"  (logs in {ws.logs})")  # fmt: skip
    # The changed knobs: a column when the terminal is wide, else a line under the table.
    median, config = f"median ({r.unit})", ["config (changes from the default)"] if out.width >= WIDE else []
    table = _table(f"{r.workload} / {r.framework} / {r.device['kind']} ({r.device['name']}) / {r.objective}",
                   "", *config, median, "spread", "95% CI", "runs", whole=("", median, "spread", "95% CI", "runs"))  # fmt: skip
    base_cfg, under = (r.baseline or {}).get("config") or {}, None
    for label, side in (("baseline", r.baseline), ("best", r.best)):
        if side is None:
            table.add_row(label, *["-"] * (4 + len(config)))
            continue
        iv = side.get("interval")
        st = side["stats"] or {}
        runs = f"{len(side['values'])}" + (f" ({len(side['failures'])} failed)" if side["failures"] else "")
        if label == "baseline" or side["label"] == "baseline":
            name, cfg_text = label if label == "baseline" else "best (= baseline)", "framework default"
        else:
            name = f"best (trial {side['trial_number']})"
            cfg_text = _config_text({k: v for k, v in side["config"].items() if base_cfg.get(k) != v})
            under = f"{name} config (changes from the default): {cfg_text}"
        table.add_row(name, *([cfg_text] if config else []), _fmt(st.get("median")),
                      f"±{st['spread'] * 100:.0f}%" if st else "-",
                      f"[{_fmt(iv['low'])}, {_fmt(iv['high'])}]" if iv else "-", runs)  # fmt: skip
    _print_table(table)
    if under and not config:
        out.print(under, soft_wrap=True, highlight=False)
    m = (r.best or {}).get("metrics") or {}
    facts = []
    if m.get("throughput_sps"):
        facts.append(f"{m['throughput_sps']:,.0f} samples/s")
    if m.get("p99_ms") is not None:
        facts.append(f"latency p50 {m['p50_ms']:.3g} / p99 {m['p99_ms']:.3g} ms")
    if m.get("quality") is not None:
        facts.append(f"quality {m['quality']:.4g} (fp32 model {m['quality_reference']:.4g})")
    if m.get("mfu") is not None:
        facts.append(f"MFU {m['mfu'] * 100:.1f}% ({m.get('mfu_peak_source')})")
    if m.get("joules_per_sample") is not None:
        facts.append(f"{m['joules_per_sample']:.3g} J/sample at {m.get('avg_power_w', 0):.0f} W ({m.get('energy_source')})")
    elif m.get("energy_source") == "unavailable":
        facts.append("energy: unavailable here")
    if facts:
        out.print("best config: " + ", ".join(facts))
    if r.batch_probe and r.batch_probe.get("max_batch_size"):
        out.print(f"batch size bounded at {r.batch_probe['max_batch_size']} by the memory probe")
    for warning in r.warnings:
        out.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    warm, stopped, cost = (getattr(r, k, None) for k in ("warm_start", "stopped_early", "cost"))
    if warm:
        out.print(_warm_line(warm), markup=False, highlight=False, soft_wrap=True)
    if stopped:
        out.print(f"search stopped early after {stopped['after_trials']} trials: the last "
                  "--patience completed trials improved the best by less than 1%")  # fmt: skip
    if r.speedup is not None:
        iv = r.speedup_interval
        out.print(_styled("speedup over the default: ", (f"{r.speedup:.2f}x", "bold"),
                          f" (95% CI {iv['low']:.2f}-{iv['high']:.2f}x, {r.confirm_rounds} paired rounds)"
                          if iv else "", "" if r.stored else "; an earlier stored best is better: kept it"))  # fmt: skip
    if getattr(r, "challenger", None):
        out.print(_challenger_line(r.challenger), markup=False, highlight=False, soft_wrap=True)
    if cost:
        out.print(_payback_line(cost, r.speedup))
    out.print(f"stored: perftune best --workload {r.workload} --framework {r.framework} "
              f"--device {r.device['kind']} --objective {objective_name(r.objective)}"
              + (f" --home {ws.home}" if str(ws.home) != os.path.abspath(".perftune") else ""))  # fmt: skip
    spooled = " (spooled: not on the tracking server yet)" if str(r.mlflow_run_id).startswith("local-") else ""
    out.print("MLflow: perftune ui   (run " + str(r.mlflow_run_id) + ")" + spooled)


def _challenger_line(ch: dict[str, Any]) -> str:
    """Why the default stayed: "no candidate beat the default: the closest, trial 7, ran at
    0.93x (95% CI 0.71-1.22x, 6 paired rounds)"."""
    iv = ch.get("speedup_interval")
    within = f" (95% CI {iv['low']:.2f}-{iv['high']:.2f}x, {iv['n']} paired rounds)" if iv else ""
    return f"no candidate beat the default: the closest, trial {ch['trial_number']}, ran at {ch['speedup']:.2f}x{within}"


def _warm_line(w: dict[str, Any]) -> str:
    """The warm start in one line (the progress event's data or the report's account)."""
    n, sources = w["enqueued"], ", ".join(w.get("sources") or [])
    if not n:
        return f"warm start: none of the {w.get('skipped', 0)} stored configs fits this search space"
    text = f"warm start: {n} stored config{'s' if n > 1 else ''} tried first (from {sources})"
    if "best_trial_warm" in w:
        text += ("; the search's best came from one of them" if w["best_trial_warm"] else
                 f"; trial {w['first_better_trial']} was the first to beat them"
                 if w.get("first_better_trial") is not None else "; none of them was the search's best")  # fmt: skip
    if w.get("saved_trials") is not None:
        text += "; " + _saved_text(w)
    return text


def _saved_text(w: dict[str, Any]) -> str:
    """"sampled trials matched them after 9 trials: the warm start saved about 7"."""
    n, saved = w["trials_to_match"], w["saved_trials"]
    if n is None:
        return f"no sampled trial matched them: the warm start saved at least {saved} trials"
    if saved < 0:
        return f"sampled trials matched them after {n}: the warm start cost about {-saved}"
    return f"sampled trials matched them after {n}: the warm start saved about {saved}"


def _payback_line(cost: dict[str, Any], speedup: float | None) -> str:
    """"the sweep took 3.2 min; at 1.8x it saves 26.7 min per hour of training and pays for
    itself after 0.12 h of training" (or "no speedup: nothing to pay back")."""
    s = cost["sweep_s"]
    took = f"the sweep took {s / 60:.1f} min" if s >= 60 else f"the sweep took {s:.0f} s"
    if cost.get("saved_per_training_hour_s") is None:
        return f"{took}; no speedup: nothing to pay back"
    hours = cost["payback_training_hours"]
    after = f"{hours:.2f}" if hours >= 0.1 else f"{hours:.2g}"
    return (f"{took}; at {speedup:.2f}x it saves {cost['saved_per_training_hour_s'] / 60:.1f} min per "
            f"hour of training and pays for itself after {after} h of training")


@app.command()
def best(
    workload: Annotated[str | None, typer.Option(help="Workload name [default: list every workload's stored bests].")] = None,
    framework: Annotated[str | None, _choice("--framework", BACKENDS, "Filter by framework.")] = None,
    device: Annotated[str | None, typer.Option(help="Device kind, name or fingerprint prefix.")] = None,
    objective: Annotated[str | None, _choice("--objective", OBJECTIVES, "Filter by objective.")] = None,
    fmt: Annotated[str | None, _choice("--format", FORMATS, "Print only the best config, for a script or launcher (with --workload): json, yaml, args (--knob value ...) or env (PERFTUNE_KNOB=value lines).")] = None,
    pick: Annotated[str | None, _choice("--pick", PICKS, "Of a stored Pareto front (several objectives), the point to "
                                                         "use: the fastest, the most energy-efficient, the smallest in "
                                                         "memory, or balanced (the default).")] = None,
    weights: Annotated[str | None, typer.Option(help="Of a stored Pareto front, the point these weights favour: "
                                                     "OBJECTIVE=WEIGHT,... e.g. time=1,energy=0.5.")] = None,
    home: Home = None, db: Db = None, json_out: Json = False,
) -> None:
    """Show a workload's stored best configs, best first; without --workload, every stored best.
    Stored Pareto fronts (several objectives) come after, each with the point --pick or
    --weights chooses."""
    from perftune.service import best_configs, format_config, pareto_fronts

    if fmt is not None and workload is None:
        raise UsageError(f"--format {fmt}: give --workload too (whose best config to print)")
    ws = _ws(home, db=db)
    picking = pick is not None or weights is not None  # a point of a front, not a single best
    found = [] if picking else best_configs(ws, workload, framework=framework, device=device, objective=objective)
    fronts = pareto_fronts(ws, workload, framework=framework, device=device, objective=objective,
                           pick=pick, weights=weights)  # fmt: skip
    if picking and not fronts:
        raise PerftuneError("no Pareto front stored" + (f" for workload {workload}" if workload else "")
                            + " (sweep with several objectives: --objective time-to-target,energy)")  # fmt: skip
    if fmt is not None and not found and fronts:
        print(format_config(fronts[0]["picked"]["config"], fmt))
    elif json_out:
        print(json.dumps([r.to_dict() for r in found] + fronts, indent=2, default=str))
    else:
        for f in fronts:
            _print_stored_front(f)
    if fmt is not None and found:
        print(format_config(found[0].config, fmt))
        if len({(r.framework, r.device_fingerprint, r.objective) for r in found}) > 1:
            err.print(f"note: {len(found)} stored bests match; this is the best of them, #{found[0].id} "
                      "(narrow with --framework/--device/--objective)", markup=False, highlight=False)  # fmt: skip
    elif json_out:
        pass  # printed above, with the fronts
    elif found and workload is None:
        _print_table(_every_best_table(found))
        out.print("their configs: perftune best --workload NAME", highlight=False)
    elif found:
        wide = out.width >= WIDE
        _print_table(_best_table(found, workload, wide))
        for r in found:
            out.print(f"#{r.id} config: {_config_text(r.config)}", soft_wrap=True, highlight=False)
            if not wide and _efficiency(r):
                out.print(f"#{r.id} {', '.join(f'{col} {text}' for col, text in _efficiency(r))}", highlight=False)
            if _serving_text(r):
                out.print(f"#{r.id} {_serving_text(r)}", highlight=False, soft_wrap=True)
    if not found and not fronts:
        raise PerftuneError("no best config stored" + (f" for workload {workload}" if workload else "")
                            + "".join(f", {k} {v}" for k, v in (("framework", framework),
                                      ("device", device), ("objective", objective)) if v))  # fmt: skip


def _print_stored_front(f: dict[str, Any]) -> None:
    """A stored Pareto front: its points, the picked one marked, and the picked config."""
    table = _table(f"Pareto front #{f['id']}: {f['workload']} / {f['framework']} / {f['device_kind']} / {f['objective']}",
                   "", "point", *[f"{n} ({u})" for n, u in zip(f["names"], f["units"], strict=True)], whole=("", "point"))  # fmt: skip
    for i, p in enumerate(f["points"]):
        label = "default" if p.get("label") == "baseline" else f"trial {p.get('trial_number')}"
        table.add_row("→" if i == f["picked_index"] else "", label, *[_fmt(v) for v in p["values"]])
    _print_table(table)
    out.print(f"#{f['id']} picked config: {_config_text(f['picked']['config'])}", soft_wrap=True, highlight=False)


def _objective_text(key: str) -> str:
    """A stored objective key in a table cell: the name, its limits on lines of their own."""
    name, _, limits = key.partition("@")
    return "\n".join([name, *limits.split(",")]) if limits else name


def _serving_text(r) -> str | None:
    """A stored inference best's latency distribution and quality, as measured in its
    confirmation: ``latency p50 1.1 / p90 1.9 / p99 2.7 / max 4 ms, quality 0.96 (fp32 model 0.96)``."""
    m = r.metrics or {}
    if not isinstance(m.get("p99_ms"), int | float):
        return None
    lat = " / ".join(f"{k} {m[k + '_ms']:.3g}" for k in ("p50", "p90", "p99", "max") if k + "_ms" in m)
    quality = (f", quality {m['quality']:.4g} (fp32 model {m['quality_reference']:.4g})"
               if isinstance(m.get("quality"), int | float) else "")  # fmt: skip
    return f"latency {lat} ms{quality}"


def _efficiency(r) -> list[tuple[str, str]]:
    """A stored best's MFU and energy per sample, those measured: ``[("MFU", "41.2%")]``."""
    m = r.metrics or {}
    return [(col, _metric_text(m, key)) for col, key in (("MFU", "mfu"), ("J/sample", "joules_per_sample"))
            if isinstance(m.get(key), float)]  # fmt: skip


def _value_text(r) -> str:
    """A stored best's value with its unit and spread: ``12.35 s ±3%``."""
    return _fmt(r.value, r.unit) + (f" ±{r.spread * 100:.0f}%" if r.spread is not None else "")


def _best_table(found: list, workload: str, wide: bool) -> Table:
    """One workload's stored bests, best first; ``wide``: with MFU and energy columns where
    some row has them."""
    measured = [dict(_efficiency(r)) for r in found]
    extra = [col for col in ("MFU", "J/sample") if wide and any(col in m for m in measured)]
    table = _table(f"Best configs for {workload}", "id", "framework", "device", "objective", "value",
                   "speedup", *extra, whole=("id", "framework", "objective"))  # fmt: skip
    for r, m in zip(found, measured, strict=True):
        table.add_row(str(r.id), r.framework, f"{r.device_kind} ({r.device_name})", _objective_text(r.objective), _value_text(r),
                      _speedup_text(r.speedup, r.speedup_interval), *(m.get(c, "-") for c in extra))  # fmt: skip
    return table


def _every_best_table(found: list) -> Table:
    """Every stored best: workload (framework), device, objective, value, speedup, when stored."""
    table = _table("Stored best configs", "workload / framework", "device", "objective", "value", "speedup",
                   "stored (UTC)", whole=("objective", "value", "speedup", "stored (UTC)"))  # fmt: skip
    for r in found:
        table.add_row(f"{r.workload}\n{r.framework}", f"{r.device_kind} ({r.device_name})", _objective_text(r.objective),
                      _value_text(r), _speedup_text(r.speedup, r.speedup_interval),
                      r.updated_at.strftime("%Y-%m-%d %H:%M"))  # fmt: skip
    return table


@app.command("run")
def run_command(
    command: Annotated[list[str], typer.Argument(help="After --: the command, its {knob} fields filled from the config (as in perftune sweep -- CMD).", show_default=False)],
    name: Annotated[str, typer.Option(help="The workload's name (as given to perftune sweep --name).")],
    framework: Annotated[str, _choice("--framework", BACKENDS, "The stored best's framework.")] = "torch",
    device: Annotated[str, typer.Option(help="Device kind of the stored best.")] = "cpu",
    objective: Annotated[str, _choice("--objective", OBJECTIVES, "The stored best's objective.")] = "time-to-target",
    target: Annotated[float | None, typer.Option(help="The metric's target [default: the stored one].")] = None,
    mode: Annotated[str, _choice("--mode", MODES, "max if a higher metric is better, else min.")] = "max",
    defaults: Annotated[bool, typer.Option("--defaults", help="Run with the defaults, not the stored best.")] = False,
    eval_interval: Annotated[float, typer.Option(help="Training seconds between due evaluations.")] = 0.25,
    space: Annotated[str | None, typer.Option(help="The sweep's --space file (its defaults, with --defaults or when nothing is stored).")] = None,
    home: Home = None, db: Db = None, json_out: Json = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="The command's own output into the workspace's logs/run-NAME.log, not on the terminal: only the result and errors.")] = False,
    verbose: Verbose = False,
) -> None:
    """Run a command with the stored best config filled in, measured as a sweep's trial."""
    from perftune.names import safe_filename
    from perftune.service import run_with_best
    from perftune.sweep import check_number

    check_number("--eval-interval", eval_interval, 0, 86_400, "positive seconds")
    ws = _ws(home, db=db)
    _logging(verbose)
    log = None
    if quiet:
        ws.prepare()
        log = str(ws.logs / f"run-{safe_filename(name)}.log")
    with _stdout_to_stderr() if json_out and not quiet else contextlib.nullcontext():
        result = run_with_best(ws, name, command, framework=framework, device=device,
                               objective=objective, target=target, mode=mode, defaults=defaults,
                               space=space, eval_interval_s=eval_interval, log_path=log)  # fmt: skip
    m = result["metrics"]
    if json_out:
        print(json.dumps(result, indent=2, default=str))
    else:
        out.print(f"{result['source']} config: {_config_text(result['config'])}", soft_wrap=True)
        reached = "reached" if m.get("reached_target") else "did not reach"
        out.print(f"{reached} the target {_fmt(result['target'])} (metric {_fmt(m.get('final_metric'))}) "
                  f"after {_fmt(m.get('train_time_s'))} s of training, {m.get('steps')} steps", soft_wrap=True)  # fmt: skip
    if result["target"] is not None and not m.get("reached_target"):
        raise PerftuneError(f"the command did not reach the target {result['target']}")


@contextlib.contextmanager
def _stdout_to_stderr():
    """While in it, what child processes write on stdout (file descriptor 1) goes to stderr:
    with ``--json`` stdout carries the JSON only."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@app.command()
def sync(home: Home = None, tracking_uri: Tracking = None, storage: Storage = None, db: Db = None,
         json_out: Json = False) -> None:  # fmt: skip
    """Deliver the tracking events spooled while the MLflow server was down, now (and give the
    sweeps' Optuna study and perftune database, named by --storage and --db, their run ids)."""
    from perftune.service import sync_tracking

    result = sync_tracking(_ws(home, storage, tracking_uri, db))
    if json_out:
        print(json.dumps(result, indent=2))
        return
    out.print(f"delivered {result['delivered']} tracking events to {result['tracking_uri']}; "
              f"{result['pending']} left in {result['spool']}", soft_wrap=True, highlight=False)  # fmt: skip
    if result["other_uris"]:
        out.print(f"{result['other_uris']} more are for another tracking server (name it with --tracking-uri)")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 1,
    allowed_hosts: Annotated[str | None, typer.Option(help="Host headers to accept besides localhost and private addresses (MLflow's --allowed-hosts).")] = None,
    home: Home = None, tracking_uri: Tracking = None,
) -> None:
    """Start the MLflow UI on perftune's tracking store."""
    from perftune.service import ui_command, ui_environ, ui_links

    ws = _ws(home, tracking_uri=tracking_uri)
    cmd = ui_command(ws, host=host, port=port, workers=workers, allowed_hosts=allowed_hosts)
    base = f"http://{host}:{port}"
    err.print(f"MLflow UI on {base}  (Ctrl-C to stop); each sweep's trials, best first:", highlight=False)
    for workload, url in ui_links(ws, base):
        err.print(f"  {workload}: {url}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    os.execve(cmd[0], cmd, ui_environ(ws))


@db_app.command("upgrade")
def db_upgrade(home: Home = None, db: Db = None) -> None:
    """Apply perftune's database migrations (Alembic)."""
    from perftune.service import db_upgrade as upgrade
    from perftune.storage import redact_url

    ws = _ws(home, db=db)
    rev = upgrade(ws)
    out.print(f"{redact_url(ws.db)} at revision {rev}")


def _click_errors():
    """Click's exception classes: typer's vendored click (typer >= 0.2x) and, if installed, click."""
    usage, exits, aborts = [], [typer.Exit], [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        usage += [mod.UsageError] if hasattr(mod, "UsageError") else []
        exits += [mod.Exit] if hasattr(mod, "Exit") else []
        aborts += [mod.Abort] if hasattr(mod, "Abort") else []
    return tuple(usage), tuple(exits), tuple(aborts)


def _error(message: object) -> None:
    """Print an error message on stderr as one line, every URL in it redacted: what an
    exception says may quote a database or tracking URL with its password."""
    from perftune.storage import redact_text

    err.print(redact_text(message), markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    usage_errors, exits, aborts = _click_errors()
    cmd = typer.main.get_command(app)
    try:
        _logging()  # PERFTUNE_LOG_LEVEL (a command's -v lowers it to debug)
        rv = cmd.main(args=argv, prog_name="perftune", standalone_mode=False)
        code = int(rv or 0) if isinstance(rv, int) else 0
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130), returned here
            err.print("perftune: interrupted")
        return code
    except exits as exc:
        code = int(getattr(exc, "exit_code", 0) or 0)
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130)
            err.print("perftune: interrupted")
        return code
    except usage_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `perftune`: the help, as click does
            err.print(exc.format_message(), highlight=False)
            return 2
        msg = " ".join(exc.format_message().split())
        _error(f"perftune: error: {msg}")
        return 2
    except (*aborts, KeyboardInterrupt):
        err.print("perftune: interrupted")
        return 130
    except PerftuneError as exc:
        _error(f"perftune: error: {exc}")
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if type(exc).__name__ == "StoreError" or type(exc).__module__.startswith("perftune.storage"):
            _error(f"perftune: error: {exc}")
            return 1
        if os.environ.get("PERFTUNE_DEBUG"):
            raise
        _error(f"perftune: internal error: {type(exc).__name__}: {exc} (set PERFTUNE_DEBUG=1 for the traceback)")
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
