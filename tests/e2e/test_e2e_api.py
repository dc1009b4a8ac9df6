"""The HTTP API for real: ``perftune serve`` in a subprocess on a free port, a sweep submitted
with the token, ``perftune worker --queue --once`` running it (real trials of the no-op
workload), then the API shows it completed with its best config; a queued sweep is cancelled.
On PostgreSQL too, with a password in every URL, which must show up nowhere."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, pg_schemas, run_cli, run_json

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

TOKEN = "e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, flags: list[str], allowed: str, tmp_path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        env = {**os.environ, "PERFTUNE_API_TOKEN": TOKEN, "PERFTUNE_NO_PROGRESS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "perftune.cli", "serve", "--port", str(self.port),
                                      "--allow-dir", allowed, *flags], cwd=ROOT, env=env,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.time() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.time() < deadline, self.log.read_text()
            time.sleep(0.3)

    def get(self, path: str, **kw):
        return httpx.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, **kw):
        return httpx.post(self.base + path, timeout=30, **kw)

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(30)
        return self.log.read_text()


def _serve_submit_work(tmp_path, flags: list[str]) -> tuple[Server, dict, str]:
    allowed = tmp_path / "workloads"
    allowed.mkdir()
    shutil.copy(ROOT / "benchmarks" / "noop_workload.py", allowed / "noop.py")
    srv = Server(flags, str(allowed), tmp_path)
    try:
        sweep = {"workload": f"{allowed}/noop.py:make_workload", "trials": 2, "seed": 0,
                 "confirm_top": 1, "confirm_repeats": 1}  # fmt: skip
        assert srv.post("/v1/sweeps", json=sweep).status_code == 401
        first = srv.post("/v1/sweeps", json=sweep, headers=AUTH)
        assert first.status_code == 201, first.text
        sid = first.json()["id"]
        other = srv.post("/v1/sweeps", json={"workload": "mlp-digits"}, headers=AUTH).json()
        cancelled = srv.post(f"/v1/sweeps/{other['id']}/cancel", headers=AUTH).json()
        assert cancelled["state"] == "cancelled"
        assert srv.post(f"/v1/sweeps/{other['id']}/cancel", headers=AUTH).status_code == 409
        worker = run_json("worker", "--queue", "--once", *flags, timeout=300)
        assert worker["sweeps"] == [{"id": sid, "state": "completed", "best_config_id": worker["sweeps"][0]["best_config_id"],
                                     "trials": worker["sweeps"][0]["trials"]}]  # fmt: skip
        done = srv.get(f"/v1/sweeps/{sid}").json()
        assert done["state"] == "completed" and done["trials_done"] == done["trials_total"] == 2
        assert done["best_config_id"] is not None and done["mlflow"]["run_id"] == done["mlflow_run_id"]
        assert done["workload"] == "noop" and done["device_kind"] == "cpu" and done["error"] is None
        best = srv.get("/v1/best-configs", params={"workload": "noop"}).json()
        assert [b["id"] for b in best] == [done["best_config_id"]] and best[0]["sweep_id"] == sid
        assert srv.get(f"/v1/sweeps/{other['id']}").json()["state"] == "cancelled"  # never ran
        assert [d["kind"] for d in srv.get("/v1/devices").json()] == ["cpu"]
        return srv, done, srv.get("/healthz").text
    except BaseException:
        print(srv.stop())
        raise


def test_serve_submit_worker_query(tmp_path):
    srv, done, _ = _serve_submit_work(tmp_path, ["--home", str(tmp_path / "ws")])
    log = srv.stop()
    assert "POST /v1/sweeps HTTP/1.1\" 201" in log and "writes need the bearer token" in log


@pytest.mark.postgres
def test_on_postgresql_no_password_anywhere(tmp_path):
    """The store and the Optuna study on PostgreSQL through URLs with a password (trust auth
    accepts it, so the server and the worker really connect with it); the queued sweep's
    workload file is deleted before a worker claims it, so it fails at once (a real sweep runs
    in the test above): the password shows up in no response, no log and no error."""
    with pg_schemas("perftune_api_e2e") as urls:
        secret = {k: u.replace("postgres@", "postgres:s3cret@") for k, u in urls.items()}
        flags = ["--home", str(tmp_path / "ws"), "--storage", secret["optuna"],
                 "--tracking-uri", secret["mlflow"], "--db", secret["store"]]  # fmt: skip
        allowed = tmp_path / "workloads"
        allowed.mkdir()
        (allowed / "gone.py").write_text("def make_workload(): ...\n")
        srv = Server(flags, str(allowed), tmp_path)
        texts: list[str] = []
        try:
            sweep = srv.post("/v1/sweeps", headers=AUTH, json={"workload": f"{allowed}/gone.py:make_workload"})
            assert sweep.status_code == 201, sweep.text
            (allowed / "gone.py").unlink()
            other = srv.post("/v1/sweeps", headers=AUTH, json={"workload": "mlp-digits"}).json()
            texts += [sweep.text, srv.post(f"/v1/sweeps/{other['id']}/cancel", headers=AUTH).text]
            worker = run_cli("worker", "--queue", "--once", *flags, timeout=120)
            assert worker.returncode == 0, worker.stderr
            texts += [worker.stdout, worker.stderr]
            failed = srv.get(f"/v1/sweeps/{sweep.json()['id']}")
            assert failed.json()["state"] == "failed" and "file not found" in failed.json()["error"]
            health = srv.get("/healthz")
            assert health.json()["status"] == "ok" and health.text.count("***") == 3  # db, storage, tracking
            texts += [failed.text, health.text, srv.get("/v1/sweeps").text, srv.get("/v1/sweeps/99").text,
                      srv.get("/v1/best-configs", params={"workload": "noop"}).text]  # fmt: skip
        finally:
            texts.append(srv.stop())
        assert "claimed" in worker.stderr and "POST /v1/sweeps HTTP/1.1\" 201" in texts[-1]
        for text in texts:
            assert "s3cret" not in text


def _stream_post(port: int, headers: dict[str, str], total: int, *, chunk: int = 2**16,
                 timeout: float = 30) -> tuple[int, int]:  # fmt: skip
    """POST /v1/sweeps with a chunked body of ``total`` bytes, sent only while the server has
    not answered. Returns (the status code, the body bytes sent before the answer came)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
                                                "Transfer-Encoding": "chunked", **headers}.items())  # fmt: skip
    piece = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
    sent, pending, deadline = 0, b"", time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST /v1/sweeps HTTP/1.1\r\n{head}\r\n".encode())
        sock.setblocking(False)
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total or pending else [], [], 1)
            if readable:
                break
            if writable:
                if not pending:
                    sent += chunk
                    pending = piece + (b"0\r\n\r\n" if sent >= total else b"")
                pending = pending[sock.send(pending):]
        sock.setblocking(True)
        sock.settimeout(max(deadline - time.monotonic(), 1))
        answer = b""
        while b"\r\n" not in answer:
            answer += sock.recv(4096) or b"\r\n"
    return int(answer.split()[1]), sent


