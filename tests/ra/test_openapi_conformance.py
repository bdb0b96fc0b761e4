"""Schemathesis reads /api/v1/openapi.json and fires generated requests (valid and invalid) at
every operation: no 5xx, and every response matches the document (status, content type,
body schema); schema-violating requests are rejected.

One check is left out: `positive_data_acceptance` (a schema-valid request must succeed). Form 01
and the workflow have rules JSON Schema cannot state (the CCCD's year digits match the date of
birth, the organisation exists and is inside the caller's scope, the CSR is a valid signed
request, a renewal targets the subscriber's own certificate); those requests are answered with
a documented 4xx, which the other checks still validate."""
from __future__ import annotations

import pytest
import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, settings

from ra_portal.api.openapi import DOCUMENT


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def hanoi_token(token_for):
    return token_for("ra.hanoi")


SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def check(case, token):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                           excluded_checks=[checks.positive_data_acceptance])


# Three groups of operations, so that no single test runs long.
@schema.include(path_regex="^/(organizations|subscribers)").parametrize()
@SETTINGS
def test_registry_operations_match_the_document(case, hanoi_token):
    check(case, hanoi_token)


@schema.include(path_regex="^/requests").parametrize()
@SETTINGS
def test_request_operations_match_the_document(case, hanoi_token):
    check(case, hanoi_token)


@schema.include(path_regex="^/certificates").parametrize()
@SETTINGS
def test_certificate_operations_match_the_document(case, hanoi_token):
    check(case, hanoi_token)


@schema.include(path_regex="^/transfers").parametrize()  # docs/transfers.md
@SETTINGS
def test_transfer_operations_match_the_document(case, hanoi_token):
    check(case, hanoi_token)


def test_document_lists_every_route(app, client):
    routes = {r.rule[len("/api/v1"):].replace("<int:", "{").replace("<", "{").replace(">", "}")
              for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1")}
    routes.discard("/openapi.json")
    assert routes == set(DOCUMENT["paths"])
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.get_json()["openapi"].startswith("3.")
