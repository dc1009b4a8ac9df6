"""The trial interface: what a training loop sees of perftune (stdlib only until used).

:class:`Trial` is the one interface between perftune and training code: the user's own
function (made tunable with :func:`trainable`), a script perftune launches
(:meth:`Trial.connect`), a tuned config used outside a sweep (:meth:`Trial.from_best`), and
perftune's built-in loop all measure through it.
"""

from perftune.trial._kit import Kit
from perftune.trial._meter import Plan, StopTrial
from perftune.trial.api import Trainable, Trial, current_trial, trainable

__all__ = ["Kit", "Plan", "StopTrial", "Trainable", "Trial", "current_trial", "trainable"]
