"""Service functions: what the CLI (and, later, the HTTP API) call. No I/O formatting here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from tuner.errors import PerftuneError, UsageError
from tuner.settings import Workspace
from tuner.sweep import ProgressFn, SweepConfig, SweepReport, run_sweep


def list_devices(frameworks: list[str] | None = None) -> list[dict[str, Any]]:
    """Devices each framework finds here (one worker per framework; nothing imported here)."""
    from tuner.backends import BACKENDS, get_backend
    from tuner.devices import Device
    from tuner.executor import ProcessExecutor

    names = frameworks or list(BACKENDS)
    for name in names:
        get_backend(name)

    def discover(name: str) -> list[dict[str, Any]]:
        try:
            with ProcessExecutor(name) as ex:
                return [Device.from_discovery(name, d).to_dict() for d in ex.devices()]
        except PerftuneError as exc:
            return [{"framework": name, "kind": None, "error": str(exc)}]

    # Each framework's worker starts (imports its framework) at the same time.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return [d for found in pool.map(discover, names) for d in found]


def sweep(cfg: SweepConfig, ws: Workspace, progress: ProgressFn | None = None) -> SweepReport:
    return run_sweep(cfg, ws, progress)


def join_sweep(study: str, ws: Workspace, progress: ProgressFn | None = None, *,
               worker_index: int = 1) -> dict[str, Any]:  # fmt: skip
    """``perftune worker``: run trials of an existing study (see :func:`tuner.sweep.run_worker`)."""
    from tuner.sweep import run_worker

    return run_worker(study, ws, progress, worker_index=worker_index)


def sweep_all_devices(cfg: SweepConfig, ws: Workspace,
                      progress: Callable[[Any], ProgressFn | None] | None = None,
                      *, executor=None) -> dict[str, Any]:  # fmt: skip
    """``--device all``: one study per device the framework finds here (a heterogeneous box
    gets one per GPU model), then the cross-device comparison of :func:`compare_devices`.
    ``progress(device)`` gives each sweep its progress callback. A device whose sweep fails is
    reported with its error; the others go on."""
    import dataclasses

    from tuner.devices import Device
    from tuner.executor import make_executor

    cfg = dataclasses.replace(cfg, device="cpu")
    cfg.validate()
    if executor is not None:
        found = [Device.from_discovery(cfg.framework, d) for d in executor.devices()]
    else:
        with make_executor(cfg.framework, isolate=cfg.isolate) as ex:
            found = [Device.from_discovery(cfg.framework, d) for d in ex.devices()]
    sweeps: list[dict[str, Any]] = []
    for dev in found:
        one = dataclasses.replace(cfg, device=dev.spec,
                                  study=f"{cfg.study}-{dev.spec.replace(':', '')}" if cfg.study else None)  # fmt: skip
        try:
            report = run_sweep(one, ws, progress(dev) if progress else None, executor=executor)
            sweeps.append({"device": dev.spec, "report": report.to_dict()})
        except PerftuneError as exc:
            sweeps.append({"device": dev.spec, "name": dev.name, "error": str(exc)})
    return compare_devices(sweeps)


def compare_devices(sweeps: list[dict[str, Any]]) -> dict[str, Any]:
    """The heterogeneous-machine view: per device, the confirmed best config and objective (and
    MFU, energy and speedup where measured), and which device wins for this workload."""
    rows, direction, unit = [], None, None
    for s in sweeps:
        if "error" in s:
            rows.append({"device": s["device"], "name": s.get("name"), "error": s["error"]})
            continue
        r = s["report"]
        direction, unit = r["direction"], r["unit"]
        best = r.get("best") or {}
        stats, metrics = best.get("stats") or {}, best.get("metrics") or {}
        rows.append({"device": s["device"], "name": r["device"]["name"], "count": r["device"]["count"],
                     "study": r["study_name"], "value": stats.get("median"), "spread": stats.get("spread"),
                     "config": best.get("config"), "speedup": r.get("speedup"),
                     "mfu": metrics.get("mfu"), "joules_per_sample": metrics.get("joules_per_sample"),
                     "throughput_sps": metrics.get("throughput_sps"),
                     "max_batch_size": (r.get("batch_probe") or {}).get("max_batch_size")})  # fmt: skip
    ranked = [r for r in rows if r.get("value") is not None]
    winner = None
    if ranked:
        pick = min if direction == "minimize" else max
        winner = pick(ranked, key=lambda r: r["value"])["device"]
    for r in rows:
        r["winner"] = r["device"] == winner
    return {"devices": rows, "winner": winner, "direction": direction, "unit": unit,
            "reports": [s["report"] for s in sweeps if "report" in s]}  # fmt: skip


def has_database(ws: Workspace) -> bool:
    """False only for an embedded (SQLite) database whose file does not exist yet."""
    return not ws.db.startswith("sqlite:///") or os.path.exists(ws.db[len("sqlite:///"):])


def _open_read_only(ws: Workspace):
    from storage import SchemaNotReadyError, StoreUnavailableError, open_store, redact_url

    if not has_database(ws):
        raise PerftuneError(f"no perftune database at {redact_url(ws.db)}: run a sweep first "
                            "(or point --home / --db at one)")  # fmt: skip
    try:
        return open_store(ws.db, create=False)
    except StoreUnavailableError as exc:
        raise UsageError(f"--db: {exc}") from None
    except SchemaNotReadyError as exc:
        raise PerftuneError(str(exc)) from None


def best_configs(ws: Workspace, workload: str, *, framework: str | None = None,
                 device: str | None = None, objective: str | None = None) -> list:  # fmt: skip
    """Stored best configs matching the filters, best first (``BestConfigRecord`` objects)."""
    if objective is not None:
        from tuner.objectives import get_objective

        get_objective(objective)
    if framework is not None:
        from tuner.backends import get_backend

        get_backend(framework)
    store = _open_read_only(ws)
    try:
        return store.get_best(workload=workload, framework=framework, device=device,
                              objective=objective)  # fmt: skip
    finally:
        store.close()


def db_upgrade(ws: Workspace) -> str | None:
    from storage import StoreError, current_revision, upgrade
    from tuner.tracking import check_database

    check_database(ws.db, "--db")
    try:
        upgrade(ws.db)
        return current_revision(ws.db)
    except StoreError as exc:
        raise UsageError(f"--db: {exc}") from None


# MLflow 3's server also starts a job runner (huey consumers for GenAI evaluation jobs), which
# perftune never submits: off, unless the environment says otherwise.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def ui_command(ws: Workspace, *, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
               allowed_hosts: str | None = None) -> list[str]:  # fmt: skip
    """The ``mlflow server`` command line serving perftune's tracking store (run it with
    :data:`UI_ENV` added to the environment). One uvicorn worker by default: the UI is for one
    person, and each worker imports MLflow (seconds) before the server answers."""
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: must be between 1 and 65535")
    if workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    if ws.tracking_uri.startswith(("http://", "https://")):
        raise UsageError(f"--tracking-uri {ws.tracking_uri}: already a tracking server; open it "
                         "in a browser instead")  # fmt: skip
    from tuner.tracking import check_tracking

    check_tracking(ws.tracking_uri)
    ws.prepare()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", ws.tracking_uri,
           "--default-artifact-root", str(ws.artifacts), "--host", host, "--port", str(port),
           "--workers", str(workers)]  # fmt: skip
    # MLflow's security middleware accepts Host headers of localhost and private addresses only.
    return cmd + (["--allowed-hosts", allowed_hosts] if allowed_hosts else [])
