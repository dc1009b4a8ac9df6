"""The tracking spool against a fake MLflow server (an in-memory client that can be switched
down, or made to lose a reply it applied): nothing blocks the caller, nothing is lost, nothing is
delivered twice, and a placeholder parent run id is replaced everywhere once the server is back."""

from __future__ import annotations

import json
import re
import time
import uuid
from types import SimpleNamespace

import pytest

import perftune.tracking as tracking
from perftune import _spool
from perftune.errors import PerftuneError
from perftune.settings import Workspace

URI = "http://127.0.0.1:9"


class FakeServer:
    """What the MLflow REST client would see: experiments and runs in memory. ``up = False``:
    every call raises what the REST client raises on a refused connection; ``lose_reply``: the
    next call of that name is applied and then fails as if the connection dropped."""

    def __init__(self) -> None:
        self.up = True
        self.lose_reply: set[str] = set()
        self.refuse: set[str] = set()
        self.experiments: dict[str, str] = {}
        self.experiment_tags: dict[str, dict[str, str]] = {}
        self.runs: dict[str, dict] = {}
        self.calls: list[str] = []

    def client(self):
        return FakeClient(self)


class FakeClient:
    def __init__(self, server: FakeServer) -> None:
        self.s = server

    def __getattr__(self, name):
        impl = getattr(self, "_" + name)

        def call(*args, **kwargs):
            from mlflow.exceptions import MlflowException, RestException

            self.s.calls.append(name)
            if not self.s.up:
                raise MlflowException(f"API request to {URI}/api/2.0/mlflow/{name} failed with exception "
                                      "HTTPConnectionPool: [Errno 111] Connection refused")  # fmt: skip
            if name in self.s.refuse:
                raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "refused"})
            out = impl(*args, **kwargs)
            if name in self.s.lose_reply:
                self.s.lose_reply.discard(name)
                raise MlflowException("API request failed with exception Connection reset by peer")
            return out

        return call

    def _get_experiment_by_name(self, name):
        eid = self.s.experiments.get(name)
        return None if eid is None else SimpleNamespace(experiment_id=eid, lifecycle_stage="active",
                                                        tags=self.s.experiment_tags[eid])  # fmt: skip

    def _create_experiment(self, name, artifact_location=None, tags=None):
        self.s.experiments[name] = eid = str(len(self.s.experiments) + 1)
        self.s.experiment_tags[eid] = dict(tags or {})
        return eid

    def _set_experiment_tag(self, experiment_id, key, value):
        self.s.experiment_tags[experiment_id][key] = value

    def _create_run(self, experiment_id, start_time=None, run_name=None, tags=None):
        run_id = uuid.uuid4().hex
        self.s.runs[run_id] = {"experiment": experiment_id, "name": run_name, "tags": dict(tags or {}),
                               "start_time": start_time,
                               "params": {}, "metrics": [], "status": "RUNNING", "artifacts": []}  # fmt: skip
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def _log_batch(self, run_id, metrics=(), params=(), tags=()):
        run = self.s.runs[run_id]
        for p in params:
            assert run["params"].get(p.key, p.value) == p.value, "MLflow refuses to change a param"
            run["params"][p.key] = p.value
        run["tags"].update({t.key: t.value for t in tags})
        run["metrics"] += [(m.key, m.value, m.timestamp, m.step) for m in metrics
                           if (m.key, m.value, m.timestamp, m.step) not in run["metrics"]]  # fmt: skip

    def _set_terminated(self, run_id, status=None, end_time=None):
        self.s.runs[run_id].update(status=status, end_time=end_time)

    def _log_artifact(self, run_id, local_path, artifact_path=None):
        with open(local_path) as f:
            self.s.runs[run_id]["artifacts"].append((artifact_path, f.read()))

    def _search_runs(self, experiment_ids, filter_string="", run_view_type=None, max_results=1):
        ref = re.fullmatch(r"tags\.perftune_ref = '(.+)'", filter_string).group(1)
        found = [rid for rid, r in self.s.runs.items() if r["tags"].get("perftune_ref") == ref]
        return [SimpleNamespace(info=SimpleNamespace(run_id=rid)) for rid in found[:max_results]]


