"""Fuzz the HTTP API from its own OpenAPI schema with schemathesis (in-process, against the ASGI
app over a SQLite store holding real rows): no 500s, every status code and response body as
documented. Schema-valid and schema-invalid (negative) cases, a few dozen per operation."""

from __future__ import annotations

from collections import Counter

import pytest
from test_api import AUTH, TOKEN, seed

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tuner import service  # noqa: E402
from tuner.server import create_app  # noqa: E402
from tuner.settings import Workspace  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip
EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 8}


def test_openapi_fuzz(tmp_path, monkeypatch):
    # /v1/devices?discover=true would start each framework's worker: not what this test is about
    monkeypatch.setattr(service, "list_devices", lambda frameworks=None: [{"framework": "torch", "kind": "cpu"}])
    ws = Workspace.resolve(tmp_path / "ws")
    ids = seed(ws.db)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    app = create_app(ws, token=TOKEN, allow_dirs=[str(allowed)])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: Counter[tuple[str, int]] = Counter()

    def fuzzer(op, mode, n):
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=n, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case):
            body = case.body
            if mode == GenerationMode.POSITIVE and isinstance(body, dict) and "workload" in body:
                # random workload names are refused (422): make most submissions acceptable
                body.update(workload="mlp-digits", device="cpu")
                body.pop("space", None)
                body.pop("study", None)
            response = case.call_and_validate(headers=AUTH, checks=CHECKS)
            seen[(case.method, response.status_code)] += 1

        return fuzz

    for result in schema.get_all_operations():
        op = result.ok()
        for mode, n in EXAMPLES.items():
            try:
                fuzzer(op, mode, n)()
            except Unsatisfiable:  # nothing to get wrong: an operation without parameters
                assert mode == GenerationMode.NEGATIVE
    assert sum(seen.values()) > 120
    # 409 (cancelling a finished sweep) needs the fuzzer to pick the one completed sweep's id,
    # which it may or may not do: test_api.py asserts that status and its body.
    for expected in [("GET", 200), ("GET", 404), ("GET", 422), ("POST", 201),
                     ("POST", 404), ("POST", 422)]:  # fmt: skip
        assert seen[expected], (expected, seen)
    # the seeded rows are still there: fuzzing read and queued, it broke nothing
    assert service.get_sweep(ws, ids["sweep"])["state"] == "completed"
