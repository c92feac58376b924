"""schemathesis against the real server's /openapi.json: no 5xx, no answer outside the declared schema.

Bounded budget: a few generated examples per operation and a wall-clock deadline per example, so
the whole file runs in about a minute. The server has a token set and the generated calls carry it,
so state-changing operations reach their handlers (auth itself is covered by test_security.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.harness import ServerProc, start_server

TOKEN = "openapi-test-token"
MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    server = start_server(tmp_path_factory.mktemp("openapi"), token=TOKEN)
    with server.client(TOKEN) as c:
        # Something to read: a queued job and an SDK run with a few points, so reads of run 1 and 2 answer 200.
        assert c.post("/api/jobs", json={"dataset": "ring8", "steps": 10}).status_code == 201
        run = c.post("/api/runs", json={"name": "sdk", "config": {"dataset": "ring8"}}).json()
        series = {"loss/d": {"steps": [1, 2, 3], "values": [0.5, None, 0.7]}}
        assert c.post(f"/api/runs/{run['id']}/metrics", json={"series": series}).status_code == 200
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: ServerProc):
    return schemathesis.openapi.from_url(api_server.url + "/openapi.json")


# Server-sent event streams never end: a request/response fuzzer cannot judge them. (The filter goes on
# the lazy schema: schemathesis rebuilds the fixture's schema with the lazy one's filters.)
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r".*/stream$")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, api_server: ServerProc) -> None:
    case.call_and_validate(base_url=api_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                           checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