@pytest.fixture
def server(monkeypatch):
    """The fake server every tracker in this test talks to."""
    srv = FakeServer()
    real = tracking.MlflowTracker

    class FakeMlflowTracker(real):
        def __init__(self, tracking_uri, artifact_root=None):
            self.uri, self.artifact_root, self.client = tracking_uri, artifact_root, srv.client()
            self.parent_run_id = self.experiment_id = None

    monkeypatch.setattr(tracking, "MlflowTracker", FakeMlflowTracker)
    monkeypatch.setattr(tracking, "FLUSH_S", 1.0)
    return srv


def _trial(tracker, i: int) -> float:
    t0 = time.perf_counter()
    tracker.log_trial(f"trial-{i}", {"batch_size": 32, "lr": 1e-3}, {"objective": float(i), "nan": float("nan")},
                      {"val_metric": [(0, 0.5), (1, 0.9)]}, {"phase": "search"},
                      start_time=1_000_000 * i, end_time=1_000_000 * i + 15_000)  # fmt: skip
    return time.perf_counter() - t0


def _children(srv: FakeServer, parent: str) -> list[dict]:
    return [r for r in srv.runs.values() if r["tags"].get("mlflow.parentRunId") == parent]


def test_server_down_spools_without_blocking_then_sync_delivers_everything(server, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws", tracking_uri=URI)
    server.up = False
    tr = tracking.make_tracker(ws)
    assert isinstance(tr, tracking.SpooledTracker)
    t0 = time.perf_counter()
    ref = tr.start_sweep("exp", "sweep-1", {"trials": 3}, {"study": "s"})
    assert time.perf_counter() - t0 < 1.5 and ref.startswith("local-")
    tr.save_view(tracking.runs_view(["batch_size", "lr"], "maximize"))
    slowest = max(_trial(tr, i) for i in range(30))
    assert slowest < 0.2  # an SQLite insert, whatever the server does
    path = tmp_path / "art.txt"
    path.write_text("hello")
    tr.log_artifact(str(path), "plots")
    path.unlink()  # the original is temporary: the spool keeps a copy
    tr.log_summary({"speedup": 1.5}, {"result": "stored"})
    tr.end_sweep("FINISHED")
    stats = tr.close()
    assert stats["pending"] == 35 and stats["delivered"] == 0 and stats["max_call_s"] < 1.5
    assert "35 tracking events spooled in" in stats["message"] and "perftune sync" in stats["message"]
    assert not server.runs

    with pytest.raises(PerftuneError, match="connection refused.*35 tracking events stay spooled"):
        tracking.sync_spool(ws)
    server.up = True
    result = tracking.sync_spool(ws)
    assert result["delivered"] == 35 and result["pending"] == 0 and result["refused"] == 0
    (parent_id, parent), = [(k, r) for k, r in server.runs.items() if r["name"] == "sweep-1"]
    assert parent["tags"]["perftune_ref"] == ref and parent["status"] == "FINISHED"
    assert parent["artifacts"] == [("plots", "hello")] and ("speedup", 1.5) == parent["metrics"][0][:2]
    trials = _children(server, parent_id)
    assert sorted(r["name"] for r in trials) == sorted(f"trial-{i}" for i in range(30))
    assert all(r["status"] == "FINISHED" and r["params"] == {"batch_size": "32", "lr": "0.001"}
               for r in trials)  # fmt: skip
    assert {m[0] for m in trials[0]["metrics"]} == {"objective", "val_metric"}  # NaN dropped
    # The trials' own times; the experiment a classic ML one, with perftune's view of its runs.
    assert all(r["end_time"] - r["start_time"] == 15_000 for r in trials)
    tags = server.experiment_tags[parent["experiment"]]
    assert tags[tracking.KIND_TAG] == tracking.KIND_ML
    assert json.loads(json.loads(tags[tracking.VIEW_TAG])["state"])["selectedColumns"] == [
        "metrics.`objective`", "params.`batch_size`", "params.`lr`"]  # fmt: skip
    assert tracking.sync_spool(ws)["delivered"] == 0  # nothing twice
    assert not list((ws.home / "tracking-spool").iterdir())  # delivered artifact copies are gone


def test_server_back_during_the_sweep(server, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws", tracking_uri=URI)
    tr = tracking.make_tracker(ws)
    run_id = tr.start_sweep("exp", "sweep-1", {}, {})
    assert run_id in server.runs  # the server answered within the start wait: the real id
    server.up = False
    for i in range(5):
        _trial(tr, i)
    time.sleep(0.3)  # the delivery thread fails and backs off
    server.up = True
    for i in range(5, 8):
        _trial(tr, i)
    tr.end_sweep("FINISHED")
    stale = server.client().create_run("1", run_name="died-earlier").info.run_id
    tr.end_run(stale, "KILLED")  # a run another sweep left RUNNING
    stats = tr.close()
    assert stats["pending"] == 0 and stats["message"] is None
    assert len(_children(server, run_id)) == 8 and server.runs[run_id]["status"] == "FINISHED"
    assert server.runs[stale]["status"] == "KILLED"


def test_a_reply_lost_after_the_server_applied_it_is_not_applied_twice(server, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws", tracking_uri=URI)
    server.lose_reply = {"create_run", "log_batch"}
    tr = tracking.make_tracker(ws)
    run_id = tr.start_sweep("exp", "sweep-1", {"a": 1}, {})
    _trial(tr, 0)
    tr.end_sweep("FINISHED")
    stats = tr.close()
    assert stats["pending"] == 0
    names = sorted(r["name"] for r in server.runs.values())
    assert names == ["sweep-1", "trial-0"], names  # looked up by its perftune_ref tag, not re-created
    real = next(k for k, r in server.runs.items() if r["name"] == "sweep-1")
    assert tr.parent_run_id == real and run_id in (real, tr.placeholder or run_id)
    (trial,) = _children(server, real)
    assert len(trial["metrics"]) == 3  # objective + 2 curve points, once each


def test_a_refused_event_is_kept_as_failed_and_the_rest_goes_on(server, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws", tracking_uri=URI)
    tr = tracking.make_tracker(ws)
    parent = tr.start_sweep("exp", "sweep-1", {}, {})
    server.refuse = {"set_terminated"}
    _trial(tr, 0)
    server_refuses_once = tr.close()
    assert server_refuses_once["refused"] == 1 and server_refuses_once["pending"] == 0
    server.refuse = set()
    with pytest.raises(PerftuneError, match="1 were refused by the server"):
        tracking.sync_spool(ws)
    assert len(_children(server, parent)) == 1


def test_a_worker_elsewhere_nests_under_a_placeholder_parent_once_it_exists(server, tmp_path):
    """The sweep's server was down when it started (placeholder parent); a worker on another
    machine (its own workspace and spool) attached to the placeholder from the study."""
    sweep_ws = Workspace.resolve(tmp_path / "a", tracking_uri=URI)
    worker_ws = Workspace.resolve(tmp_path / "b", tracking_uri=URI)
    server.up = False
    sweep = tracking.make_tracker(sweep_ws)
    ref = sweep.start_sweep("exp", "sweep-1", {}, {})
    server.up = True
    worker = tracking.make_tracker(worker_ws)
    worker.attach("exp", ref)
    with _spool.Spool(sweep_ws.home).lock():  # the sweep's spool cannot deliver yet
        _trial(worker, 0)
        assert worker.flush(0.5) is False  # its parent run does not exist yet: it waits, in order
    assert sweep.flush(2.0) and worker.flush(2.0)
    parent = next(k for k, r in server.runs.items() if r["name"] == "sweep-1")
    assert [r["name"] for r in _children(server, parent)] == ["trial-0"]
    sweep.close()
    worker.close()


def test_the_spool_is_only_for_tracking_servers(server, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")  # SQLite: written directly, as fast as before
    assert isinstance(tracking.make_tracker(ws), tracking.MlflowTracker)
    assert isinstance(tracking.make_tracker(ws, track=False), tracking.NullTracker)


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--tracking-uri", "http://127.0.0.1:notaport"], 2, "--tracking-uri http://127.0.0.1:notaport"),
    ([], 0, "delivered 0 tracking events"),
])  # fmt: skip
def test_sync_cli(args, code, needle, tmp_path, capsys, monkeypatch):
    from perftune.cli import main

    monkeypatch.delenv("PERFTUNE_TRACKING_URI", raising=False)
    assert main(["sync", "--home", str(tmp_path / "ws"), *args]) == code
    captured = capsys.readouterr()
    assert needle in captured.out + captured.err
