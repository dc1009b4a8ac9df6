"""``perftune ui`` for real: a small sweep, then the MLflow UI served over its tracking store
(SQLite, and the PostgreSQL one), checked through the REST API and in headless Chromium
(Selenium): the experiment as it first opens (trial runs named by outcome and value), the
experiment in perftune's saved view (every run, its searched params and its objective in the
runs table, without expanding the parent or adding columns), and a trial's run page.
Screenshots are kept under ``$PERFTUNE_TEST_ARTIFACTS`` (default ``test-artifacts/``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, pg_schemas, run_json

pytestmark = pytest.mark.slow

NOOP = "benchmarks/noop_workload.py:make_workload"
ML = "workflowType=machine_learning"  # the UI's "Model training" view (its default is GenAI)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (mlflow server and its uvicorn), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in the group
    proc.wait(timeout=10)


@contextlib.contextmanager
def _serve(home: Path, *ui_flags: str):
    """``perftune ui`` on a free port, as a user starts it; yields (url, process) once it
    answers ``/health``, and stops it (its whole process group) afterwards."""
    port = _free_port()
    log = home / "ui.log"
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "perftune.cli", "ui", "--port", str(port),
                                 "--home", str(home), *ui_flags], stdout=out, stderr=out,
                                cwd=ROOT, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "perftune ui exited:\n" + log.read_text()[-3000:]
                assert time.monotonic() - t0 < 90, "no /health in 90 s:\n" + log.read_text()[-3000:]
                time.sleep(0.25)
        print(f"\nperftune ui answered /health after {time.monotonic() - t0:.1f} s")
        yield url, proc
    finally:
        _stop(proc)


def _wait_for_a_run(db: Path, sweep) -> None:
    """Until the sweep has created its MLflow parent run (so the tracking database exists and
    is migrated: the UI may start while the trials run), or has ended."""
    import sqlite3

    while not sweep.done():
        if db.exists():
            with contextlib.suppress(sqlite3.Error), contextlib.closing(
                    sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:  # fmt: skip
                if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
                    return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real sweep (the no-op workload: this is about the UI, not convergence), with
    ``perftune ui`` started as soon as the sweep's MLflow run exists, so the server comes up
    while the trials run (and must show runs logged after it started)."""
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("ui")
    with ThreadPoolExecutor(1) as pool:
        sweep = pool.submit(run_json, "sweep", "--workload", NOOP, "--trials", "4",
                            "--confirm-top", "1", "--confirm-repeats", "1", "--seed", "0",
                            "--home", str(home))  # fmt: skip
        _wait_for_a_run(home / "mlflow.db", sweep)
        with _serve(home) as (url, proc):
            report = sweep.result()
            client = MlflowClient(f"sqlite:///{home}/mlflow.db")
            children = client.search_runs(
                [report["mlflow_experiment_id"]],
                f"tags.`mlflow.parentRunId` = '{report['mlflow_run_id']}'")  # fmt: skip
            yield {"url": url, "report": report, "proc": proc, "children": children,
                   "parent": client.get_run(report["mlflow_run_id"])}  # fmt: skip


def _get(url: str):
    return json.loads(urllib.request.urlopen(url, timeout=20).read())


def _check_rest(url: str, exp_name: str, parent_id: str, children: int) -> None:
    run = _get(f"{url}/api/2.0/mlflow/runs/get?run_id={parent_id}")
    assert run["run"]["info"]["run_id"] == parent_id
    eid = run["run"]["info"]["experiment_id"]
    assert _get(f"{url}/api/2.0/mlflow/experiments/get?experiment_id={eid}")["experiment"]["name"] == exp_name
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"experiment_ids": [eid], "filter":
                                                  f"tags.`mlflow.parentRunId` = '{parent_id}'"}).encode())  # fmt: skip
    found = json.loads(urllib.request.urlopen(req, timeout=20).read())["runs"]
    assert len(found) == children and all(r["data"]["params"] for r in found)
    page = urllib.request.urlopen(url + "/", timeout=20).read().decode()
    assert "<html" in page.lower()


def test_ui_serves_the_tracking_store(served):
    report = served["report"]
    # 4 trials and 2 confirmation runs (the top config and the baseline), nested under the sweep.
    assert {r.data.tags["phase"] for r in served["children"]} == {"search", "confirmation"}
    _check_rest(served["url"], "noop", report["mlflow_run_id"], 6)
    # One worker and no job runner: the server is mlflow's and one uvicorn, nothing else.
    group = subprocess.run(["ps", "-ww", "-o", "args=", "-g", str(served["proc"].pid)],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "--workers 1" in group and "huey" not in group and "_job_runner" not in group, group
    assert len(group.strip().splitlines()) == 2, group


@pytest.mark.postgres
def test_ui_on_postgres(tmp_path):
    """The PostgreSQL tracking store (a schema of the test server): runs logged by perftune's
    tracker, served by ``perftune ui --tracking-uri``. No sweep: the SQLite test above covers
    the sweep's runs and the browser; this covers the store URL reaching ``mlflow server``."""
    from perftune.tracking import MlflowTracker

    with pg_schemas("perftune_ui") as urls:
        tracker = MlflowTracker(urls["mlflow"], str(tmp_path / "mlartifacts"))
        parent = tracker.start_sweep("ui-pg", "ui-pg-sweep", {"trials": 2}, {"phase": "sweep"})
        for i in range(2):
            tracker.log_trial(f"trial-{i}", {"batch_size": 32 * (i + 1), "learning_rate": 1e-3},
                              {"objective": 1.0 + i}, {}, {"phase": "search"})  # fmt: skip
        tracker.end_sweep()
        with _serve(tmp_path, "--tracking-uri", urls["mlflow"]) as (url, _):
            _check_rest(url, "ui-pg", parent, 2)


def _browser_paths() -> tuple[str, str] | None:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver"
                                              if os.path.exists("/usr/bin/chromedriver") else None)  # fmt: skip
    return (chrome, driver) if chrome and driver else None


