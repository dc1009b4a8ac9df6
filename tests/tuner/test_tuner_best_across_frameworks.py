"""``perftune best`` without ``--framework``: every framework's best for the workload and
device, best first, through the real CLI over a real store."""

from __future__ import annotations

import hashlib
import json

from perftune.storage import open_store

TIMES = {"torch": 3.5, "tensorflow": 2.5, "mindspore": 8.0}  # seconds to target


def _fp(framework: str) -> str:
    return hashlib.sha256(f"{framework}-cpu".encode()).hexdigest()


def test_best_lists_every_framework_best_first(tmp_path, cli):
    def run_json(*args: str):
        proc = cli(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    with open_store(f"sqlite:///{tmp_path}/perftune.db", create=True) as store:
        for fw, seconds in TIMES.items():
            store.upsert_device(_fp(fw), framework=fw, kind="cpu", name="AMD EPYC", count=1,
                                memory_bytes=2**34, info={})  # fmt: skip
            store.upsert_workload("mlp-digits", framework=fw, info={})
            store.save_best(workload="mlp-digits", framework=fw, device_fingerprint=_fp(fw),
                            objective="time-to-target", direction="minimize", unit="s",
                            config={"batch_size": 128}, value=seconds, spread=0.1, metrics={},
                            baseline_config={"batch_size": 32}, baseline_value=2 * seconds,
                            speedup=2.0, mlflow_run_id=None, sweep_id=None)  # fmt: skip
    rows = run_json("best", "--workload", "mlp-digits", "--device", "cpu", "--home", str(tmp_path))
    assert [(r["framework"], r["value"]) for r in rows] == [
        ("tensorflow", 2.5), ("torch", 3.5), ("mindspore", 8.0)]
    only = run_json("best", "--workload", "mlp-digits", "--framework", "mindspore",
                    "--home", str(tmp_path))  # fmt: skip
    assert [r["framework"] for r in only] == ["mindspore"]
    table = cli("best", "--workload", "mlp-digits", "--home", str(tmp_path))
    assert table.returncode == 0
    lines = [ln for ln in table.stdout.splitlines() if "│" in ln]
    order = [next(fw for fw in TIMES if fw in ln) for ln in lines if any(fw in ln for fw in TIMES)]
    assert order == ["tensorflow", "torch", "mindspore"]
