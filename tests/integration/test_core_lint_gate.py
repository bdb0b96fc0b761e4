"""pkilint is a gate: a certificate with a lint error is never signed, and no serial is used."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ca.errors import LintFailed
from ca.issuance.service import IssueRequest
from ca.names import SubjectData
from ca.store.models import Subscriber
from tests import factories
from tests.integration.test_core_bad_input import counts


@pytest.mark.parametrize("email", ["not an e-mail", "a@b..gov.vn", "x@-bad-.vn"])
def test_lint_error_stops_issuance(db, issuance, email):
    with db.transaction() as s:
        sub = s.execute(select(Subscriber).where(Subscriber.username == "staff.hanoi.2")
                        ).scalar_one()
        sub.email = email  # registration data that slipped past validation
        sub_id = sub.id
    before = counts(db)
    with pytest.raises(LintFailed) as exc:
        issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                    subscriber_id=sub_id, csr=factories.csr()))
    assert exc.value.code == "lint_failed" and exc.value.findings
    assert "nothing was signed" in exc.value.message
    assert counts(db) == before


@pytest.mark.parametrize("dns", ["bad name!.gov.vn", "-bad-.gov.vn", "a..gov.vn"])
def test_lint_error_on_dns_name(db, issuance, dns):
    before = counts(db)
    with pytest.raises(LintFailed) as exc:
        issuance.issue(IssueRequest(ca="issuing", profile="tls-server", actor="test",
                                    csr=factories.csr(), dns_names=(dns,),
                                    subject=SubjectData(common_name="x")))
    assert any("invalid_domain_name_syntax" in f for f in exc.value.findings)
    assert counts(db) == before
