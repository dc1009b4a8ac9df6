"""Errors shared by the sweep process and the trial workers (stdlib only).

The CLI maps :class:`UsageError` to exit code 2 and every other :class:`PerftuneError` to
exit code 1, printing the message as one line. Messages name the field or resource at fault.
"""

from __future__ import annotations


class PerftuneError(Exception):
    """Base of the errors perftune reports to a user; ``str(err)`` is one line."""

    exit_code = 1


class UsageError(PerftuneError):
    """Bad input: an unknown name, a malformed file, an impossible value, an unreachable database.

    Raised before anything is written.
    """

    exit_code = 2


class NothingMeasured(UsageError):
    """A training function or script ran but gave perftune nothing to measure (no
    ``trial.step()``, no ``trial.report()``): the workload is unusable as it is, whatever the
    config, so the sweep stops at the first such trial."""


class NotFoundError(PerftuneError):
    """No such resource (a sweep or best-config id): the HTTP API answers 404."""


class ConflictError(PerftuneError):
    """The resource is not in a state that allows this (cancelling a finished sweep): 409."""


class WorkerError(PerftuneError):
    """The trial worker process could not be started or stopped answering."""


class TrialError(Exception):
    """Raised inside a trial to end it with a known cause (see :data:`FAILURE_CAUSES`)."""

    cause = "crash"


class Diverged(TrialError):
    """The training loss became NaN or infinite."""

    cause = "diverged"


class InvalidConfig(TrialError):
    """The framework cannot honour this configuration on this device."""

    cause = "invalid"


#: Every way a trial can fail, as recorded on the Optuna trial and the MLflow run.
FAILURE_CAUSES = ("oom", "crash", "timeout", "diverged", "invalid")
