"""/api/v1/reorg: create, dry run, approve (second person), progress, failures; the OpenAPI
document holds for every operation (schemathesis)."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.ra.conftest import api_as, token_for  # noqa: F401  (fixtures)


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.include(path_regex="^/reorg").parametrize()
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_reorg_operations_match_the_document(case, token_for):  # noqa: F811
    case.call_and_validate(headers={"Authorization": f"Bearer {token_for('ra.hanoi')}"},
                           excluded_checks=[checks.positive_data_acceptance])


def test_plan_lifecycle_over_the_api(api_as, db, small_world):  # noqa: F811
    op, other = api_as("operator"), api_as("ra.hanoi")
    st, body = op.post("/api/v1/reorg/plans", json={"name": "Sáp nhập", "items": [
        {"kind": "merge_province", "sources": ["hagiang"], "target": "tuyenquang"}]})
    assert st == 201, body
    pid = body["id"]
    assert body["state"] == "draft" and body["items"][0]["source_names"] == ["Tỉnh Hà Giang"]
    # bad input: clear 4xx, nothing stored
    st, err = op.post("/api/v1/reorg/plans", json={"name": "x", "items": [
        {"kind": "merge_province", "sources": ["hagiang", "hagiang"], "target": "tuyenquang"}]})
    assert st == 400 and err["error"]["code"] == "mapped_twice"
    st, plans = op.get("/api/v1/reorg/plans")
    assert [p["id"] for p in plans] == [pid]
    # a province officer does not see the central plan
    st, err = other.get(f"/api/v1/reorg/plans/{pid}")
    assert st == 404
    st, dry = op.post(f"/api/v1/reorg/plans/{pid}/dry-run")
    assert st == 200 and dry["certificates"] > 0 and dry["hsm_rate"] > 0
    assert dry["estimated_seconds"] > 0
    st, err = op.post(f"/api/v1/reorg/plans/{pid}/approve")
    assert st == 403 and err["error"]["code"] == "two_person_rule"
    st, err = op.post(f"/api/v1/reorg/plans/{pid}/start")
    assert st == 409 and err["error"]["code"] == "not_approved"
    st, prog = op.get(f"/api/v1/reorg/plans/{pid}/progress")
    assert st == 200 and prog["state"] == "draft" and prog["total"] == 0
    st, fails = op.get(f"/api/v1/reorg/plans/{pid}/failures")
    assert st == 200 and fails == []
