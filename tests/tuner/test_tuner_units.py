"""Unit tests of the sweep side's pure logic (no framework is imported here)."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from perftune.backends import classify_exception, classify_exit
from perftune.devices import Device, select
from perftune.errors import Diverged, InvalidConfig, TrialError, UsageError
from perftune.objectives import (
    OBJECTIVES,
    Throughput,
    TimeToTarget,
    get_objective,
    median,
    speedup,
    spread,
    summarize,
)
from perftune.settings import Workspace
from perftune.sweep import SweepConfig
from perftune.workload import Workload, canonical_spec, check_spec, resolve

# -- objectives


def test_median():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert median([7]) == 7.0
    with pytest.raises(ValueError):
        median([])


def test_spread():
    assert spread([5.0]) == 0.0
    assert spread([]) == 0.0
    assert spread([9.0, 10.0, 11.0]) == pytest.approx(0.2)
    assert spread([2.0, 2.0, 2.0]) == 0.0
    assert spread([-1.0, 0.0, 1.0]) == math.inf  # median 0


def test_speedup_both_directions():
    assert speedup(10.0, 5.0, "minimize") == 2.0  # half the time: twice as fast
    assert speedup(5.0, 10.0, "minimize") == 0.5
    assert speedup(100.0, 150.0, "maximize") == 1.5  # 1.5x the samples/s
    assert speedup(150.0, 100.0, "maximize") == pytest.approx(2 / 3)
    for base, best in ((None, 1.0), (1.0, None), (0.0, 1.0), (1.0, 0.0), (-1.0, 2.0)):
        assert speedup(base, best, "minimize") is None
        assert speedup(base, best, "maximize") is None


def test_objective_speedup_uses_its_direction():
    assert TimeToTarget().speedup(6.0, 2.0) == 3.0
    assert Throughput().speedup(200.0, 600.0) == 3.0


def test_summarize():
    s = summarize([3, 1, 2])
    assert s == {"median": 2.0, "spread": 1.0, "min": 1.0, "max": 3.0, "n": 3.0}
    json.dumps(s)


def test_time_to_target_value():
    o = TimeToTarget()
    assert (o.direction, o.unit, o.measure) == ("minimize", "s", "converge")
    assert o.value({"reached_target": True, "time_to_target_s": 2.5}) == 2.5
    assert o.value({"reached_target": False, "time_to_target_s": None, "train_time_s": 30}) is None
    assert o.value({}) is None
    assert o.better(1.0, 2.0) and not o.better(2.0, 1.0) and not o.better(1.0, 1.0)


def test_throughput_value():
    o = Throughput()
    assert (o.direction, o.unit, o.measure) == ("maximize", "samples/s", "throughput")
    assert o.value({"throughput_sps": 1234.5}) == 1234.5
    assert o.value({"throughput_sps": 10}) == 10.0
    for bad in (None, math.nan, math.inf, 0.0, -5.0):
        assert o.value({"throughput_sps": bad}) is None
    assert o.value({}) is None
    assert o.better(2.0, 1.0) and not o.better(1.0, 2.0)


def test_get_objective():
    assert set(OBJECTIVES) == {"time-to-target", "throughput", "throughput-at-slo", "latency", "energy",
                               "peak-memory", "quality"}
    assert isinstance(get_objective("throughput"), Throughput)
    with pytest.raises(UsageError, match=r"^--objective speed: unknown objective .speed. .*time-to-target"):
        get_objective("speed")


# -- workloads


def _wl(**kw) -> Workload:
    args = {"name": "w", "model": lambda: None, "data": lambda: None, "target": 0.9}
    return Workload(**{**args, **kw})


@pytest.mark.parametrize(("kw", "message"), [
    ({"name": ""}, "^workload name: must be a non-empty name"),
    ({"mode": "up"}, "mode must be 'max' or 'min'"),
    ({"target": math.nan}, "target must be a finite number"),
    ({"target": math.inf}, "target must be a finite number"),
    ({"budget_s": 0}, "budget_s must be > 0"),
    ({"budget_s": -1.0}, "budget_s must be > 0"),
    ({"eval_interval_s": 0}, "eval_interval_s must be > 0"),
    ({"model": "not callable"}, "model must be a callable factory"),
    ({"data": [1, 2, 3]}, "data must be a callable factory"),
    ({"budget_s": 1e308}, "budget_s must be > 0 and <= 604800"),
    # Unknown names were found only inside the trials, after 44 of them had run.
    ({"loss": "crossentropy"}, r"^workload w: loss 'crossentropy' is not known \(choose from: cross_entropy, mse; or pass a callable\)$"),
    ({"metric": "acc"}, r"^workload w: metric 'acc' is not known \(choose from: accuracy, mse;"),
    ({"loss": None}, "loss None is not known"),
])  # fmt: skip
def test_workload_validation(kw, message):
    with pytest.raises(UsageError, match=message):
        _wl(**kw)


def test_workload_accepts_every_name_the_backends_implement():
    from perftune.workload import LOSSES, METRICS

    for loss in LOSSES:
        for metric in METRICS:
            assert _wl(loss=loss, metric=metric).loss == loss
    assert _wl(loss=lambda out, y: 0.0, metric=lambda out, y: 1.0)


def test_check_data():
    import numpy as np

    from perftune.workload import check_data

    x, y = np.zeros((4, 2)), np.zeros(4)
    assert check_data((x, y, x[:2], y[:2]), "w")[0] is x
    assert check_data([[1, 2], [0, 1], [3], [1]], "w")  # lists count too
    for arrays, message in (((x[:0], y[:0], x, y), "the training set is empty"),
                            ((x, y, x[:0], y), "the validation set is empty"),
                            ((x, y[:3], x, y), "the training set has 4 inputs but 3 targets"),
                            ((x, y, x), r"data\(\) must return \(x_train, y_train, x_val, y_val\), got tuple"),
                            (None, "got NoneType")):  # fmt: skip
        with pytest.raises(UsageError, match=rf"^workload w: .*{message}"):
            check_data(arrays, "w")


def test_resolve_checks_what_data_returns(tmp_path):
    (tmp_path / "wl.py").write_text(textwrap.dedent("""
        from perftune import Workload

        def make():
            return Workload(name="empty", model=lambda: None, target=0.5,
                            data=lambda: ([], [], [[1.0]], [0]))
    """))
    workload = resolve(f"{tmp_path}/wl.py:make", "torch")
    with pytest.raises(UsageError, match=r"^workload empty: data\(\): the training set is empty$"):
        workload.data()


def test_workload_target_logic():
    up = _wl(target=0.9, mode="max")
    assert up.reached(0.9) and up.reached(0.95) and not up.reached(0.89)
    assert up.gap(0.7) == pytest.approx(0.2) and up.gap(0.95) < 0
    down = _wl(target=0.1, mode="min")
    assert down.reached(0.1) and down.reached(0.05) and not down.reached(0.2)
    assert down.gap(0.3) == pytest.approx(0.2) and down.gap(0.05) < 0


def test_workload_describe_is_json():
    def my_loss(out, y):
        return 0.0

    d = _wl(loss=my_loss, metric="mse", mode="min", target=1).describe()
    assert json.loads(json.dumps(d)) == d
    assert d["loss"] == "my_loss" and d["metric"] == "mse" and d["target"] == 1.0
    assert set(d) >= {"name", "framework", "target", "mode", "budget_s", "eval_interval_s"}


def test_check_spec_accepts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wl.py").write_text("def make(): pass\n")
    check_spec("mlp-digits", "torch")
    check_spec("cnn-digits", "torch")
    check_spec("wl.py:make", "torch")
    check_spec("some_package.module:make", "torch")  # not imported in the sweep process


@pytest.mark.parametrize(("spec", "framework", "message"), [
    ("mlp-digits", "jax", r"--workload mlp-digits: no jax version \(available for: mindspore, tensorflow, torch\)"),
    ("resnet", "torch", r"--workload resnet: unknown workload \(built-in: cnn-digits, gpt-tiny, mlp-digits"),
    ("wl.py:1make", "torch", r"'1make' is not a function name"),
    ("wl.py:", "torch", r"'' is not a function name"),
    ("nowhere/missing.py:make", "torch", r"file not found: nowhere/missing.py"),
])  # fmt: skip
def test_check_spec_rejects(spec, framework, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wl.py").write_text("def make(): pass\n")
    with pytest.raises(UsageError, match=message):
        check_spec(spec, framework)


def test_canonical_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert canonical_spec("mlp-digits") == "mlp-digits"
    assert canonical_spec("nope") == "nope"
    assert canonical_spec("pkg.mod:make") == "pkg.mod:make"
    assert canonical_spec("wl.py:make") == f"{tmp_path / 'wl.py'}:make"
    assert canonical_spec("sub/wl.py:make") == f"{tmp_path / 'sub' / 'wl.py'}:make"
    assert canonical_spec("/abs/wl.py:make") == "/abs/wl.py:make"


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    """user_file(name, text) -> path of a workload file; undoes resolve()'s sys.path/modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    names = []

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        names.append("perftune_user_" + path.stem)
        return path

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_resolve_user_file(user_file):
    path = user_file(
        "ok_wl.py",
        """
        from perftune import Workload

        def make():
            return Workload(name="mine", model=lambda: None, data=lambda: None, target=0.5)
    """,
    )
    wl = resolve(f"{path}:make")
    assert isinstance(wl, Workload) and wl.name == "mine"


