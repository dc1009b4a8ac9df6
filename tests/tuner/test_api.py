"""The HTTP API (tuner/server.py) over a real SQLite store in tmp_path, through FastAPI's
TestClient: every endpoint, auth (401/403), 404/409/422, the allow-list for submitted files,
and password redaction (on PostgreSQL, with a password the server really accepts)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from perftune import service  # noqa: E402
from perftune.server import create_app, field_of  # noqa: E402
from perftune.settings import Workspace  # noqa: E402
from perftune.storage import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FP = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
NOOP = ROOT / "benchmarks" / "noop_workload.py"


def pg_schemas(prefix: str):
    """tests/conftest.py's helper (``from conftest import`` may find another conftest here)."""
    spec = importlib.util.spec_from_file_location("perftune_tests_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pg_schemas(prefix)


def seed(db: str) -> dict[str, int]:
    """A device, a workload, a finished sweep and its best config: real rows to query."""
    with open_store(db, create=True) as s:
        s.upsert_device(FP, framework="torch", kind="cpu", name="Test CPU", count=1,
                        memory_bytes=None, info={"cores": 2})  # fmt: skip
        s.upsert_workload("noop", framework="torch", info={})
        sid = s.start_sweep(study_name="noop-torch-cpu-time-to-target", workload="noop",
                            framework="torch", device_fingerprint=FP, objective="time-to-target",
                            settings={"trials": 4, "mlflow_experiment_id": "7"},
                            mlflow_run_id="abc123")  # fmt: skip
        rec, _ = s.save_best(workload="noop", framework="torch", device_fingerprint=FP,
                             objective="time-to-target", direction="minimize", unit="s",
                             config={"batch_size": 64}, value=0.5, spread=0.1, metrics={},
                             baseline_config={"batch_size": 32}, baseline_value=1.0, speedup=2.0,
                             mlflow_run_id="abc123", sweep_id=sid, value_interval=(0.45, 0.55),
                             speedup_interval=(1.8, 2.2))  # fmt: skip
        s.finish_sweep(sid, state="completed", n_trials=4, n_complete=4,
                       summary={"best_config_id": rec.id})  # fmt: skip
        front = s.save_front(workload="noop", framework="torch", device_fingerprint=FP,
                             objective="throughput,peak-memory", names=["throughput", "peak-memory"],
                             directions=["maximize", "minimize"], units=["samples/s", "MiB"],
                             points=[{"config": {"batch_size": 8}, "values": [100.0, 300.0]},
                                     {"config": {"batch_size": 512}, "values": [900.0, 2000.0]}],
                             mlflow_run_id="abc123", sweep_id=sid)  # fmt: skip
    return {"sweep": sid, "best": rec.id, "front": front.id}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.resolve(tmp_path / "ws")


@pytest.fixture
def allowed(tmp_path) -> Path:
    d = tmp_path / "allowed"
    d.mkdir()
    (d / "wl.py").write_text(NOOP.read_text())
    (d / "space.yaml").write_text("version: 1\nparams: {}\n")
    return d


@pytest.fixture
def ids(ws) -> dict[str, int]:
    return seed(ws.db)


@pytest.fixture
def client(ws, ids, allowed):
    with TestClient(create_app(ws, token=TOKEN, allow_dirs=[str(allowed)])) as c:
        yield c


def submit(client, headers=AUTH, **body):
    return client.post("/v1/sweeps", json={"workload": "mlp-digits", "trials": 3, **body}, headers=headers)


def field_errors(resp) -> list[tuple[str, ...]]:
    assert resp.status_code == 422, resp.text
    return [tuple(e["loc"]) for e in resp.json()["detail"]]


# -- reads --------------------------------------------------------------------------


def test_healthz_and_openapi(client, ws):
    h = client.get("/healthz")
    assert h.status_code == 200, h.text
    body = h.json()
    assert body["status"] == "ok" and body["schema"] == body["schema_head"] == "0004"
    assert body["read_only"] is False and body["db"] == ws.db
    schema = client.get("/openapi.json").json()
    assert {"/v1/best-configs", "/v1/best-configs/{best_id}", "/v1/devices", "/v1/sweeps",
            "/v1/sweeps/{sweep_id}", "/v1/sweeps/{sweep_id}/cancel", "/healthz"} <= set(schema["paths"])  # fmt: skip


def test_docs_pages_name_no_other_host(client):
    """``/docs`` and ``/redoc`` load their scripts and styles from this server (offline too)."""
    import re

    for page, assets in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})):
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert not re.findall(r"(?:https?:)?//[\w.-]+", html.text), page  # no URL with a host
        found = set(re.findall(r"/docs-assets/([\w.-]+)", html.text))
        assert assets | {"favicon.png"} == found, page
        for name in found:
            asset = client.get(f"/docs-assets/{name}")
            assert asset.status_code == 200 and len(asset.content) > 100, name
    assert "/docs" not in client.get("/openapi.json").json()["paths"]


