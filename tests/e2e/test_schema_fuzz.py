"""Schemathesis against both services' OpenAPI schemas, on real servers over loopback.

Every operation but the SSE streams (endless, or tied to a download) gets bounded examples that
follow the schema and examples that break it. No answer may be a 5xx, every error answer must
carry the contract's body `{"error": {"code", "message"}}`, and every answer whose status the schema
documents must match the schema's body for it (success and error bodies alike).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.hive.main import create_app as create_hive
from services.hive.settings import HiveSettings
from services.modelserver.server import ModelServer
from services.queen.main import create_app as create_queen
from services.queen.settings import QueenSettings
from tests.conftest import FAST_HIVE
from tests.support import ServerThread, serve

EXAMPLES = {"hive": 25, "queen": 15}  # per operation and generation mode: bounded, for `make test`
# Operations expected to fail, with the reason (the queen's unvalidated ids and hive URLs were found by this
# test and fixed). Keep the mechanism: a bug found in a service another engineer owns is marked here until fixed.
# schemathesis' own strategies use `random` (hypothesis warns); pyproject turns warnings into errors
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


def operations(service: str) -> list[str]:
    """Operation labels ("GET /v2/downloads") of a service's schema, the SSE streams left out."""
    app = create_hive(HiveSettings()) if service == "hive" else create_queen(QueenSettings())
    schema = schemathesis.openapi.from_dict(app.openapi())
    labels = [result.ok().label for result in schema.get_all_operations()]
    return sorted(label for label in labels if not label.endswith("/stream"))


def made_up_hive(response: requests.Response) -> bool:
    """A 503 HIVE_UNREACHABLE naming a hive the fuzz itself registered at a made-up URL (POST /v1/hives
    runs first): the queen's right answer for a fleet pull onto it, not a failure of the queen."""
    if response.status_code != 503:
        return False
    error = json.loads(response.text).get("error") or {}
    return error.get("code") == "HIVE_UNREACHABLE" and error.get("hive_id") not in (None, "hive-f")


def check_answer(case: Case, response: requests.Response) -> None:
    where = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}"
    ok = response.status_code < 500 or made_up_hive(response)
    assert ok, f"{where} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        body: Any = json.loads(response.text)
        assert isinstance(body, dict) and set(body) == {"error"}, f"{where} -> {response.text[:500]}"
        error = body["error"]
        assert isinstance(error.get("code"), str) and error["code"].isupper(), f"{where} -> {body}"
        assert isinstance(error.get("message"), str) and error["message"], f"{where} -> {body}"
    case.validate_response(response, checks=[response_schema_conformance])


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[ServerThread, Any]]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with ModelServer(tmp / "hub") as hub:
        hub.add_file("org/repo/a.bin", 1000)
        hive_settings = HiveSettings(
            id="hive-f",
            models_dir=tmp / "models",
            hf_endpoint=hub.url,
            allowed_hosts="127.0.0.1",  # generated refs never send the hive to the wider network
            max_concurrent=2,
            **FAST_HIVE,
        )
        hive_app = create_hive(hive_settings)
        with serve(hive_app) as hive:
            queen_app = create_queen(
                QueenSettings(hives={"hive-f": hive.url}, hive_timeout=1.0, health_timeout=0.5, health_interval=0.5)
            )
            with serve(queen_app) as queen:
                yield {"hive": (hive, hive_app), "queen": (queen, queen_app)}


def cases() -> list[Any]:
    found = []
    for service in ("hive", "queen"):
        for label in operations(service):
            found.append(pytest.param(service, label, id=f"{service}-{label}"))
    return found


@pytest.mark.parametrize(("service", "label"), cases())
def test_no_5xx_and_contract_errors(services: dict[str, tuple[ServerThread, Any]], service: str, label: str) -> None:
    server, app = services[service]
    schema = schemathesis.openapi.from_dict(app.openapi())
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == label)
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    with requests.Session() as session:

        @settings(
            max_examples=EXAMPLES[service] * 2,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure, at once
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Case) -> None:
            response = case.call(base_url=server.url, session=session, timeout=10)
            check_answer(case, response)

        run()
