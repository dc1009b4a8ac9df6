"""``perftune worker --queue`` in-process (perftune.service.run_queue) against a fake executor and
a recording tracker: queued sweeps run on their own store rows, progress lands in the row, a
cancel stops the sweep between trials (no confirmation, MLflow run KILLED), a failing sweep
is marked failed and the loop goes on, Ctrl-C marks the row interrupted."""

from __future__ import annotations

import pytest
from test_tuner_sweep_fake import FakeExecutor, space  # noqa: F401 - the fixture

from perftune import service
from perftune.settings import Workspace
from perftune.storage import open_store
from perftune.tracking import NullTracker


class RecordingTracker(NullTracker):
    def __init__(self) -> None:
        self.ended: list[str] = []
        self.experiment_id = "3"

    def start_sweep(self, experiment, run_name, params, tags):
        self.params, self.tags = dict(params), dict(tags)
        return "run-1"

    def end_sweep(self, status="FINISHED"):
        self.ended.append(status)


class CancellingExecutor(FakeExecutor):
    """Cancels the sweep (as ``POST /v1/sweeps/ID/cancel`` would) during its 3rd trial."""

    def __init__(self, db: str, sweep_id: int) -> None:
        super().__init__()
        self.db, self.sweep_id = db, sweep_id

    def run(self, request, on_report=None):
        if len(self.requests) == 2:
            with open_store(self.db) as s:
                s.cancel_sweep(self.sweep_id)
        return super().run(request, on_report)


class InterruptingExecutor(FakeExecutor):
    def run(self, request, on_report=None):
        raise KeyboardInterrupt


def _submit(ws: Workspace, space: str, **kw) -> int:  # noqa: F811
    body = {"workload": "mlp-digits", "space": space, "sampler": "grid", "trials": 5,
            "confirm_top": 1, "confirm_repeats": 1, **kw}  # fmt: skip
    return service.submit_sweep(ws, body, allow_dirs=[str(__import__("os").path.dirname(space))])["id"]


def test_queue_runs_sweeps_on_their_rows(tmp_path, space):  # noqa: F811
    ws = Workspace.resolve(tmp_path / "ws")
    with open_store(ws.db, create=True) as s:  # a workload file deleted after its submission
        doomed = s.queue_sweep({"workload": f"{tmp_path}/gone.py:make_workload"}, objective="time-to-target")
    first = _submit(ws, space)
    ex, tracker = FakeExecutor(), RecordingTracker()
    logged: list[str] = []
    result = service.run_queue(ws, idle_exit=0, executor=ex, tracker=tracker, log=logged.append)
    assert [(r["id"], r["state"]) for r in result["sweeps"]] == [(doomed, "failed"), (first, "completed")]
    rows = {r["id"]: r for r in service.list_sweeps(ws)}
    one = rows[first]
    assert one["trials_done"] == 5 and one["best_value"] is not None and one["worker"] == result["worker"]
    assert one["best_config_id"] is not None and one["study_name"] == "fake-torch-cpu-time-to-target"
    assert one["mlflow"] == {"run_id": "run-1", "experiment_id": "3",
                             "hint": "run `perftune ui` and open the experiment's runs in its \"perftune\" view "
                                     "(Views menu)"}  # fmt: skip
    assert service.best_config_by_id(ws, one["best_config_id"]).sweep_id == first
    assert "file not found" in rows[doomed]["error"] and rows[doomed]["finished_at"]
    assert len(rows) == 2  # no extra rows: each sweep ran on its queued one
    assert tracker.ended == ["FINISHED"]
    assert any(f"sweep {doomed}: failed" in line for line in logged)