def test_pareto_fronts_and_the_picked_point(client, ids):
    got = client.get("/v1/pareto-fronts", params={"workload": "noop", "pick": "smallest"})
    assert got.status_code == 200, got.text
    (front,) = got.json()
    assert front["id"] == ids["front"] and front["names"] == ["throughput", "peak-memory"]
    assert front["picked"]["config"] == {"batch_size": 8} and front["picked_index"] == 0
    fastest = client.get("/v1/pareto-fronts", params={"workload": "noop", "pick": "fastest"}).json()[0]
    assert fastest["picked"]["config"] == {"batch_size": 512}
    weighted = client.get("/v1/pareto-fronts", params={"workload": "noop", "weights": "throughput=1"}).json()[0]
    assert weighted["picked_index"] == 1
    bad = client.get("/v1/pareto-fronts", params={"workload": "noop", "weights": "energy=1"})
    assert bad.status_code == 422 and "--weights energy=1" in bad.text
    assert field_errors(client.get("/v1/pareto-fronts", params={"workload": "noop", "pick": "cheap"})) == [("query", "pick")]
    assert client.get("/v1/pareto-fronts", params={"workload": "nothing"}).json() == []


def test_best_configs_devices_and_finished_sweep(client, ids):
    found = client.get("/v1/best-configs", params={"workload": "noop", "device": "cpu"}).json()
    assert [r["id"] for r in found] == [ids["best"]] and found[0]["config"] == {"batch_size": 64}
    assert client.get("/v1/best-configs", params={"workload": "nothing"}).json() == []
    one = client.get(f"/v1/best-configs/{ids['best']}")
    assert one.status_code == 200 and one.json()["speedup"] == 2.0
    assert one.json()["speedup_interval"] == [1.8, 2.2] and one.json()["value_interval"] == [0.45, 0.55]
    assert client.get("/v1/best-configs/999").status_code == 404
    assert field_errors(client.get("/v1/best-configs", params={"workload": "noop", "framework": "jax"})) == [("query", "framework")]
    assert field_errors(client.get("/v1/best-configs", params={"workload": "noop", "objective": "x"})) == [("query", "objective")]
    assert field_errors(client.get("/v1/best-configs")) == [("query", "workload")]
    devs = client.get("/v1/devices").json()
    assert [(d["fingerprint"], d["kind"]) for d in devs] == [(FP, "cpu")]
    sw = client.get(f"/v1/sweeps/{ids['sweep']}").json()
    assert sw["state"] == "completed" and sw["best_config_id"] == ids["best"]
    assert sw["trials_total"] == 4 and sw["workload"] == "noop"
    assert sw["mlflow"] == {"run_id": "abc123", "experiment_id": "7", "url": None, "runs_url": None,
                            "hint": "run `perftune ui` and open the experiment's runs in its "
                                    "\"perftune\" view (Views menu)"}  # fmt: skip
    assert client.get("/v1/sweeps/424242").status_code == 404
    assert client.get("/v1/sweeps/0").status_code == 422


