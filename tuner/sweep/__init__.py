"""A sweep: one Optuna study per (workload, framework, device, objective), run as phases over a
small shared state (:class:`~tuner.sweep.context.SweepContext`).

:func:`run_sweep` (:mod:`.run`) reads top to bottom: prepare (:mod:`.context`: check every
input, open the databases), open the study (:mod:`.study`: resume it, bound the batch size,
enqueue the baseline), search (:mod:`.search`, with helper workers from :mod:`.workers`),
confirm (:mod:`.confirm`: re-measure the top candidates and the baseline), store the confirmed
best and report (:mod:`.report`). :mod:`.config` is the request and its checks, :mod:`.mfu`
the achieved FLOP/s; Optuna's storage, samplers and pruners are :mod:`tuner._optuna`.
"""

from tuner._optuna import PRUNERS, SAMPLERS
from tuner.errors import PerftuneError
from tuner.sweep.config import LIMITS, ProgressFn, SweepConfig, check_number
from tuner.sweep.confirm import Measured
from tuner.sweep.context import SweepContext
from tuner.sweep.report import SweepReport, unread_knobs_warning
from tuner.sweep.run import run_sweep
from tuner.sweep.workers import run_worker

__all__ = ["LIMITS", "PRUNERS", "SAMPLERS", "Measured", "PerftuneError", "ProgressFn", "SweepConfig",
           "SweepContext", "SweepReport", "check_number", "run_sweep", "run_worker",
           "unread_knobs_warning"]  # fmt: skip
