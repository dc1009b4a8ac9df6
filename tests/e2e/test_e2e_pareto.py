"""End to end, several objectives: a training sweep over throughput, peak memory and energy
stores its confirmed Pareto front, ``perftune best --pick / --weights`` choose points of it, the
MLflow run holds the front's plot. Energy is read from RAPL counters faked at the boundary
(``PERFTUNE_RAPL_ROOT``: a powercap tree whose counter a thread advances at 50 W), since this
machine has no readable RAPL; the trials read it as they would the real one."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from conftest import run_cli, run_json

pytestmark = pytest.mark.slow

class FakeRapl:
    """A powercap tree with one package counter that gains ``watts`` while running."""

    def __init__(self, root, watts: float = 50.0) -> None:
        self.file = root / "intel-rapl:0" / "energy_uj"
        self.file.parent.mkdir(parents=True)
        (root / "intel-rapl:0" / "max_energy_range_uj").write_text(str(2**40))
        self.file.write_text("0\n")
        self.watts, self.stop = watts, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        tmp = self.file.with_name("energy_uj.tmp")
        while not self.stop.wait(0.01):  # replaced whole, as sysfs reads are: never half a number
            tmp.write_text(f"{int((time.monotonic() - start) * self.watts * 1e6)}\n")
            os.replace(tmp, self.file)


OBJECTIVES = "throughput,peak-memory,energy"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    home = tmp_path_factory.mktemp("pareto-ws")
    rapl = FakeRapl(home / "powercap")
    rapl.thread.start()
    try:
        proc = run_cli("sweep", "--workload", "mlp-digits", "--framework", "torch", "--seed", "0", "--trials", "4",
                       "--confirm-repeats", "2", "--objective", OBJECTIVES, "--home", str(home), "--json",
                       env={"PERFTUNE_RAPL_ROOT": str(home / "powercap")})  # fmt: skip
    finally:
        rapl.stop.set()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home, json.loads(proc.stdout)


def test_report_holds_the_confirmed_front(swept):
    _, report = swept
    front = report["front"]
    assert front["objectives"] == ["throughput", "peak-memory", "energy"]
    assert front["directions"] == ["maximize", "minimize", "minimize"]
    assert front["units"] == ["samples/s", "MiB", "J/sample"]
    assert report["best"] is None and report["speedup"] is None and report["stored"] is True
    points = front["points"]
    assert points and all(len(p["values"]) == 3 and p["rounds"] == 2 for p in points)
    signs = [-1, 1, 1]  # lower is better after the sign
    for p in points:  # no point of the front dominates another
        for q in points:
            better_or_equal = all(s * a <= s * b for s, a, b in zip(signs, q["values"], p["values"], strict=True))
            assert q is p or not better_or_equal or q["values"] == p["values"]
    for p in points:  # energy read from the (fake) RAPL counter, per sample
        assert p["values"][2] > 0 and p["metrics"]["energy_source"] == "rapl"
    assert sum(report["trials"].values()) >= 4


def test_best_picks_points_of_the_stored_front(swept):
    home, report = swept
    points = report["front"]["points"]
    fastest = run_json("best", "--workload", "mlp-digits", "--pick", "fastest", "--home", str(home))
    (front,) = fastest
    assert front["kind"] == "pareto_front" and front["objective"] == OBJECTIVES
    assert front["picked"]["values"][0] == max(p["values"][0] for p in points)
    smallest = run_json("best", "--workload", "mlp-digits", "--pick", "smallest", "--home", str(home))
    assert smallest[0]["picked"]["values"][1] == min(p["values"][1] for p in points)
    weighted = run_json("best", "--workload", "mlp-digits", "--weights", "memory=1", "--home", str(home))
    assert weighted[0]["picked_index"] == smallest[0]["picked_index"]
    args = run_cli("best", "--workload", "mlp-digits", "--pick", "fastest", "--format", "args", "--home", str(home))
    assert args.returncode == 0 and "--batch_size" in args.stdout
    efficient = run_json("best", "--workload", "mlp-digits", "--pick", "efficient", "--home", str(home))
    assert efficient[0]["picked"]["values"][2] == min(p["values"][2] for p in points)
    wrong = run_cli("best", "--workload", "mlp-digits", "--weights", "latency=1", "--home", str(home))
    assert wrong.returncode == 2 and "--weights latency=1" in wrong.stderr and "Traceback" not in wrong.stderr


def test_mlflow_has_the_front_plot(swept):
    from mlflow.tracking import MlflowClient

    home, report = swept
    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    plots = {a.path for a in client.list_artifacts(report["mlflow_run_id"], "plots")}
    assert "plots/pareto_front.html" in plots
    run = client.get_run(report["mlflow_run_id"])
    assert run.data.metrics["front_points"] == len(report["front"]["points"])