def test_mlflow_link_on_a_tracking_server(tmp_path, ids, ws, monkeypatch):
    http_ws = Workspace.resolve(ws.home, tracking_uri="http://mlflow.example:5000")
    with TestClient(create_app(http_ws)) as c:
        sw = c.get(f"/v1/sweeps/{ids['sweep']}").json()
    assert sw["mlflow"]["url"] == "http://mlflow.example:5000/#/experiments/7/runs/abc123"
    assert sw["mlflow"]["runs_url"] == ("http://mlflow.example:5000/#/experiments/7/runs"
                                        "?viewStateShareKey=perftune&workflowType=machine_learning")  # fmt: skip
    # What `perftune ui` on port 5000 links to: the workload's runs, in perftune's view.
    assert service.ui_links(ws, "http://127.0.0.1:5000/") == [("noop", "http://127.0.0.1:5000/#/experiments/7/runs"
                                                              "?viewStateShareKey=perftune&workflowType=machine_learning")]  # fmt: skip
    assert service.ui_links(Workspace.resolve(tmp_path / "empty"), "http://h:1") == []
    monkeypatch.setenv("PERFTUNE_MLFLOW_UI_URL", "https://ui.example/")
    with TestClient(create_app(ws)) as c:
        assert c.get(f"/v1/sweeps/{ids['sweep']}").json()["mlflow"]["url"] == (
            "https://ui.example/#/experiments/7/runs/abc123")


# -- the queue ----------------------------------------------------------------------


def test_submit_list_get_cancel(client, ws):
    r = submit(client, seed=1)
    assert r.status_code == 201, r.text
    sw = r.json()
    assert sw["state"] == "queued" and sw["workload"] == "mlp-digits" and sw["trials_total"] == 3
    assert sw["request"]["seed"] == 1 and sw["started_at"] is None and sw["submitted_at"]
    listed = client.get("/v1/sweeps").json()
    assert [s["id"] for s in listed][:1] == [sw["id"]] and len(listed) == 2  # newest first
    assert [s["id"] for s in client.get("/v1/sweeps", params={"state": "queued"}).json()] == [sw["id"]]
    assert client.get("/v1/sweeps", params={"state": "nope"}).status_code == 422
    c = client.post(f"/v1/sweeps/{sw['id']}/cancel", headers=AUTH)
    assert c.status_code == 200 and c.json()["state"] == "cancelled" and c.json()["finished_at"]
    again = client.post(f"/v1/sweeps/{sw['id']}/cancel", headers=AUTH)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert client.post("/v1/sweeps/9999/cancel", headers=AUTH).status_code == 404


def test_cancel_a_running_sweep_sets_the_flag(client, ws):
    sid = submit(client).json()["id"]
    with open_store(ws.db) as s:
        claimed = s.claim_sweep("host:1")
        assert claimed["id"] == sid and claimed["state"] == "running"
        assert s.update_progress(sid, trials_done=1, best_value=0.25) is False
    sw = client.post(f"/v1/sweeps/{sid}/cancel", headers=AUTH).json()
    assert sw["state"] == "running" and sw["cancel_requested"] is True
    assert (sw["trials_done"], sw["best_value"], sw["worker"]) == (1, 0.25, "host:1")
    with open_store(ws.db) as s:
        assert s.update_progress(sid) is True


