"""The search-policy interface: a policy yields its stages, :func:`run_stages` runs them in order,
builds each only once the one before is done, and stops at a cancel."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import perftune.sweep.search as search
from perftune.sweep.policy import SearchPolicy, Stage, run_stages


class TwoStages(SearchPolicy):
    """Stage 2 is built from what stage 1 left in its study (as the factored search's is)."""

    name = "two"

    def __init__(self) -> None:
        self.built: list[str] = []

    def stages(self, ctx, study):
        first = SimpleNamespace(cfg=SimpleNamespace(trials=2), cancelled=False, label="first")
        self.built.append("first")
        yield Stage(first, {"ran": []})
        self.built.append("second")
        yield Stage(SimpleNamespace(cfg=SimpleNamespace(trials=3), cancelled=False, label="second"), study)


@pytest.fixture
def ran(monkeypatch):
    """``run_trials`` recorded, not run: (stage label, trials); a stage labelled in ``cancel``
    is cancelled while it runs; ``patience`` says which stage stops early."""
    calls: list[tuple[str, int]] = []
    rules = {"cancel": set(), "patience": set()}

    def fake(ctx, study, deadline):
        calls.append((ctx.label, ctx.cfg.trials))
        ctx.cancelled = ctx.label in rules["cancel"]
        return {"reason": "patience", "after_trials": ctx.cfg.trials} if ctx.label in rules["patience"] else None

    monkeypatch.setattr(search, "run_trials", fake)
    return calls, rules


def test_stages_run_in_order_each_built_after_the_one_before(ran):
    calls, rules = ran
    policy, ctx = TwoStages(), SimpleNamespace(cancelled=False)
    rules["patience"].add("first")
    stopped = run_stages(policy, ctx, "study", deadline=None)
    assert calls == [("first", 2), ("second", 3)] and policy.built == ["first", "second"]
    assert stopped == {"reason": "patience", "after_trials": 2} and not ctx.cancelled


def test_a_cancel_in_a_stage_builds_and_runs_no_later_stage(ran):
    calls, rules = ran
    policy, ctx = TwoStages(), SimpleNamespace(cancelled=False)
    rules["cancel"].add("first")
    assert run_stages(policy, ctx, "study", deadline=None) is None
    assert calls == [("first", 2)] and policy.built == ["first"] and ctx.cancelled


def test_a_policy_must_say_its_stages():
    class Nothing(SearchPolicy):
        pass

    with pytest.raises(TypeError, match="stages"):
        Nothing()
