"""A sweep: one Optuna study per (workload, framework, device, objective), run as phases over a
small shared state (:class:`~perftune.sweep.context.SweepContext`).

:func:`run_sweep` (:mod:`.run`) reads top to bottom: prepare (:mod:`.context`: check every
input, open the databases), open the study (:mod:`.study`: resume it, bound the batch size,
enqueue the baseline), search (:mod:`.search`, with helper workers from :mod:`.workers`),
confirm (:mod:`.confirm`: re-measure the top candidates and the baseline), store the confirmed
best and report (:mod:`.report`). :mod:`.config` is the request and its checks, :mod:`.mfu`
the achieved FLOP/s; Optuna's storage, samplers and pruners are :mod:`perftune._optuna`.
"""

from perftune._optuna import PRUNERS, SAMPLERS
from perftune.errors import PerftuneError
from perftune.sweep.config import LIMITS, ProgressFn, SweepConfig, check_number
from perftune.sweep.confirm import Measured
from perftune.sweep.context import SweepContext
from perftune.sweep.report import SweepReport, unread_knobs_warning
from perftune.sweep.run import run_sweep
from perftune.sweep.workers import run_worker

__all__ = ["LIMITS", "PRUNERS", "SAMPLERS", "Measured", "PerftuneError", "ProgressFn", "SweepConfig",
           "SweepContext", "SweepReport", "check_number", "run_sweep", "run_worker",
           "unread_knobs_warning"]  # fmt: skip