@pytest.mark.parametrize(("body", "message"), [
    ("def make():\n    return 42\n", r"the factory returned int, not perftune.Workload"),
    ("from perftune import Workload\n\ndef make():\n    return Workload(name='w', "
     "framework='tensorflow', model=print, data=print, target=1)\n",
     r"it is a tensorflow workload, not torch \(pass --framework tensorflow\)"),
    ("def other():\n    pass\n", r"has no attribute 'make'"),
])  # fmt: skip
def test_resolve_rejects(user_file, body, message):
    path = user_file("bad_wl.py", body)
    with pytest.raises(UsageError, match=message):
        resolve(f"{path}:make")


def test_resolve_module_import_error():
    with pytest.raises(UsageError, match=r"--workload no_such_pkg_xyz.mod:make: cannot import"):
        resolve("no_such_pkg_xyz.mod:make")


@pytest.mark.parametrize("body", ["def make(:\n    pass\n", "import no_such_module_xyz\n"])
def test_resolve_broken_user_file(user_file, body):
    path = user_file("broken_wl.py", body)
    with pytest.raises(UsageError, match=r"--workload .*broken_wl\.py"):
        resolve(f"{path}:make")


# -- failure classification


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError."""


@pytest.mark.parametrize(("exc", "cause"), [
    (MemoryError(), "oom"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 4503599627370496 bytes. Error code 12 "
                  "(Cannot allocate memory)"), "oom"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total "
                  "capacity)"), "oom"),
    (OutOfMemoryError(), "oom"),
    (RuntimeError("OOM when allocating tensor with shape[4096,4096]"), "oom"),
    (Diverged("training loss became nan at step 3"), "diverged"),
    (InvalidConfig("ddp needs world_size >= 2"), "invalid"),
    (TrialError("something"), "crash"),
    (ValueError("shapes (3,) and (4,) not aligned"), "crash"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "crash"),
    (KeyboardInterrupt(), "crash"),
])  # fmt: skip
def test_classify_exception(exc, cause):
    assert classify_exception(exc) == cause


def _wait_status(action) -> int:
    """The raw wait status of a forked child that runs ``action`` (it must not return)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            action()
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return status


