"""Service functions: what the CLI (and, later, the HTTP API) call. No I/O formatting here."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from perftune.errors import PerftuneError, UsageError
from perftune.settings import Workspace
from perftune.sweep import ProgressFn, SweepConfig, SweepReport, run_sweep
from perftune.sweep.config import check_choice


def version() -> str:
    """perftune's version: the installed distribution's, else (run from a checkout that is not
    installed) the one :mod:`perftune` declares."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("perftune")
    except PackageNotFoundError:
        from perftune import __version__

        return __version__

log = logging.getLogger("perftune.service")


#: The workspace's cache of device discovery (``perftune devices``), one entry per framework.
DEVICE_CACHE = "devices.json"


def list_devices(frameworks: list[str] | None = None, *, cache_dir: str | os.PathLike | None = None,
                 refresh: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Devices each framework finds here (one worker per framework; nothing imported here).

    ``cache_dir`` (a workspace): a framework's devices are read from its :data:`DEVICE_CACHE` (an
    entry per framework and interpreter) while their key (:func:`discovery_key`: interpreter, its mtime, the framework's installed versions)
    is unchanged, else discovered and cached; ``refresh`` discovers them all again. Failed
    discoveries are not cached."""
    from pathlib import Path

    from perftune.backends import BACKENDS, get_backend
    from perftune.devices import Device
    from perftune.executor import ProcessExecutor

    names = frameworks or list(BACKENDS)
    for name in names:
        get_backend(name)
    path = Path(cache_dir) / DEVICE_CACHE if cache_dir is not None else None
    cache = _read_json(path) if path is not None and not refresh else {}
    fresh: dict[str, Any] = {}

    def discover(name: str) -> list[dict[str, Any]]:
        key = discovery_key(name) if path is not None else None
        entry = f"{name} {key['python']}" if key is not None else name  # one per interpreter
        hit = cache.get(entry)
        if key is not None and isinstance(hit, dict) and hit.get("key") == key:
            log.debug("%s devices: from %s", name, path)
            return hit["devices"]
        log.debug("%s devices: discovering (%s)", name, "no cache" if key is None else
                  "--refresh" if refresh else "not cached" if not hit else "its key changed")  # fmt: skip
        try:
            with ProcessExecutor(name) as ex:
                found = [Device.from_discovery(name, d).to_dict() for d in ex.devices()]
        except PerftuneError as exc:
            return [{"framework": name, "kind": None, "error": str(exc)}]
        if key is not None:
            fresh[entry] = {"key": key, "devices": found}
        return found

    # Each framework's worker starts (imports its framework) at the same time.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        result = [d for found in pool.map(discover, names) for d in found]
    if fresh and path is not None:
        with contextlib.suppress(OSError):  # a cache that cannot be written is no failure
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**_read_json(path), **fresh}, indent=1, default=str))
            os.replace(tmp, path)
    return result


def _read_json(path) -> dict[str, Any]:
    """A JSON object from ``path``; {} if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _distribution_of(dist_info: str, module: str) -> bool:
    """``torch-2.5.1.dist-info`` and ``tensorflow_cpu-2.18.0.dist-info`` are distributions of
    ``torch`` and ``tensorflow``; ``torchvision-...`` is not one of ``torch``."""
    dist = dist_info.split("-")[0]
    return dist == module or dist.startswith(f"{module}_")


def discovery_key(framework: str) -> dict[str, Any]:
    """What a framework's device discovery depends on, found without running or importing
    anything: the interpreter that runs it (path and mtime), the framework's installed
    distributions (``torch-2.5.1``..., from the names of their ``.dist-info`` folders), the
    ``*_VISIBLE_DEVICES`` variables and perftune's version."""
    import glob

    import perftune
    from perftune.backends import get_backend
    from perftune.executor import python_for

    python = python_for(framework)
    module = get_backend(framework).module
    if python == sys.executable:
        dirs = [p for p in sys.path if p and os.path.isdir(p)]
    else:  # a virtualenv's interpreter: its own site-packages
        root = os.path.dirname(os.path.dirname(python))
        dirs = glob.glob(os.path.join(root, "lib*", "python*", "site-packages"))
    dists = sorted({name.removesuffix(".dist-info") for d in dirs for name in os.listdir(d)
                    if name.endswith(".dist-info") and _distribution_of(name, module)})  # fmt: skip
    try:
        mtime = os.stat(python).st_mtime
    except OSError:
        mtime = None
    visible = {k: v for k, v in sorted(os.environ.items()) if k.endswith("_VISIBLE_DEVICES")}
    return {"python": python, "python_mtime": mtime, "dists": dists, "visible": visible,
            "perftune": perftune.__version__}


def sweep(cfg: SweepConfig, ws: Workspace, progress: ProgressFn | None = None) -> SweepReport:
    return run_sweep(cfg, ws, progress)


def join_sweep(study: str, ws: Workspace, progress: ProgressFn | None = None, *,
               worker_index: int = 1) -> dict[str, Any]:  # fmt: skip
    """``perftune worker``: run trials of an existing study (see :func:`perftune.sweep.run_worker`)."""
    from perftune.sweep import run_worker

    return run_worker(study, ws, progress, worker_index=worker_index)


def sweep_all_devices(cfg: SweepConfig, ws: Workspace,
                      progress: Callable[[Any], ProgressFn | None] | None = None,
                      *, executor=None) -> dict[str, Any]:  # fmt: skip
    """``--device all``: one study per device the framework finds here (a heterogeneous box
    gets one per GPU model), then the cross-device comparison of :func:`compare_devices`.
    ``progress(device)`` gives each sweep its progress callback. A device whose sweep fails is
    reported with its error; the others go on."""
    import dataclasses

    from perftune.devices import Device
    from perftune.executor import make_executor

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


def sync_tracking(ws: Workspace, *, timeout: float = 30.0) -> dict[str, Any]:
    """``perftune sync``: deliver the tracking events spooled in the workspace (while the MLflow
    server was down) to ``ws.tracking_uri`` now; see :func:`perftune.tracking.sync_spool`. Returns
    ``{"delivered", "pending", "refused", "other_uris", "spool", "tracking_uri"}``; raises
    :class:`PerftuneError` (exit 1, the spool kept as it was) if the server does not answer."""
    from perftune.tracking import sync_spool

    return sync_spool(ws, timeout=timeout)


def has_database(ws: Workspace) -> bool:
    """False only for an embedded (SQLite) database whose file does not exist yet."""
    return not ws.db.startswith("sqlite:///") or os.path.exists(ws.db[len("sqlite:///"):])


def _open_read_only(ws: Workspace):
    from perftune.storage import SchemaNotReadyError, StoreUnavailableError, open_store, redact_url

    if not has_database(ws):
        raise PerftuneError(f"no perftune database at {redact_url(ws.db)}: run a sweep first "
                            "(or point --home / --db at one)")  # fmt: skip
    try:
        return open_store(ws.db, create=False)
    except StoreUnavailableError as exc:
        raise UsageError(f"--db: {exc}") from None
    except SchemaNotReadyError as exc:
        raise PerftuneError(str(exc)) from None


def best_configs(ws: Workspace, workload: str | None, *, framework: str | None = None,
                 device: str | None = None, objective: str | None = None, store=None) -> list:  # fmt: skip
    """Stored best configs matching the filters (``workload`` None: every workload's), by
    workload, then objective, best first (``BestConfigRecord`` objects). ``store``: an open
    store to use (the API keeps one), else one is opened for the call."""
    if objective is not None:
        from perftune.objectives import get_objective

        get_objective(objective)
    if framework is not None:
        from perftune.backends import get_backend

        get_backend(framework)
    with _using(ws, store) as s:
        return s.get_best(workload=workload, framework=framework, device=device, objective=objective)


def pareto_fronts(ws: Workspace, workload: str | None, *, framework: str | None = None,
                  device: str | None = None, objective: str | None = None, pick: str | None = None,
                  weights: str | None = None, store=None) -> list[dict[str, Any]]:  # fmt: skip
    """Stored Pareto fronts (multi-objective sweeps) matching the filters, each as a dict with
    its ``points`` and ``picked``: the point ``pick`` (fastest, efficient, smallest, balanced)
    or ``weights`` (``time=1,energy=0.5``) chooses (balanced when neither is given; see
    :func:`perftune.sweep.pareto.pick`) and ``picked_index``."""
    from perftune.sweep.pareto import PICKS
    from perftune.sweep.pareto import pick as choose

    if pick is not None and pick not in PICKS:
        raise UsageError(f"--pick {pick}: choose {', '.join(PICKS)}")
    if objective is not None:
        from perftune.objectives import get_objective

        get_objective(objective)
    with _using(ws, store) as s:
        fronts = s.get_fronts(workload=workload, framework=framework, device=device, objective=objective)
    out = []
    for f in fronts:
        i = choose(f.names, f.directions, f.points, pick, weights)
        out.append({**f.to_dict(), "kind": "pareto_front", "picked_index": i, "picked": f.points[i]})
    return out


def run_with_best(ws: Workspace, name: str, command: list[str], *, framework: str = "torch",
                  device: str = "cpu", objective: str = "time-to-target", target: float | None = None,
                  mode: str = "max", defaults: bool = False, space: str | None = None,
                  eval_interval_s: float = 0.25, log_path: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``perftune run``: a launched command outside a sweep, its ``{knob}`` template filled from
    the stored best config of workload ``name`` (or the defaults), run and measured as a
    sweep's trial runs it (the script's ``perftune.Trial.connect()`` measures time to ``target``,
    default the stored one, and stops there). Returns the source, config, command and metrics.
    ``log_path``: a file for the command's output (None: this process's stdout and stderr)."""
    import math

    from perftune.backends import NullChannel, TrialRequest, get_backend
    from perftune.trial.launcher import fill, run_command, template_fields

    get_backend(framework)
    fields = template_fields(command)
    record = None
    if not defaults and has_database(ws):
        found = best_configs(ws, name, framework=framework, device=device, objective=objective)
        record = found[0] if found else None
    if record is not None:
        config = dict(record.config)
        target = target if target is not None else (record.metrics or {}).get("target")
    else:
        config = _default_config(framework, device, space)
    missing = [f for f in fields if f not in config]
    if missing:
        raise UsageError(f"command template: {{{missing[0]}}} is not in the config "
                         f"(knobs: {', '.join(sorted(config))})")  # fmt: skip
    description = {"name": name, "target": target, "mode": mode, "budget_s": math.inf,
                   "eval_interval_s": eval_interval_s}  # fmt: skip
    request = TrialRequest(workload="-", framework=framework, device=device, config=config,
                           measure="free", command=command, description=description,
                           log_path=log_path)  # fmt: skip
    from perftune.errors import TrialError
    from perftune.executor import _perftune_path

    # The script talks to this perftune: its `import perftune` finds this one, as in a sweep's trial.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_perftune_path(), os.environ.get("PYTHONPATH")) if p)
    try:
        out = run_command(request, NullChannel())
    except TrialError as exc:
        raise PerftuneError(f"the command failed ({exc.cause}): {exc}") from None
    return {"name": name, "source": "stored" if record is not None else "defaults",
            "best_config_id": record.id if record is not None else None, "config": config,
            "command": fill(command, config), "target": target, "metrics": out["metrics"]}  # fmt: skip


def _default_config(framework: str, device: str, space: str | None) -> dict[str, Any]:
    from perftune.backends._host import host_memory_bytes, usable_cores
    from perftune.search_spaces import SpaceError, load_space

    resources = {"cores": usable_cores(), "device_count": 1, "memory_gib": host_memory_bytes() / 2**30}
    try:
        return load_space(framework, device.split(":", 1)[0], resources=resources, override=space).defaults()
    except SpaceError as exc:
        raise UsageError(str(exc)) from None


#: What ``perftune best --format`` prints a config as (:func:`format_config`).
FORMATS = ("json", "yaml", "args", "env")


def format_config(config: dict[str, Any], fmt: str) -> str:
    """A config as a script or launcher takes it: ``json``, ``yaml``, ``args`` (``--knob
    value`` pairs, values as a launched command's template renders them) or ``env``
    (``PERFTUNE_KNOB=value`` lines, shell-quoted)."""
    import shlex

    from perftune.trial.launcher import render

    check_choice("--format", fmt, FORMATS)
    if fmt == "json":
        return json.dumps(config, sort_keys=True)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(config, sort_keys=True).rstrip()
    if fmt == "args":
        return " ".join(f"--{k} {shlex.quote(render(v))}" for k, v in sorted(config.items()))
    return "\n".join(f"PERFTUNE_{k.upper()}={shlex.quote(render(v))}" for k, v in sorted(config.items()))


def db_upgrade(ws: Workspace) -> str | None:
    from perftune.storage import StoreError, current_revision, upgrade
    from perftune.tracking import check_database

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
    """The ``mlflow server`` command line serving perftune's tracking store; run it in the
    environment :func:`ui_environ` gives, which names the store (a URL with its password stays
    off the command line, which every user sees). One uvicorn worker by default: the UI is for
    one person, and each worker imports MLflow (seconds) before the server answers."""
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: must be between 1 and 65535")
    if workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    if ws.tracking_uri.startswith(("http://", "https://")):
        from perftune.storage import redact_url

        raise UsageError(f"--tracking-uri {redact_url(ws.tracking_uri)}: already a tracking server; "
                         "open it in a browser instead")  # fmt: skip
    from perftune.tracking import check_tracking

    check_tracking(ws.tracking_uri)
    ws.prepare()
    cmd = [sys.executable, "-m", "mlflow", "server", "--default-artifact-root", str(ws.artifacts),
           "--host", host, "--port", str(port), "--workers", str(workers)]  # fmt: skip
    # MLflow's security middleware accepts Host headers of localhost and private addresses only.
    return cmd + (["--allowed-hosts", allowed_hosts] if allowed_hosts else [])


def ui_environ(ws: Workspace, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of :func:`ui_command`'s server: ``environ`` (default ``os.environ``)
    over :data:`UI_ENV`, and ``MLFLOW_BACKEND_STORE_URI`` naming the workspace's tracking store
    (``mlflow server --backend-store-uri`` reads it from there)."""
    return {**UI_ENV, **(os.environ if environ is None else environ),
            "MLFLOW_BACKEND_STORE_URI": ws.tracking_uri}  # fmt: skip


def ui_links(ws: Workspace, base: str, *, limit: int = 5) -> list[tuple[str, str]]:
    """What ``perftune ui`` on ``base`` (``http://HOST:PORT``) should print: each workload swept
    lately (newest first, at most ``limit``) with the address of its experiment's runs in
    perftune's saved view, in the UI's "Model training" mode (MLflow 3.17 opens an experiment
    in its GenAI view otherwise, whatever the experiment's kind tag says). Read from perftune's
    store (no MLflow import); none without a store."""
    from perftune.tracking import view_path

    links: dict[str, str] = {}
    for row in list_sweeps(ws, limit=100):
        eid = (row.get("settings") or {}).get("mlflow_experiment_id")
        if eid and row["workload"] not in links:
            links[row["workload"]] = base.rstrip("/") + view_path(eid)
    return list(links.items())[:limit]


# --------------------------------------------------------------------------- the sweep queue

#: What a submitted sweep (``POST /v1/sweeps``, :func:`submit_sweep`) may set: the
#: :class:`~perftune.sweep.SweepConfig` fields that are safe from a remote caller.
REQUEST_FIELDS = ("workload", "framework", "device", "objective", "trials", "timeout", "space",
                  "study", "seed", "sampler", "pruner", "confirm_top", "confirm_repeats",
                  "confirm_max_repeats", "trial_timeout", "budget_s", "batch_probe", "warm_start",
                  "patience", "search", "task", "slo_p99_ms", "max_quality_drop", "request_rate")  # fmt: skip


def allowed_dirs(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The directories submitted workload and search-space files must lie under: those in
    ``PERFTUNE_WORKLOAD_DIRS`` (``os.pathsep``-separated) plus ``extra``, as real paths."""
    env = [d for d in os.environ.get("PERFTUNE_WORKLOAD_DIRS", "").split(os.pathsep) if d.strip()]
    return list(dict.fromkeys(os.path.realpath(os.path.expanduser(d)) for d in (*env, *extra)))


def _allowed_file(flag: str, path: str, allow_dirs: list[str], suffixes: tuple[str, ...]) -> str:
    """The real path of ``path`` if it is an existing file with one of ``suffixes`` under one of
    ``allow_dirs`` (symlinks and ``..`` resolved first, so neither can escape)."""
    if not allow_dirs:
        raise UsageError(f"{flag} {path}: files cannot be submitted here (no allowed directory: "
                         "set PERFTUNE_WORKLOAD_DIRS or pass perftune serve --allow-dir DIR)")  # fmt: skip
    try:
        real = os.path.realpath(os.path.expanduser(path))
        inside = any(os.path.commonpath([real, d]) == d for d in allow_dirs)
        is_file = os.path.isfile(real)
    except (ValueError, OSError):  # an embedded NUL byte, a path too long
        raise UsageError(f"{flag} {path!r}: not a valid path") from None
    if not inside:
        raise UsageError(f"{flag} {path}: outside the allowed directories")
    if not real.endswith(suffixes):
        raise UsageError(f"{flag} {path}: must be a {' or '.join(suffixes)} file")
    if not is_file:
        raise UsageError(f"{flag} {path}: file not found")
    return real


def check_request(request: dict[str, Any], allow_dirs: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Validate a submitted sweep as ``perftune sweep`` would (same checks, same messages, each
    naming its ``--flag``), and refuse anything that would run code from outside the allowed
    directories: a workload is a built-in name or ``FILE.py:FUNCTION`` under one of
    ``allow_dirs`` (``package.module:FUNCTION`` is refused), a search space a YAML file there.
    Returns the config to queue, its file paths made real and absolute."""
    from perftune.workload import is_builtin

    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
        raise UsageError(f"--{unknown[0].replace('_', '-')}: not a field a submitted sweep may set")
    req = {k: v for k, v in request.items() if v is not None}
    if not isinstance(req.get("workload"), str) or not req["workload"]:
        raise UsageError("--workload: required")
    dirs = list(allow_dirs)
    spec = req["workload"]
    if not is_builtin(spec) and ":" in spec:
        target, _, attr = spec.rpartition(":")
        if not target.endswith(".py"):
            raise UsageError(f"--workload {spec}: only a built-in workload or FILE.py:FUNCTION "
                             "under an allowed directory can be submitted (module:FUNCTION is "
                             "refused)")  # fmt: skip
        if not attr.isidentifier():
            raise UsageError(f"--workload {spec}: {attr!r} is not a function name")
        req["workload"] = f"{_allowed_file('--workload', target, dirs, ('.py',))}:{attr}"
    if req.get("space") is not None:
        req["space"] = _allowed_file("--space", req["space"], dirs, (".yaml", ".yml"))
    cfg = SweepConfig(**req)
    if cfg.device == "all":
        raise UsageError("--device all: not for a submitted sweep (submit one per device)")
    cfg.validate()
    return cfg


@contextlib.contextmanager
def _using(ws: Workspace, store=None, *, create: bool = False):
    """``store`` if given (the caller owns it), else one opened (and closed) for this call."""
    if store is not None:
        yield store
        return
    opened = _open_store(ws, create=create)
    try:
        yield opened
    finally:
        opened.close()


def open_read_only(ws: Workspace):
    """The workspace's store, which must exist at the current schema (the caller closes it)."""
    return _open_read_only(ws)


def _open_store(ws: Workspace, *, create: bool = False):
    if create:
        from perftune.storage import StoreError, open_store

        try:
            return open_store(ws.db, create=True)
        except StoreError as exc:
            raise PerftuneError(f"--db: {exc}") from None
    return _open_read_only(ws)


def mlflow_link(ws: Workspace, run_id: str | None, experiment_id: str | None) -> dict[str, Any] | None:
    """Where to see a sweep's MLflow run: ``url`` (the run's page) and ``runs_url`` (its
    experiment's runs in perftune's saved view: every trial with its params and objective) when
    tracking goes to an MLflow server (or ``PERFTUNE_MLFLOW_UI_URL`` names the UI), else the
    ids and a hint."""
    from perftune.storage import redact_url
    from perftune.tracking import view_path

    if not run_id:
        return None
    base = os.environ.get("PERFTUNE_MLFLOW_UI_URL") or (
        ws.tracking_uri if ws.tracking_uri.startswith(("http://", "https://")) else None)  # fmt: skip
    link: dict[str, Any] = {"run_id": run_id, "experiment_id": experiment_id}
    if base and experiment_id:
        base = redact_url(base).rstrip("/")
        link["url"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        link["runs_url"] = base + view_path(experiment_id)
    else:
        link["hint"] = "run `perftune ui` and open the experiment's runs in its \"perftune\" view (Views menu)"
    return link


def sweep_view(ws: Workspace, row: dict[str, Any]) -> dict[str, Any]:
    """A store sweep row as the CLI and the API show it: plus ``best_config_id``, the
    ``confirmed_value`` (the confirmation's median of the winner, once confirmed; ``best_value``
    is the search's best so far), its objective's ``unit`` and the MLflow ``link``."""
    from perftune.objectives import OBJECTIVES, objective_name

    summary, settings = row.get("summary") or {}, row.get("settings") or {}
    objective = OBJECTIVES.get(objective_name(row.get("objective") or ""))
    return {**row, "best_config_id": summary.get("best_config_id"),
            "confirmed_value": ((summary.get("best") or {}).get("stats") or {}).get("median"),
            "unit": objective.unit if objective else None,
            "mlflow": mlflow_link(ws, row.get("mlflow_run_id"), settings.get("mlflow_experiment_id"))}  # fmt: skip


def submit_sweep(ws: Workspace, request: dict[str, Any], *,
                 allow_dirs: list[str] | tuple[str, ...] = (), store=None) -> dict[str, Any]:  # fmt: skip
    """Queue a sweep (checked by :func:`check_request`) for ``perftune worker --queue``."""
    import dataclasses

    cfg = check_request(request, allow_dirs)
    queued = {k: v for k, v in dataclasses.asdict(cfg).items() if k in REQUEST_FIELDS}
    with _using(ws, store, create=True) as s:
        return sweep_view(ws, s.get_sweep(s.queue_sweep(queued, objective=cfg.objective_key)))


#: The most sweeps one listing returns (``perftune sweeps --limit``, ``GET /v1/sweeps?limit=``).
MAX_LIST_LIMIT = 10_000


def list_sweeps(ws: Workspace, *, state: str | None = None, limit: int = 100,
                store=None) -> list[dict[str, Any]]:  # fmt: skip
    """Sweeps, newest first (queued ones included), optionally of one ``state``; at most
    ``limit`` of them, which must be from 1 to :data:`MAX_LIST_LIMIT` (else :class:`UsageError`
    naming ``--limit``)."""
    from perftune.storage import SWEEP_STATES as states

    if state is not None:
        check_choice("--state", state, states)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise UsageError(f"--limit {limit}: must be an integer from 1 to {MAX_LIST_LIMIT}")
    if store is None and not has_database(ws):
        return []
    with _using(ws, store) as s:
        return [sweep_view(ws, r) for r in s.list_sweeps(state=state, limit=limit)]


def get_sweep(ws: Workspace, sweep_id: int, *, store=None) -> dict[str, Any]:
    """One sweep: state, trials done of the total, best value so far, the stored best config id
    once done, timestamps, error, MLflow link. :class:`NotFoundError` if unknown."""
    return sweep_view(ws, _lookup(ws, store, lambda s: s.get_sweep(sweep_id),
                                  f"sweep {sweep_id}: no such sweep"))  # fmt: skip


def cancel_sweep(ws: Workspace, sweep_id: int, *, store=None) -> dict[str, Any]:
    """Cancel a queued sweep at once, or ask a running one to stop between trials (it ends
    ``cancelled``). :class:`NotFoundError` if unknown, :class:`ConflictError` if finished."""
    from perftune.errors import ConflictError, NotFoundError
    from perftune.storage import SweepStateError

    if store is None and not has_database(ws):
        raise NotFoundError(f"sweep {sweep_id}: no such sweep")
    with _using(ws, store) as s:
        try:
            row = s.cancel_sweep(sweep_id)
        except SweepStateError as exc:
            raise ConflictError(str(exc)) from None
    if row is None:
        raise NotFoundError(f"sweep {sweep_id}: no such sweep")
    return sweep_view(ws, row)


def best_config_by_id(ws: Workspace, best_id: int, *, store=None):
    return _lookup(ws, store, lambda s: s.get_best_by_id(best_id),
                   f"best config {best_id}: no such best config")  # fmt: skip


def _lookup(ws: Workspace, store, get: Callable[[Any], Any], missing: str) -> Any:
    """``get(store)``, or :class:`NotFoundError` (``missing``) when it finds nothing or there
    is no database yet."""
    from perftune.errors import NotFoundError

    found = None
    if store is not None or has_database(ws):
        with _using(ws, store) as s:
            found = get(s)
    if found is None:
        raise NotFoundError(missing)
    return found


def known_devices(ws: Workspace, *, store=None) -> list[dict[str, Any]]:
    """The devices sweeps have run on (recorded in the store), most recently seen first."""
    if store is None and not has_database(ws):
        return []
    with _using(ws, store) as s:
        return s.list_devices()


def health(ws: Workspace) -> dict[str, Any]:
    """Whether the store answers, its schema revision, and the configured backends (every
    URL with its password redacted)."""
    from perftune import __version__
    from perftune.storage import (
        StoreError,
        current_revision,
        head_revision,
        redact_text,
        redact_url,
    )

    out: dict[str, Any] = {"status": "ok", "version": __version__, "db": redact_url(ws.db),
                           "storage": redact_url(ws.storage),
                           "tracking_uri": redact_url(ws.tracking_uri), "schema": None,
                           "schema_head": head_revision()}  # fmt: skip
    try:
        out["schema"] = current_revision(ws.db)
    except StoreError as exc:
        out.update(status="unavailable", error=redact_text(exc))
    else:
        if out["schema"] != out["schema_head"]:
            out.update(status="unavailable", error="perftune database schema is not current: "
                       "run `perftune db upgrade`")  # fmt: skip
    return out


def prepare_server(ws: Workspace) -> str | None:
    """``perftune serve`` starts on a current store (created, or migrated, as a sweep does)."""
    _open_store(ws, create=True).close()
    from perftune.storage import current_revision

    return current_revision(ws.db)


def run_queue(ws: Workspace, *, poll: float = 2.0, max_sweeps: int | None = None,
              idle_exit: float | None = None, log: Callable[[str], None] | None = None,
              executor=None, tracker=None) -> dict[str, Any]:  # fmt: skip
    """``perftune worker --queue``: claim the oldest queued sweep, run it, then the next.

    Stops after ``max_sweeps`` sweeps, or once the queue has been empty for ``idle_exit``
    seconds (never, by default: it polls every ``poll`` seconds). A sweep that fails is marked
    ``failed`` with its one-line error and the loop goes on; Ctrl-C / SIGTERM interrupts the
    running sweep (marked ``interrupted``) and ends the loop with ``KeyboardInterrupt``."""
    import time

    from perftune._recovery import worker_id

    log = log or (lambda msg: None)
    worker = worker_id()
    store = _open_store(ws, create=True)
    done: list[dict[str, Any]] = []
    try:
        idle_since = time.monotonic()
        while max_sweeps is None or len(done) < max_sweeps:
            for sid in store.requeue_sweeps(_dead_queue_worker):
                log(f"sweep {sid}: its worker died; queued again")
            row = store.claim_sweep(worker)
            if row is None:
                if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                time.sleep(poll)
                continue
            log(f"sweep {row['id']}: claimed ({row['workload']}, {row['framework']}, "
                f"{row['device_kind']}, {row['objective']})")  # fmt: skip
            result = _run_queued(ws, store, row, executor, tracker)
            log(f"sweep {row['id']}: {result['state']}"
                + (f" ({result['error']})" if result.get("error") else "")
                + (f", best config {result['best_config_id']}" if result.get("best_config_id") else ""))  # fmt: skip
            done.append(result)
            idle_since = time.monotonic()
    finally:
        store.close()
    return {"worker": worker, "sweeps": done}


def _dead_queue_worker(row: dict[str, Any]) -> bool:
    """A queue worker on this machine that died (SIGKILL, OOM) with its sweep ``running``: the
    sweep's owner (recorded once it started) or, before that, its claimer."""
    from perftune import _recovery

    owner = (row.get("settings") or {}).get("owner")
    if isinstance(owner, dict):
        return _recovery.is_dead(owner.get("worker"), owner.get("process"))
    return _recovery.is_dead(row.get("worker"))


def _run_queued(ws: Workspace, store, row: dict[str, Any], executor=None,
                tracker=None) -> dict[str, Any]:  # fmt: skip
    from perftune.storage import StoreError, redact_text

    sid = row["id"]
    error = None
    try:
        request = {k: v for k, v in (row.get("request") or {}).items() if k in REQUEST_FIELDS}
        report = run_sweep(SweepConfig(**request), ws, None, sweep_id=sid, executor=executor,
                           tracker=tracker)  # fmt: skip
    except KeyboardInterrupt:
        _finish_if_running(store, sid, "interrupted", None)
        raise
    except (PerftuneError, StoreError) as exc:
        error = redact_text(exc)
    except Exception as exc:  # noqa: BLE001 - a bug in one sweep must not end the worker
        error = redact_text(f"internal error: {type(exc).__name__}: {exc}")
    if error is not None:
        _finish_if_running(store, sid, "failed", error, force=True)
        return {"id": sid, "state": "failed", "error": error}
    return {"id": sid, "state": "cancelled" if report.cancelled else "completed",
            "best_config_id": report.best_config_id, "trials": report.trials}  # fmt: skip


def _finish_if_running(store, sweep_id: int, state: str, error: str | None, *,
                       force: bool = False) -> None:  # fmt: skip
    """Mark a claimed sweep ``state`` unless the sweep loop already ended it (``force``: also
    over the loop's own ``failed``, to add the error)."""
    try:
        row = store.get_sweep(sweep_id)
        if row is not None and (row["state"] == "running" or (force and row["state"] == "failed")):
            store.finish_sweep(sweep_id, state=state, n_trials=None, n_complete=None, error=error)
    except Exception:  # noqa: BLE001 - never hide the original error
        pass