def test_cancel_stops_a_running_sweep_between_trials(tmp_path, space):  # noqa: F811
    ws = Workspace.resolve(tmp_path / "ws")
    sid = _submit(ws, space, trials=5, confirm_top=2, confirm_repeats=2)
    ex, tracker = CancellingExecutor(ws.db, sid), RecordingTracker()
    result = service.run_queue(ws, max_sweeps=1, idle_exit=0, executor=ex, tracker=tracker)
    assert result["sweeps"][0]["state"] == "cancelled"
    row = service.get_sweep(ws, sid)
    assert row["state"] == "cancelled" and row["finished_at"] and row["cancel_requested"]
    assert row["trials_done"] == 3 and row["best_config_id"] is None  # the 3rd trial finished
    assert len(ex.requests) == 3  # no 4th trial, no confirmation runs
    assert tracker.ended == ["KILLED"]


def test_interrupt_marks_the_row_and_ends_the_loop(tmp_path, space):  # noqa: F811
    ws = Workspace.resolve(tmp_path / "ws")
    sid = _submit(ws, space)
    nxt = _submit(ws, space, study="next")
    with pytest.raises(KeyboardInterrupt):
        service.run_queue(ws, idle_exit=0, executor=InterruptingExecutor(), tracker=RecordingTracker())
    assert service.get_sweep(ws, sid)["state"] == "interrupted"
    assert service.get_sweep(ws, nxt)["state"] == "queued"  # left for the next worker


def test_a_sweep_whose_queue_worker_died_is_queued_again_and_resumed(tmp_path, space):  # noqa: F811
    """A queue worker SIGKILLed mid-sweep leaves its row ``running``: the next queue worker on
    the machine sees that the process is gone, queues the sweep again and runs it to the end
    (a live worker's sweep, or another machine's, is left alone)."""
    import socket
    import subprocess
    import sys

    ws = Workspace.resolve(tmp_path / "ws")
    dead, alive = _submit(ws, space), _submit(ws, space)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with open_store(ws.db) as s:
        assert s.claim_sweep(f"{socket.gethostname()}:{gone.pid}")["id"] == dead
        assert s.claim_sweep(f"{socket.gethostname()}:1")["id"] == alive  # pid 1 lives
    logged: list[str] = []
    result = service.run_queue(ws, idle_exit=0, executor=FakeExecutor(), tracker=RecordingTracker(),
                               log=logged.append)  # fmt: skip
    assert [(r["id"], r["state"]) for r in result["sweeps"]] == [(dead, "completed")]
    assert f"sweep {dead}: its worker died; queued again" in logged
    rows = {r["id"]: r for r in service.list_sweeps(ws)}
    assert rows[dead]["state"] == "completed" and rows[dead]["trials_done"] == 5
    assert rows[alive]["state"] == "running"


def test_a_queued_factored_sweep_runs_both_stages(tmp_path):
    """``search: factored`` in a submitted body (what ``POST /v1/sweeps`` passes on) reaches the
    sweep: the queue worker runs stage 1's throughput trials, then stage 2's."""
    from test_sweep_factored import TwoFactors

    from perftune.sweep.factored import split

    path = tmp_path / "space.yaml"
    path.write_text("extends: none\nversion: 1\nparams:\n"
                    "  batch_size: {type: categorical, choices: [16, 32, 64, 128], default: 32}\n"
                    "  learning_rate: {type: float, low: 1.0e-4, high: 0.1, log: true, default: 1.0e-3}\n"
                    "  optimizer: {type: categorical, choices: [sgd, adam], default: adam}\n"
                    "  num_threads: {type: int, low: 1, high: 4, default: 1}\n")  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    sid = _submit(ws, str(path), search="factored", sampler="tpe", trials=10, seed=1)
    assert service.get_sweep(ws, sid)["request"]["search"] == "factored"
    ex = TwoFactors()
    result = service.run_queue(ws, max_sweeps=1, idle_exit=0, executor=ex, tracker=RecordingTracker())
    assert [(r["id"], r["state"]) for r in result["sweeps"]] == [(sid, "completed")]
    measures = [r.measure for r in ex.requests if "-trial-" in r.log_path]
    first, second = split(10)
    assert measures == ["throughput"] * first + ["converge"] * second
    row = service.get_sweep(ws, sid)
    assert row["state"] == "completed" and row["best_config_id"] is not None
