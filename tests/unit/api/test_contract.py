"""Schemathesis against the app's own OpenAPI, in-process (ASGI): no 5xx and responses match the schema.

Excluded check: positive_data_acceptance. The run spec has cross-field rules JSON Schema cannot state (e.g.
num_agents only for scenarios with a size keyword), so some schema-valid specs are rightly answered 422.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.api.main import create_app
from services.api.settings import ApiSettings
from tests.unit.api.conftest import FakeLauncher

TOKEN = "contract-token"
_app = create_app(ApiSettings(runs_dir=Path(tempfile.mkdtemp(prefix="maddpg-api-contract-")), token=TOKEN),
                  launcher=FakeLauncher())
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.auth()
class _Token:
    def get(self, case, ctx):
        return TOKEN

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_contract(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
