"""Warm start through the CLI with real training: a new study of the same workload and device
tries the stored best of another study first, and the report says what that saved."""

from __future__ import annotations

import optuna
import pytest
from conftest import run_json

pytestmark = pytest.mark.slow


def test_a_new_study_tries_the_stored_best_first_and_counts_what_it_saved(tmp_path):
    home = str(tmp_path / "ws")
    space = tmp_path / "space.yaml"
    space.write_text("version: 1\nextends: none\nparams:\n"
                     "  batch_size: {type: categorical, choices: [32, 256], default: 32}\n")  # fmt: skip
    common = ["sweep", "--workload", "mlp-digits", "--objective", "throughput", "--space", str(space),
              "--seed", "0", "--confirm-top", "1", "--confirm-repeats", "1", "--home", home]  # fmt: skip
    first = run_json(*common, "--sampler", "grid", "--trials", "2")
    assert first["warm_start"] is None and first["best"]["config"]["batch_size"] == 256  # 8x the batch: faster
    second = run_json(*common, "--study", "again", "--sampler", "random", "--trials", "3")
    w = second["warm_start"]
    assert (w["enqueued"], w["sources"]) == (1, [f"cpu/throughput/best {first['best_config_id']}"])
    trials = optuna.load_study(study_name="again", storage=f"sqlite:///{home}/optuna.db").get_trials()
    assert trials[0].user_attrs["baseline"] and trials[1].user_attrs["warm_start"] == w["sources"][0]
    assert trials[1].params == {"batch_size": 256}
    # one sampled trial after the warm one: it matched it (1 trial, nothing saved) or not (at least 1)
    assert w["trials_to_match"] in (None, 1) and w["saved_at_least"] == (w["trials_to_match"] is None)
    assert w["saved_trials"] == (0 if w["trials_to_match"] == 1 else 1)