def _kill_self(sig):
    def action():
        if sig != signal.SIGKILL:  # SIGKILL cannot be caught; the others get their default
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        signal.pause()

    return action


def test_classify_exit_real_children():
    assert classify_exit(_wait_status(_kill_self(signal.SIGKILL)), killed_for_timeout=False) == (
        "oom",
        "killed by SIGKILL (most likely the kernel's out-of-memory killer)",
    )
    cause, message = classify_exit(_wait_status(_kill_self(signal.SIGTERM)),
                                   killed_for_timeout=False)  # fmt: skip
    assert (cause, message) == ("crash", "killed by SIGTERM")
    cause, message = classify_exit(_wait_status(lambda: os._exit(3)), killed_for_timeout=False)
    assert cause == "crash" and "status 3" in message
    assert classify_exit(_wait_status(_kill_self(signal.SIGKILL)), killed_for_timeout=True)[0] == (
        "timeout")  # fmt: skip


@pytest.mark.parametrize(("status", "cause", "text"), [
    (signal.SIGKILL, "oom", "SIGKILL"),
    (signal.SIGSEGV, "crash", "SIGSEGV"),
    (signal.SIGSEGV | 0x80, "crash", "SIGSEGV"),  # with a core dump
    (signal.SIGABRT, "crash", "SIGABRT"),
    (signal.SIGBUS, "crash", "SIGBUS"),
    (1 << 8, "crash", "status 1"),
    (70 << 8, "crash", "status 70"),
    (0, "crash", "status 0"),  # exited cleanly but never reported a result
])  # fmt: skip
def test_classify_exit_statuses(status, cause, text):
    got_cause, message = classify_exit(status, killed_for_timeout=False)
    assert got_cause == cause and text in message
    assert classify_exit(status, killed_for_timeout=True)[0] == "timeout"


