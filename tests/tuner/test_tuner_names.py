"""Names that become paths (tuner/names.py): a workload or study name cannot leave the folder it
names, nor make a file name too long; bad ones are one line, exit 2, naming the field, with
nothing written."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from test_tuner_cli_errors import assert_usage_error, perftune
from test_tuner_sweep_fake import FakeExecutor

from perftune.errors import UsageError
from perftune.names import MAX_FILENAME, MAX_NAME, MAX_STUDY, check_name, safe_filename
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, SweepContext, run_sweep
from perftune.workload import Workload

ROOT = Path(__file__).resolve().parents[2]
ESCAPE = "../../../../tmp/x"


@pytest.mark.parametrize(("value", "needle"), [
    (ESCAPE, "must not contain '/', '\\' or '..'"),
    ("a\\b", "must not contain"),
    ("..", "must not contain"),
    ("x" * (MAX_NAME + 1), f"at most {MAX_NAME} characters (got {MAX_NAME + 1})"),
    ("a\nb", "control characters"),
    ("", "must be a non-empty name"),
    ("  ", "must be a non-empty name"),
    (None, "must be a non-empty name"),
    (42, "must be a non-empty name"),
])  # fmt: skip
def test_check_name_rejects_with_one_line_naming_the_field(value, needle):
    with pytest.raises(UsageError) as info:
        check_name("--study", value)
    assert str(info.value).startswith("--study") and needle in str(info.value)
    assert "\n" not in str(info.value)


def test_check_name_accepts_names():
    for ok in ("mlp-digits", "x" * MAX_NAME, "my mlp (v2)", "a.b_c@d+e=f", "données"):
        check_name("workload name", ok)
    check_name("--study", None, optional=True)


@pytest.mark.parametrize("text", [ESCAPE, "..", ".", "", "a/b\\c", "x" * 300, "é" * 300, "a\0b",
                                  "trial " * 60, "mlp-digits-torch-cpu-time-to-target-trial-3"])  # fmt: skip
def test_safe_filename_is_one_short_safe_name(text, tmp_path):
    name = safe_filename(text)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert len(name.encode()) <= MAX_FILENAME
    (tmp_path / f"{name}.log").write_text("fits")  # a real file, in the folder meant
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.log"]


def test_safe_filename_keeps_safe_names_and_tells_the_others_apart():
    assert safe_filename("mlp-digits-torch-cpu-time-to-target-trial-3") == "mlp-digits-torch-cpu-time-to-target-trial-3"
    a, b = safe_filename("x" * 300 + "-trial-1"), safe_filename("x" * 300 + "-trial-2")
    assert a != b and len(a) == len(b) == MAX_FILENAME and a.startswith("x" * 100)
    names = {safe_filename(t) for t in ("模型", "数据", "a b", "a_b", "a/b", ".x", "_x")}
    assert len(names) == 7 and "a_b" in names and "_x" in names
    assert safe_filename("my mlp-trial-3").startswith("my_mlp-trial-3-")


# -- where names enter


def test_a_workload_name_that_leaves_the_workspace_is_refused():
    with pytest.raises(UsageError, match=r"^workload name \.\./\.\./\.\./\.\./tmp/x: must not contain"):
        Workload(name=ESCAPE, model=lambda: None, data=lambda: None, target=0.5)
    with pytest.raises(UsageError, match=f"^workload name x+\\.\\.\\.: at most {MAX_NAME} characters"):
        Workload(name="x" * 300, model=lambda: None, data=lambda: None, target=0.5)


class EscapingExecutor(FakeExecutor):
    """A worker whose workload description names a path (an older or foreign worker)."""

    def describe(self, workload):
        return {**super().describe(workload), "name": ESCAPE}


def test_the_workload_description_is_checked_and_nothing_is_written(tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    cfg = SweepConfig(workload="mlp-digits", trials=1, track=False)
    with pytest.raises(UsageError, match=r"^--workload mlp-digits: name \.\./.*must not contain"):
        run_sweep(cfg, ws, executor=EscapingExecutor())
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(("study", "needle"), [("s" * 300, f"at most {MAX_STUDY} characters (got 300)"),
                                               ("s" * 240, "(got 240)")])  # fmt: skip
def test_a_long_study_is_refused_up_front(study, needle, tmp_path, capsys, monkeypatch):
    from perftune.cli import main

    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    home = tmp_path / "ws"
    code = main(["sweep", "--workload", "mlp-digits", "--study", study, "--home", str(home)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("perftune: error: --study ") and needle in err
    assert err.count("\n") == 1 and not home.exists()


def test_the_default_study_of_the_longest_workload_name_is_a_valid_study():
    """``perftune worker --study`` (a helper of ``--workers N``) names it: it must pass."""
    SweepConfig(workload="mlp-digits", study="w" * MAX_NAME + "-tensorflow-cuda12-time-to-target").validate()
    with pytest.raises(UsageError, match=f"at most {MAX_STUDY} characters"):
        SweepConfig(workload="mlp-digits", study="s" * (MAX_STUDY + 1)).validate()


def test_log_files_fit_whatever_the_study_name(tmp_path):
    """The longest study a user may name and the longest default one (a 100-character workload
    name): every trial, confirmation and worker log is one file in logs/ and can be created."""
    ws = Workspace.resolve(tmp_path / "ws")
    ws.prepare()
    ctx = SweepContext(SweepConfig(workload="mlp-digits"), ws, None)
    for study in ("s" * MAX_STUDY, "w" * MAX_NAME + "-tensorflow-cuda1-time-to-target", ESCAPE):
        ctx.study_name = study
        for label in ("trial-12345", "candidate-123-r10", "baseline-r3", "batch-probe", "worker-7"):
            path = Path(ctx.log_file(label))
            assert path.parent == ws.logs
            path.write_text("ok")
    assert all(len(p.name) <= MAX_FILENAME + 4 for p in ws.logs.iterdir())


def test_mlflow_artifact_folders_stay_in_the_workspace(tmp_path):
    from perftune.tracking import MlflowTracker

    class Client:
        def get_experiment_by_name(self, name):
            return None

        def create_experiment(self, name, artifact_location=None, tags=None):
            self.location = artifact_location
            return "1"

    tracker = MlflowTracker.__new__(MlflowTracker)
    tracker.artifact_root, tracker.client = str(tmp_path / "mlartifacts"), Client()
    tracker._experiment(ESCAPE)
    location = Path(tracker.client.location.removeprefix("file://"))
    assert location.parent == tmp_path / "mlartifacts" and os.path.realpath(location) == str(location)


# -- through the real CLI: the worker builds the workload (it imports torch: seconds)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "needle"), [(ESCAPE, "must not contain"),
                                              ("w" * 300, f"at most {MAX_NAME} characters")])  # fmt: skip
def test_a_workload_named_like_a_path_or_too_long_is_exit_2(name, needle, tmp_path):
    (tmp_path / "wl.py").write_text(textwrap.dedent(f"""
        from perftune import Workload

        def make():
            return Workload(name={name!r}, model=lambda: None, data=lambda: None, target=0.5)
    """))
    # cwd: this checkout, whose tuner the CLI must run (not an installed one)
    proc = perftune("sweep", "--workload", f"{tmp_path / 'wl.py'}:make", "--home", str(tmp_path / "ws"),
                    "--trials", "1", cwd=ROOT)  # fmt: skip
    assert_usage_error(proc, tmp_path / "ws", "workload name", needle)
