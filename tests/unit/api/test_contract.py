"""Schemathesis against the app's own OpenAPI, in-process (ASGI): no 5xx, every status code documented, and every
response's body, content type and declared headers as documented.

Generated: every operation, with schema-valid and schema-invalid requests. Explicit: the answers that generated
requests seldom reach (413, 429, 409s, a resume, non-finite numbers, NaN rewards), run through the same checks.

Excluded check: positive_data_acceptance. The run spec has rules JSON Schema cannot state (num_agents only for
scenarios with a size keyword, the memory estimate, the active-run cap), so some schema-valid requests are
rightly answered 422, 409 or 429.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, positive_data_acceptance,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

from services.api.main import create_app
from services.api.settings import ApiSettings
from tests.unit.api.conftest import FakeLauncher

TOKEN = "contract-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = {"scenario": "simple", "explorers": 1, "envs_per_explorer": 2}
_CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
                response_schema_conformance]
_app = create_app(ApiSettings(runs_dir=Path(tempfile.mkdtemp(prefix="maddpg-api-contract-")), token=TOKEN,
                              max_active_runs=10_000), launcher=FakeLauncher())
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.auth()
class _Token:
    def get(self, case, ctx):
        return TOKEN

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_contract(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


class _Api:
    """An app of its own, and calls whose responses go through schemathesis's checks."""

    def __init__(self, tmp_path: Path, **settings):
        self.runs_dir = tmp_path / "runs"
        self.app: FastAPI = create_app(ApiSettings(runs_dir=self.runs_dir, token=TOKEN, **settings),
                                       launcher=FakeLauncher())
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", self.app)

    def call(self, method: str, path: str, body=None, **parameters):
        extra = {"body": body, "media_type": "application/json"} if body is not None else {}
        case = self.schema[path.replace("RUN", "{run_id}")][method].Case(
            path_parameters={"run_id": parameters["run_id"]} if "run_id" in parameters else None, headers=AUTH,
            **extra)
        return case.call_and_validate(excluded_checks=[positive_data_acceptance])

    def post_raw(self, path: str, content: bytes):
        """POSTs bytes that no JSON encoder writes (Infinity, NaN: Python's JSON reader takes them) and checks the
        response against the schema."""
        with TestClient(self.app) as client:
            response = client.post(path, content=content, headers={**AUTH, "content-type": "application/json"})
        self.schema[path]["POST"].Case(headers=AUTH).validate_response(response, checks=_CONFORMANCE)
        return response


@pytest.fixture
def api(tmp_path) -> _Api:
    made = _Api(tmp_path, max_active_runs=2)
    yield made
    made.app.state.registry.close()


def test_the_answers_of_a_runs_life_are_documented(api):
    assert api.call("POST", "/runs", {**SMALL, "run_id": "a"}).status_code == 201
    assert api.call("POST", "/runs", {**SMALL, "run_id": "a"}).status_code == 409
    assert api.call("POST", "/runs/RUN/resume", run_id="a").status_code == 409  # running
    assert api.call("POST", "/runs/RUN/stop", run_id="a").status_code == 202
    api.app.state.registry.update("a", status="stopped")
    checkpoint = api.runs_dir / "a" / "checkpoints" / "ckpt-000000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "manifest.json").write_text("{}")
    (api.runs_dir / "a" / "rewards.csv").write_text("episode,env_steps,updates,wall_time_s,length,reward,reward_a\n"
                                                    "1,25,0,0.1,25,nan,-inf\n2,50,0,0.2,25,-1.5,-1.5\n")
    assert api.call("GET", "/runs/RUN/rewards", run_id="a").json()["reward"] == [None, -1.5]
    assert api.call("GET", "/runs/RUN", run_id="a").json()["progress"]["mean_reward_last_100"] is None
    assert api.call("POST", "/runs/RUN/resume", run_id="a").status_code == 202
    for path in ("/runs/RUN", "/runs/RUN/stop", "/runs/RUN/resume", "/runs/RUN/rewards"):
        assert api.call("GET" if path in ("/runs/RUN", "/runs/RUN/rewards") else "POST", path,
                        run_id="nope").status_code == 404


def test_the_refusals_are_documented(api):
    assert api.call("POST", "/runs", {**SMALL, "run_id": "a"}).status_code == 201
    assert api.call("POST", "/runs", {**SMALL, "run_id": "b"}).status_code == 201
    crowded = api.call("POST", "/runs", {**SMALL, "run_id": "c"})
    assert crowded.status_code == 429 and crowded.headers["retry-after"] == ["30"]
    assert api.call("POST", "/runs", {**SMALL, "exp_name": "x" * 70_000}).status_code == 413
    for field, value in [("lr", "Infinity"), ("gamma", "NaN"), ("exploration_sigma", "-Infinity")]:
        refused = api.post_raw("/runs", b'{"scenario": "simple", "%s": %s}' % (field.encode(), value.encode()))
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field]
    assert api.call("POST", "/runs", {**SMALL, "replay_size": 10**15}).status_code == 422
    memory = api.call("POST", "/runs", {**SMALL, "scenario": "simple_spread", "num_agents": 40})
    assert memory.status_code == 422 and memory.json()["detail"][0]["loc"] == ["body", "replay_size"]
