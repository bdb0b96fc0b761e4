"""parse_stored_csr: a CSR the RA stored after parse_csr accepted it is parsed again at
issuance with every check but the signature (ca/csr.py), and never poisons parse_csr's memo."""
from __future__ import annotations

import pytest

from ca.csr import parse_csr, parse_stored_csr
from ca.errors import BadCSR, PolicyViolation
from tests import factories
from tests.unit import samples


def test_same_result_as_parse_csr():
    pem = factories.csr(factories.key("p256"))
    a, b = parse_csr(pem), parse_stored_csr(pem)
    assert (a.der, a.spki_sha256, a.key_spec) == (b.der, b.spki_sha256, b.key_spec)


def test_only_the_signature_is_skipped_and_the_memo_stays_clean():
    broken = samples.broken_signature(factories.csr(factories.key("rsa2048"), encoding="der"))
    assert parse_stored_csr(broken).der == broken  # what the RA had already verified
    with pytest.raises(BadCSR) as exc:  # and parse_csr still refuses it afterwards
        parse_csr(broken)
    assert exc.value.code == "csr_bad_signature"
    with pytest.raises(BadCSR) as exc:
        parse_stored_csr(samples.sha1_csr())
    assert exc.value.code == "csr_weak_hash"
    with pytest.raises(BadCSR):
        parse_stored_csr(b"not a CSR")


def test_ca_rights_are_still_refused():
    with pytest.raises(PolicyViolation) as exc:
        parse_stored_csr(samples.ca_rights_csrs()["basic_constraints"])
    assert exc.value.code == "csr_requests_ca"