# -- devices


def _cpu(**kw) -> Device:
    args = {"framework": "torch", "kind": "cpu", "name": "Test CPU", "count": 1,
            "memory_bytes": 16 * 2**30, "cores": 8}  # fmt: skip
    return Device(**{**args, **kw})


def test_fingerprint_is_pinned():
    # Stored best configs are keyed by it: a change of the scheme orphans all of them.
    assert _cpu().fingerprint == "46502ad62f6d7eb6f27a79ef12b39c2b56add226365fed3b888b53a2bfbbe8ea"


def test_fingerprint_stability():
    fp = _cpu().fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert _cpu().short == fp[:12]
    # Versions and other info are recorded, not hashed; memory counts in whole GiB.
    assert _cpu(info={"versions": {"torch": "9.9"}, "bf16": False}).fingerprint == fp
    assert _cpu(memory_bytes=16 * 2**30 - 50 * 2**20).fingerprint == fp
    for kw in ({"name": "Other CPU"}, {"cores": 4}, {"count": 2}, {"kind": "cuda"},
               {"framework": "tensorflow"}, {"memory_bytes": 32 * 2**30}):  # fmt: skip
        assert _cpu(**kw).fingerprint != fp, kw
    assert _cpu(memory_bytes=None).fingerprint == _cpu(memory_bytes=0).fingerprint


def test_device_from_discovery_and_to_dict():
    found = {"kind": "cpu", "name": "Test CPU", "count": 1, "memory_bytes": 16 * 2**30,
             "cores": 8, "versions": {"torch": "2.x"}, "bf16": True}  # fmt: skip
    dev = Device.from_discovery("torch", found)
    assert dev == _cpu(info={"versions": {"torch": "2.x"}, "bf16": True})
    d = dev.to_dict()
    assert d["fingerprint"] == dev.fingerprint and d["versions"] == {"torch": "2.x"}
    json.dumps(d)
    assert dev.resources == {"cores": 8, "device_count": 1, "memory_gib": 16.0}


def test_select():
    cpu, gpu = _cpu(), _cpu(kind="cuda", name="GPU", count=2)
    assert select([cpu, gpu], "cpu") is cpu
    assert select([cpu, gpu], "cuda") is gpu
    assert select([cpu, gpu], "cuda:1") is gpu
    with pytest.raises(UsageError, match=r"^--device tpu: not found on this machine "
                                         r"\(found: cpu, cuda\)$"):  # fmt: skip
        select([cpu, gpu], "tpu")
    with pytest.raises(UsageError, match=r"found: none"):
        select([], "cpu")
    with pytest.raises(UsageError, match=r"^--device cuda:2: no such cuda device \(found: cuda:0, cuda:1\)$"):
        select([cpu, gpu], "cuda:2")


def test_select_on_a_heterogeneous_box():
    """One record per GPU model, each with the indices it covers; ``--device cuda:N`` picks the
    record holding N, and each record's ``spec`` selects exactly it."""
    a100 = _cpu(kind="cuda", name="NVIDIA A100-SXM4-80GB", count=2, info={"indices": [0, 2]})
    l4 = _cpu(kind="cuda", name="NVIDIA L4", count=1, info={"indices": [1]})
    assert select([a100, l4], "cuda:1") is l4 and select([a100, l4], "cuda:2") is a100
    assert (a100.spec, l4.spec) == ("cuda:0", "cuda:1")
    assert select([a100, l4], a100.spec) is a100 and select([a100, l4], l4.spec) is l4
    assert a100.fingerprint != l4.fingerprint
    with pytest.raises(UsageError, match=r"found: cuda:0, cuda:2, cuda:1"):
        select([a100, l4], "cuda:3")


