"""What a sweep leaves in MLflow for the UI (a fake executor, a real local tracking store): a
classic ML experiment with perftune's saved view of the runs table, trial runs named by their
number, outcome and value, with statuses that tell failures apart, their real start and end
times, invalid configs as runs, and short tags on the parent run (the structured data in
``sweep.json``)."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
from test_tuner_sweep_fake import BAD, FakeExecutor

from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep
from perftune.tracking import KIND_ML, KIND_TAG, VIEW_TAG, MlflowTracker

TRIAL_S = 0.3


class SlowExecutor(FakeExecutor):
    """:class:`FakeExecutor` whose every run takes :data:`TRIAL_S` seconds."""

    def run(self, request, on_report=None):
        time.sleep(TRIAL_S)
        out = super().run(request, on_report)
        out.wall_s = TRIAL_S
        return out


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A grid sweep over batch sizes 16..256: 32 completes, 16/64/128 fail (timeout, crash,
    oom), 256 breaks a constraint; its experiment existed before, untagged."""
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("runs")
    space = tmp / "space.yaml"
    space.write_text(textwrap.dedent("""
        extends: none
        params:
          batch_size: {type: categorical, choices: [16, 32, 64, 128, 256], default: 32}
        constraints:
          - {expr: "batch_size <= 128", message: no huge batches}
    """).lstrip())  # fmt: skip
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    client.create_experiment("fake", artifact_location=f"file://{tmp}/art")
    cfg = SweepConfig(workload="mlp-digits", space=str(space), sampler="grid", trials=5,
                      confirm_top=1, confirm_repeats=1)  # fmt: skip
    report = run_sweep(cfg, Workspace.resolve(tmp / "ws"), executor=SlowExecutor(),
                       tracker=MlflowTracker(uri, str(tmp / "art")))  # fmt: skip
    eid = report.mlflow_experiment_id
    runs = client.search_runs([eid])
    return {"client": client, "report": report, "experiment": client.get_experiment(eid),
            "parent": next(r for r in runs if r.info.run_id == report.mlflow_run_id),
            "children": [r for r in runs if r.data.tags.get("mlflow.parentRunId") == report.mlflow_run_id]}


def test_the_experiment_opens_on_the_runs_table_in_perftunes_view(logged):
    tags = logged["experiment"].tags
    assert tags[KIND_TAG] == KIND_ML == "custom_model_development"  # tagged when perftune used it
    view = json.loads(tags[VIEW_TAG])
    assert view["name"] == "perftune" and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert state["selectedColumns"] == ["metrics.`objective`", "params.`batch_size`"]
    assert state["orderByKey"] == "metrics.`objective`" and state["orderByAsc"] is True  # seconds: less is better


def test_trial_runs_say_what_happened_when(logged):
    by_trial = {int(r.data.tags["optuna_trial_number"]): r for r in logged["children"]
                if r.data.tags["phase"] in ("search", "invalid")}  # fmt: skip
    seen = set()
    for number, run in by_trial.items():
        bs = int(run.data.params["batch_size"])
        seen.add(bs)
        name, status = run.info.run_name, run.info.status
        if bs == 256:  # rejected by the constraint before it ran
            assert (name, status) == (f"trial {number} invalid", "KILLED")
            assert run.data.tags["phase"] == "invalid"
            assert run.data.tags["perftune.invalid"] == "constraint 'batch_size <= 128: no huge batches'"
            continue
        if bs in BAD:
            assert (name, status) == (f"trial {number} failed: {BAD[bs]}", "FAILED")
        else:
            value = run.data.metrics["objective"]
            assert (name, status) == (f"trial {number} complete {value:.3g} s", "FINISHED")
        assert TRIAL_S * 1000 <= run.info.end_time - run.info.start_time < 5000  # the trial's real time
    assert seen == {16, 32, 64, 128, 256}
    confirms = [r for r in logged["children"] if r.data.tags["phase"] == "confirmation"]
    assert {r.info.run_name.rsplit(" ", 2)[0] for r in confirms} == {"confirm baseline"}  # 32 is the default
    assert all(r.info.status == "FINISHED" and "objective" in r.data.metrics for r in confirms)


def test_the_parent_run_has_short_tags_and_the_details_in_sweep_json(logged):
    import mlflow

    parent, report = logged["parent"], logged["report"]
    assert not [k for k, v in parent.data.tags.items() if v.lstrip().startswith(("{", "["))]
    assert parent.data.tags["perftune_owner"].split(" ")[1:4:2] == ["started", "pidns"]
    path = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="sweep.json",
                                               tracking_uri=logged["client"]._tracking_client.tracking_uri)  # fmt: skip
    with open(path) as f:
        sweep = json.load(f)
    assert sweep["best_config"] == report.best["config"] == {"batch_size": 32}
    assert sweep["study"] == report.study_name and sweep["unit"] == "s"
