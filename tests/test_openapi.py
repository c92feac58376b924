"""schemathesis against the real server's /openapi.json, on SQLite and on PostgreSQL: no 5xx, no status code
the schema does not declare, no answer outside the declared schema or content type.

schemathesis is driven from Python (operations -> hypothesis strategies), not through its pytest plugin:
the plugin follows pytest's internals and broke a green suite on a minor pytest release (issue 14).
Bounded budget: MAX_EXAMPLES generated cases per operation, no shrinking, well under a minute per database.
The server has a token set and the calls carry it, so state-changing operations reach their handlers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from tests.harness import ServerProc, start_server

TOKEN = "openapi-test-token"
MAX_EXAMPLES = int(os.environ.get("GANSCOPE_FUZZ_EXAMPLES", "8"))  # raise it for a longer hunt
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


@pytest.fixture(params=["sqlite", "postgres"])
def api_server(request: pytest.FixtureRequest, home: Path) -> Iterator[ServerProc]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    server = start_server(home, database_url=url, token=TOKEN)
    with server.client(TOKEN) as c:
        # Something to read: a queued job and an SDK run with a few points, so reads of runs 1 and 2 answer 200.
        assert c.post("/api/jobs", json={"dataset": "ring8", "steps": 10}).status_code == 201
        run = c.post("/api/runs", json={"name": "sdk", "config": {"dataset": "ring8"}}).json()
        series = {"loss/d": {"steps": [1, 2, 3], "values": [0.5, None, 0.7]}}
        assert c.post(f"/api/runs/{run['id']}/metrics", json={"series": series}).status_code == 200
    yield server
    server.stop()


def _fuzz(operation, base_url: str, failures: list[str]) -> int:
    calls = 0

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:  # noqa: ANN001 - a schemathesis Case
        nonlocal calls
        calls += 1
        try:
            case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                                   checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - schemathesis' FailureGroup included
            # Collected, not raised: the run goes on and one report lists every operation's distinct failures.
            found = [str(e).strip()[:600] for e in getattr(exc, "exceptions", [exc])]
            failures.extend(f for f in (f"{operation.method.upper()} {operation.path}: {m}" for m in found)
                            if f not in failures)

    run()
    return calls


def test_api_conforms_to_its_schema(api_server: ServerProc) -> None:
    schema = schemathesis.openapi.from_url(api_server.url + "/openapi.json")
    failures: list[str] = []
    calls, started = 0, time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        # Server-sent event streams never end: a request/response fuzzer cannot judge them.
        if operation.path.endswith("/stream"):
            continue
        calls += _fuzz(operation, api_server.url, failures)
    print(f"{calls} generated calls in {time.monotonic() - started:.1f} s")
    assert calls > 100, f"only {calls} generated calls: the fuzzer did not reach the API"
    assert not failures, "\n\n".join(failures)
    assert "Traceback" not in api_server.log(None), api_server.log()
    assert time.monotonic() - started < 240