def test_big_bodies_are_refused_before_they_are_read(tmp_path):
    """50 MB streamed (chunked, no Content-Length) at the real server: without the token it
    answers 401 from the headers, with it 413 once past the 1 MiB cap; either way long before
    the body is all sent, and the server's memory stays where it was (it read 400 MB before a
    401, +0.9 GB)."""
    psutil = pytest.importorskip("psutil")
    allowed = tmp_path / "workloads"
    allowed.mkdir()
    srv = Server(["--home", str(tmp_path / "ws")], str(allowed), tmp_path)
    try:
        server = psutil.Process(srv.proc.pid)
        assert srv.post("/v1/sweeps", json={"workload": "mlp-digits"}, headers=AUTH).status_code == 201
        before = server.memory_info().rss
        total = 50 * 2**20
        for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 401), (AUTH, 413)):
            got, sent = _stream_post(srv.port, headers, total)
            assert got == status, (headers, got, sent)
            assert sent < total // 4, (headers, sent)  # answered, not read to the end
        grown = server.memory_info().rss - before
        assert grown < 30 * 2**20, f"server RSS grew by {grown / 2**20:.0f} MiB"
        assert [s["state"] for s in srv.get("/v1/sweeps").json()] == ["queued"]  # nothing more
    finally:
        log = srv.stop()
    assert "Traceback" not in log, log