def test_writes_need_the_token(ws, ids):
    with TestClient(create_app(ws, token=TOKEN)) as c:
        assert submit(c, headers={}).status_code == 401
        wrong = submit(c, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert submit(c, headers={"Authorization": "Basic " + TOKEN}).status_code == 401
        assert submit(c, headers={"Authorization": "Bearer tökén".encode("latin-1")}).status_code == 401
        assert c.post(f"/v1/sweeps/{ids['sweep']}/cancel").status_code == 401
        # an unauthenticated caller learns nothing about its input
        assert c.post("/v1/sweeps", json={"trials": "x"}).status_code == 401
    with TestClient(create_app(ws)) as c:  # no token configured: read-only
        r = submit(c)
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
        assert c.post(f"/v1/sweeps/{ids['sweep']}/cancel", headers=AUTH).status_code == 403
        assert c.get("/healthz").json()["read_only"] is True
        assert c.get("/v1/sweeps").status_code == 200


INVALID = [
    ({"trials": 0}, "trials"), ({"workload": "nope"}, "workload"), ({"framework": "jax"}, "framework"),
    ({"device": "quantum"}, "device"), ({"objective": "speed"}, "objective"),
    ({"sampler": "magic"}, "sampler"), ({"pruner": "x"}, "pruner"), ({"confirm_top": 0}, "confirm_top"),
    ({"seed": -1}, "seed"), ({"study": "a b"}, "study"), ({"batch_probe": "x"}, "batch_probe"),
    ({"device": "all"}, "device"), ({"workers": 4}, "workers"), ({"trials": "many"}, "trials"),
    ({"patience": 0}, "patience"), ({"warm_start": "maybe"}, "warm_start"),
    ({"workload": "cnn-digits", "framework": "mindspore", "device": "tpu"}, "device"),
    ({"workload": "gpt-tiny", "framework": "tensorflow"}, "workload"),
    ({"objective": "throughput,speed"}, "objective"), ({"objective": "time-to-target,throughput"}, "objective"),
    ({"objective": "Throughput"}, "objective"), ({"task": "inference"}, "slo_p99_ms"),
    ({"task": "inference", "slo_p99_ms": -1}, "slo_p99_ms"), ({"max_quality_drop": 0.1}, "max_quality_drop"),
    ({"task": "serving"}, "task"),
]  # fmt: skip


def test_inference_and_several_objectives_can_be_queued(client):
    r = submit(client, task="inference", slo_p99_ms=5, max_quality_drop=0.02)
    assert r.status_code == 201, r.text
    r = submit(client, objective="throughput,peak-memory")
    assert r.status_code == 201, r.text


def test_validation_errors_name_the_field(client):
    for body, field in INVALID:
        assert field_errors(submit(client, **body)) == [("body", field)], body
    # semantic checks beyond the schema: SweepConfig.validate's messages, mapped to the field
    inf = client.post("/v1/sweeps", content='{"workload": "mlp-digits", "budget_s": Infinity}',
                      headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert field_errors(inf) == [("body", "budget_s")]
    assert inf.json()["detail"][0]["msg"] == "--budget inf: must be a number of seconds > 0 and <= 604800"
    assert client.get("/v1/sweeps", params={"state": "queued"}).json() == []  # nothing queued


def test_numbers_and_device_index_are_checked_before_queueing(client):
    """Both were queued (201) and failed later in the worker: the API runs SweepConfig.validate,
    the CLI's checks, and answers 422 naming the request's field."""
    for body, field, msg in (
        ({"device": "cpu:99999999999999999999"}, "device",
         "--device cpu:99999999999999999999: the index must be an integer from 0 to 1023"),
        ({"trial_timeout": 1e308}, "trial_timeout",
         "--trial-timeout 1e+308: must be a number of seconds > 0 and <= 604800"),
        ({"budget_s": 1e308}, "budget_s", "--budget 1e+308: must be a number of seconds > 0 and <= 604800"),
        ({"timeout": 1e308}, "timeout", "--timeout 1e+308: must be a number of seconds > 0 and <= 2592000"),
    ):  # fmt: skip
        r = submit(client, **body)
        assert field_errors(r) == [("body", field)], body
        assert r.json()["detail"][0]["msg"] == msg
    assert client.get("/v1/sweeps", params={"state": "queued"}).json() == []


def test_field_of():
    assert field_of("--confirm-top 0: must be") == "confirm_top"
    assert field_of("--budget inf: must be") == "budget_s"
    assert field_of("no flag here") is None


# -- what a submitted sweep may run ---------------------------------------------------


def test_allowed_workload_and_space_files(client, allowed):
    r = submit(client, workload=f"{allowed}/wl.py:make_workload", space=str(allowed / "space.yaml"))
    assert r.status_code == 201, r.text
    req = r.json()["request"]
    assert req["workload"] == f"{os.path.realpath(allowed)}/wl.py:make_workload"
    assert req["space"] == os.path.realpath(allowed / "space.yaml")
    # `..` that stays inside is fine too (resolved first)
    assert submit(client, workload=f"{allowed}/../allowed/wl.py:make_workload").status_code == 201


def test_allow_list_cannot_be_escaped(client, allowed, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("import os\ndef make_workload():\n    os.system('touch /tmp/pwned')\n")
    (outside / "evil.yaml").write_text("version: 1\nparams: {}\n")
    (allowed / "link.py").symlink_to(outside / "evil.py")
    (allowed / "sub").symlink_to(outside, target_is_directory=True)
    cases = {
        f"{allowed}/../outside/evil.py:make_workload": "outside the allowed directories",
        f"{allowed}/link.py:make_workload": "outside the allowed directories",
        f"{allowed}/sub/evil.py:make_workload": "outside the allowed directories",
        f"{outside}/evil.py:make_workload": "outside the allowed directories",
        "os:system": "module:FUNCTION is refused",
        "perftune.workloads.torch_digits:mlp_digits": "module:FUNCTION is refused",
        f"{allowed}/wl.py:os.system": "not a function name",
        f"{allowed}/missing.py:make_workload": "file not found",
        f"{allowed}/space.yaml:make_workload": "module:FUNCTION is refused",
        f"{allowed}/wl\x00.py:make_workload": "not a valid path",
    }
    for spec, why in cases.items():
        r = submit(client, workload=spec)
        assert field_errors(r) == [("body", "workload")], spec
        assert why in r.json()["detail"][0]["msg"], (spec, r.json())
    for space in (str(outside / "evil.yaml"), f"{allowed}/../outside/evil.yaml", f"{allowed}/wl.py"):
        assert field_errors(submit(client, space=space)) == [("body", "space")], space
    with TestClient(create_app(Workspace.resolve(tmp_path / "ws"), token=TOKEN)) as bare:
        r = submit(bare, workload=f"{allowed}/wl.py:make_workload")  # no allowed directory at all
        assert field_errors(r) == [("body", "workload")] and "no allowed directory" in r.text
    assert client.get("/v1/sweeps", params={"state": "queued"}).json() == []


def test_allowed_dirs_from_the_environment(ws, ids, allowed, monkeypatch):
    monkeypatch.setenv("PERFTUNE_WORKLOAD_DIRS", f"/nonexistent{os.pathsep}{allowed}")
    with TestClient(create_app(ws, token=TOKEN)) as c:
        assert submit(c, workload=f"{allowed}/wl.py:make_workload").status_code == 201


# -- redaction, for real --------------------------------------------------------------


@pytest.mark.postgres
def test_passwords_are_redacted_on_postgresql(tmp_path):
    with pg_schemas("perftune_api") as urls:
        def secret(url):  # trust auth accepts any password: the server really connects with it
            return url.replace("postgres@", "postgres:s3cret@")

        ws = Workspace.resolve(tmp_path / "ws", storage=secret(urls["optuna"]),
                               tracking_uri=secret(urls["mlflow"]), db=secret(urls["store"]))  # fmt: skip
        assert "s3cret" in ws.db
        seed(ws.db)
        with TestClient(create_app(ws, token=TOKEN)) as c:
            texts = [c.get("/healthz"), submit(c), c.get("/v1/sweeps"), c.get("/v1/sweeps/1"),
                     c.get("/v1/best-configs", params={"workload": "noop"}), c.get("/v1/devices"),
                     c.get("/v1/sweeps/77"), c.post("/v1/sweeps/1/cancel", headers=AUTH)]  # fmt: skip
            assert [r.status_code for r in texts] == [200, 201, 200, 200, 200, 200, 404, 409]
            health = texts[0].json()
            assert health["status"] == "ok" and "***" in health["db"] and "***" in health["storage"]
            assert "***" in health["tracking_uri"]
            for r in texts:
                assert "s3cret" not in r.text
        broken = Workspace.resolve(tmp_path / "ws", db=secret(urls["store"]).replace("5432", "1"))
        with TestClient(create_app(broken)) as c:
            for r in (c.get("/healthz"), c.get("/v1/sweeps")):
                assert r.status_code == 503 and "s3cret" not in r.text and "***" in r.text


# -- the CLI counterparts -------------------------------------------------------------


def test_cli_sweeps_and_worker_flags(client, ws, ids, capsys, monkeypatch):
    import signal

    from perftune.cli import main

    monkeypatch.setattr(signal, "signal", lambda *a: None)  # `perftune worker` sets SIGTERM's

    sid = submit(client).json()["id"]
    assert main(["sweeps", "--home", str(ws.home), "--json"]) == 0
    listed = __import__("json").loads(capsys.readouterr().out)
    assert [(s["id"], s["state"]) for s in listed] == [(sid, "queued"), (ids["sweep"], "completed")]
    assert main(["sweeps", "--home", str(ws.home), "--state", "done"]) == 2
    assert "--state done: choose queued, running" in capsys.readouterr().err
    assert main(["sweeps", "--home", str(ws.home)]) == 0
    assert "queued" in capsys.readouterr().out
    for argv, msg in ((["worker"], "give exactly one"), (["worker", "--study", "s", "--queue"], "give exactly one"),
                      (["worker", "--queue", "--poll", "-1"], "--poll -1.0: must be a number of seconds >= 0"),
                      (["worker", "--queue", "--idle-exit", "inf"], "--idle-exit inf: must be"),
                      (["worker", "--queue", "--max-sweeps", "0"], "--max-sweeps 0")):  # fmt: skip
        assert main([*argv, "--home", str(ws.home)]) == 2, argv
        assert msg in capsys.readouterr().err
    # --once on a queue whose only sweep is cancelled: nothing to do, exits at once
    client.post(f"/v1/sweeps/{sid}/cancel", headers=AUTH)
    assert main(["worker", "--queue", "--once", "--home", str(ws.home), "--json"]) == 0
    assert __import__("json").loads(capsys.readouterr().out)["sweeps"] == []


# -- inputs that run away ---------------------------------------------------------------------


def test_list_limit_is_bounded_as_in_the_cli(client):
    for bad in (-5, 0, 10_001):
        assert field_errors(client.get("/v1/sweeps", params={"limit": bad})) == [("query", "limit")]
    assert client.get("/v1/sweeps", params={"limit": 10_000}).status_code == 200


MIB = 2**20  # the server's default cap on a request body


def test_no_token_is_401_before_the_body_is_looked_at(ws, ids):
    with TestClient(create_app(ws, token=TOKEN)) as c:
        malformed = c.post("/v1/sweeps", content="{not json", headers={"Content-Type": "application/json"})
        assert malformed.status_code == 401, malformed.text
        assert c.post("/v1/sweeps", content=b"x" * (MIB + 1)).status_code == 401  # over the cap too
    with TestClient(create_app(ws)) as c:  # read-only
        assert c.post("/v1/sweeps", content="{not json").status_code == 403


def test_bodies_over_the_cap_are_413(client, ids):
    padded = json.dumps({"workload": "mlp-digits"}) + " " * MIB  # valid JSON, just over 1 MiB
    declared = client.post("/v1/sweeps", content=padded, headers={**AUTH, "Content-Type": "application/json"})
    assert declared.status_code == 413 and f"{MIB} bytes" in declared.json()["detail"]
    chunked = client.post("/v1/sweeps", content=iter([padded[:MIB // 2].encode(), padded[MIB // 2:].encode()]),
                          headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert chunked.status_code == 413
    cancel = client.post(f"/v1/sweeps/{ids['sweep']}/cancel", content=b" " * (MIB + 1), headers=AUTH)
    assert cancel.status_code == 413
    assert submit(client).status_code == 201  # under the cap: as before
    assert len(client.get("/v1/sweeps").json()) == 2  # the seeded one and that one


def test_422_quotes_a_big_input_short(client):
    resp = submit(client, workload="x" * 900_000)
    assert field_errors(resp) == [("body", "workload")]
    assert len(resp.content) < 1000, resp.content[:300]
    assert resp.json()["detail"][0]["input"].startswith("'xxx")
    small = submit(client, framework="jax")  # a short input is shown as given
    assert small.json()["detail"][0]["input"] == "jax"