# -- the workspace


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("PERFTUNE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_workspace_defaults(clean_env):
    ws = Workspace.resolve()
    home = clean_env / ".perftune"
    assert ws.home == home
    assert ws.storage == f"sqlite:///{home / 'optuna.db'}"
    assert ws.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert ws.db == f"sqlite:///{home / 'perftune.db'}"
    assert ws.logs == home / "logs" and ws.artifacts == home / "mlartifacts"
    assert not home.exists()  # resolving writes nothing
    ws.prepare()
    assert ws.logs.is_dir() and ws.artifacts.is_dir()


def test_workspace_home_argument_and_env(clean_env, monkeypatch):
    assert Workspace.resolve("rel").home == clean_env / "rel"
    monkeypatch.setenv("PERFTUNE_HOME", str(clean_env / "from-env"))
    assert Workspace.resolve().home == clean_env / "from-env"
    assert Workspace.resolve(clean_env / "arg").home == clean_env / "arg"  # the flag wins


def test_workspace_database_env(clean_env, monkeypatch):
    monkeypatch.setenv("PERFTUNE_STORAGE", "postgresql://u:pw@db.example/optuna")
    monkeypatch.setenv("PERFTUNE_DB", "postgresql+psycopg://u:pw@db.example/perftune")
    monkeypatch.setenv("PERFTUNE_TRACKING_URI", "http://mlflow.example:5000")
    ws = Workspace.resolve("h")
    assert ws.storage == "postgresql+psycopg://u:pw@db.example/optuna"  # driver added
    assert ws.db == "postgresql+psycopg://u:pw@db.example/perftune"
    assert ws.tracking_uri == "http://mlflow.example:5000"
    # Flags win over the environment.
    ws = Workspace.resolve("h", db="sqlite:///x.db", storage="sqlite:///y.db")
    assert (ws.db, ws.storage) == ("sqlite:///x.db", "sqlite:///y.db")


@pytest.mark.parametrize(("kw", "message"), [
    ({"storage": "sqlite:///a.db", "db": "sqlite:///a.db"}, r"--db and --storage name the same"),
    ({"storage": "sqlite:///a.db", "tracking_uri": "sqlite:///a.db"},
     r"--tracking-uri and --storage name the same"),
    ({"db": "sqlite:///a.db", "tracking_uri": "sqlite:///a.db"},
     r"--db and --tracking-uri name the same"),
    ({"storage": "postgresql://h/x", "db": "postgresql+psycopg://h/x"},
     r"--db and --storage name the same"),  # the same once normalised
    ({"storage": "optuna.db"}, r"^--storage optuna.db: not a database URL"),
    ({"db": "perftune.db"}, r"^--db perftune.db: not a database URL"),
    ({"tracking_uri": "mlflow.db"}, r"^--tracking-uri mlflow.db: not a tracking URI"),
])  # fmt: skip
def test_workspace_rejects(clean_env, kw, message):
    with pytest.raises(UsageError, match=message):
        Workspace.resolve("h", **kw)
    assert not (clean_env / "h").exists()


def test_workspace_distinctness_from_env(clean_env, monkeypatch):
    monkeypatch.setenv("PERFTUNE_STORAGE", "sqlite:///same.db")
    monkeypatch.setenv("PERFTUNE_DB", "sqlite:///same.db")
    with pytest.raises(UsageError, match="same database"):
        Workspace.resolve("h")


# -- sweep configuration


def test_sweep_config_valid():
    # validate() returns nothing and raises nothing for good input
    assert SweepConfig(workload="mlp-digits").validate() is None
    assert SweepConfig(workload="cnn-digits", device="cuda:0", objective="throughput", trials=1,
                timeout=0.5, sampler="grid", pruner="none", trial_timeout=10,
                budget_s=3).validate() is None  # fmt: skip


@pytest.mark.parametrize(("kw", "message"), [
    ({"workload": "nope"}, r"^--workload nope: unknown workload"),
    ({"framework": "jax"}, r"^--framework jax: unknown framework"),
    ({"objective": "fast"}, r"^--objective fast: unknown objective"),
    ({"device": "quantum"}, r"^--device quantum: the torch backend drives cpu, cuda, mps, xpu, npu, tpu$"),
    ({"device": "ipu:0"}, r"^--device ipu:0"),
    ({"batch_probe": "maybe"}, r"^--batch-probe maybe: choose auto, on or off$"),
    ({"sampler": "bayes"}, r"^--sampler bayes: choose tpe, random, grid, cmaes, gp or nsga2$"),
    ({"pruner": "hyperband"}, r"^--pruner hyperband: choose median or none$"),
    ({"trials": 0}, r"^--trials 0: must be an integer >= 1"),
    ({"trials": 2.5}, r"^--trials 2.5: must be an integer"),
    ({"confirm_top": 0}, r"^--confirm-top 0"),
    ({"confirm_repeats": -1}, r"^--confirm-repeats -1"),
    ({"timeout": 0}, r"^--timeout 0: must be a number of seconds > 0 and <= 2592000$"),
    ({"timeout": -1.0}, r"^--timeout -1.0"),
    ({"timeout": math.inf}, r"^--timeout inf"),
    ({"timeout": math.nan}, r"^--timeout nan"),
    ({"trial_timeout": 0}, r"^--trial-timeout 0"),
    ({"budget_s": -2}, r"^--budget -2"),
    # Numbers that passed and then crashed the sweep (OverflowError, Optuna's messages blamed
    # on --storage, thread tracebacks): every one has a finite, sane range.
    ({"trial_timeout": 1e308}, r"^--trial-timeout 1e\+308: must be a number of seconds > 0 and <= 604800$"),
    ({"budget_s": 1e308}, r"^--budget 1e\+308: must be a number of seconds > 0 and <= 604800$"),
    ({"timeout": 1e308}, r"^--timeout 1e\+308"),
    ({"heartbeat_s": 1e308}, r"^--heartbeat 1e\+308: must be a whole number of seconds >= 1 and <= 3600$"),
    ({"heartbeat_s": 0.5}, r"^--heartbeat 0.5: must be a whole number of seconds >= 1"),
    ({"grace_s": 0.5}, r"^--grace-period 0.5: must be a whole number of seconds >= 1"),
    ({"grace_s": 30.0}, r"^--grace-period 30: must be longer than --heartbeat 30"),
    ({"trials": 100_001}, r"^--trials 100001: must be an integer >= 1 and <= 100000$"),
    ({"trials": True}, r"^--trials True: must be an integer"),
    ({"confirm_repeats": 10**6}, r"^--confirm-repeats 1000000"),
    ({"workers": 10**9}, r"^--workers 1000000000"),
    ({"max_retry": 10**9}, r"^--max-retry 1000000000"),
    ({"worker_index": -1}, r"^--worker-index -1"),
    ({"device": "cpu:99999999999999999999"}, r"^--device cpu:99999999999999999999: the index must be an integer from 0 to 1023$"),
    ({"device": "cuda:x"}, r"^--device cuda:x: the index"),
    ({"device": "cuda:"}, r"^--device cuda:: the index"),
    ({"device": "cuda:\u00b2"}, r"^--device cuda:\u00b2: the index"),
    ({"space": "no/such/space.yaml"}, r"^--space no/such/space.yaml: file not found"),
    ({"study": "  "}, r"^--study: must not be empty"),
    ({"study": ""}, r"^--study: must not be empty"),
])  # fmt: skip
def test_sweep_config_rejects(kw, message):
    with pytest.raises(UsageError, match=message):
        SweepConfig(**{"workload": "mlp-digits", **kw}).validate()


def test_space_directory_is_not_a_file(tmp_path):
    with pytest.raises(UsageError, match="--space"):
        SweepConfig(workload="mlp-digits", space=str(tmp_path)).validate()


def test_sweep_config_accepts_the_edges_of_its_ranges():
    edges = [dict(trials=100_000, confirm_top=100, confirm_repeats=100, workers=256, max_retry=100,
                  seed=2**32 - 10_001, timeout=30 * 86_400, trial_timeout=7 * 86_400, budget_s=0.001,
                  heartbeat_s=1, grace_s=2, device="cuda:1023"),
             dict(heartbeat_s=3600.0, grace_s=7 * 86_400.0, device="all")]  # fmt: skip
    for values in edges:
        cfg = SweepConfig(workload="mlp-digits", **values)
        assert cfg.validate() is None  # no UsageError
        assert {k: getattr(cfg, k) for k in values} == values  # nothing clamped