@pytest.fixture(scope="module")
def browser():
    paths = _browser_paths()
    if paths is None:
        pytest.skip("chromium and chromedriver not installed (make browser installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1920,1200"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(paths[1]), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _artifacts() -> Path:
    folder = Path(os.environ.get("PERFTUNE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.browser
def test_ui_in_a_browser(browser, served):  # browser first: skips before the sweep
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from perftune.tracking import view_path

    url, report, parent = served["url"], served["report"], served["parent"]
    eid, pid = report["mlflow_experiment_id"], report["mlflow_run_id"]
    wait = WebDriverWait(browser, 40)
    shots = _artifacts()
    name = "ui"

    def link(run_id: str):  # a run's name in the runs table links to its page
        return (By.XPATH, f"//a[contains(@href, '/experiments/{eid}/runs/{run_id}')]")

    def cells(run_id: str) -> list[str]:  # a run's row: its pinned and scrolled parts share row-index
        index = browser.find_element(*link(run_id)).find_element(
            By.XPATH, "./ancestor::*[@role='row'][1]").get_attribute("row-index")  # fmt: skip
        return [c.text.strip() for c in browser.find_elements(
            By.XPATH, f"//*[@role='row'][@row-index='{index}']//*[@role='gridcell']")]  # fmt: skip

    def shoot(what: str) -> None:
        shot = shots / f"{name}-{what}.png"
        browser.save_screenshot(str(shot))
        print(f"\nscreenshot: {shot}")

    trials = [r for r in served["children"] if r.data.tags["phase"] == "search"]
    try:
        # As the experiment first opens: the sweep's parent run, its trials nested under it.
        browser.get(f"{url}/#/experiments/{eid}/runs?{ML}")
        wait.until(lambda d: "noop" in d.find_element(By.TAG_NAME, "body").text.splitlines())
        row = wait.until(ec.visibility_of_element_located(link(pid)))
        assert row.text == parent.info.run_name and parent.info.run_name.startswith(
            "noop-torch-cpu-time-to-target@")
        shoot("experiment")
        # perftune's saved view: every run in the table, with the objective and the searched
        # params as columns, best first; nothing to expand, no column to add.
        browser.get(url + view_path(eid))
        for run in served["children"]:
            shown = wait.until(ec.visibility_of_element_located(link(run.info.run_id)))
            assert shown.text == run.info.run_name
        headers = {h.text.strip() for h in browser.find_elements(By.XPATH, "//*[@role='columnheader']")}
        searched = ("batch_size", "learning_rate")  # the first params (by name) on the screen
        assert {"Metrics", "objective", "Parameters", *searched} <= headers, headers
        for run in trials:
            shown = cells(run.info.run_id)
            for key in searched:
                assert any(c.startswith(run.data.params[key][:6]) for c in shown), (run.info.run_name, key, shown)
            if "objective" in run.data.metrics:
                value = f"{run.data.metrics['objective']:.3g}"
                assert any(c.startswith(value[:4]) for c in shown), (run.info.run_name, value, shown)
                assert run.info.run_name.startswith(f"trial {run.data.tags['optuna_trial_number']} complete ")
        shoot("view")

        trial = next(r for r in served["children"] if r.data.tags.get("optuna_trial_number") == "0")
        browser.get(f"{url}/#/experiments/{eid}/runs/{trial.info.run_id}?{ML}")
        wait.until(lambda d: trial.info.run_name in d.find_element(By.TAG_NAME, "body").text)

        def param_cell(key: str):  # the params table: rows of (name, value) cells
            return wait.until(ec.visibility_of_element_located((
                By.XPATH, f"//*[@role='row'][*[@role='cell'][1][normalize-space()='{key}']]"
                          "/*[@role='cell'][2]")))  # fmt: skip

        assert {"batch_size", "learning_rate", "optimizer"} <= set(trial.data.params)
        for key in ("batch_size", "learning_rate", "optimizer"):
            assert param_cell(key).text.strip() == trial.data.params[key], key
        assert trial.data.params["batch_size"] == "32"  # trial 0 is the framework default
        body = browser.find_element(By.TAG_NAME, "body").text
        assert f"Parameters ({len(trial.data.params)})" in body
        assert parent.info.run_name in body  # "Parent run" in the run's details
        shoot("run")
    except Exception:
        shot = shots / f"{name}-failure.png"
        browser.save_screenshot(str(shot))
        print(f"\nscreenshot at failure: {shot} ({browser.current_url})")
        raise

