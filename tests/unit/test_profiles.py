"""Profiles are validated when loaded: a bad profile fails at start, with a clear message."""
from __future__ import annotations

import json

import pytest

from ca.profiles.model import ProfileError, builtin_profiles, parse_profile

BASE = {"category": "subscriber", "subject": "person", "key_usage": ["digitalSignature"],
        "key_types": {"rsa": ["2048"]}, "validity_days": 365, "max_validity_days": 1826}


def test_builtin_profiles_of_the_contract():
    profiles = builtin_profiles()
    assert {"personal", "organization", "tls-server", "ocsp-signing", "sub-ca"} <= set(profiles)
    personal = profiles["personal"]
    assert personal.key_usage == {"digitalSignature", "nonRepudiation"}
    assert set(personal.extended_key_usage) == {"emailProtection", "documentSigning"}
    assert personal.email_in_san and not personal.is_ca
    for p in profiles.values():
        if p.category != "ca":
            assert p.max_validity_days <= 1826 and "keyCertSign" not in p.key_usage
    sub_ca = profiles["sub-ca"]
    assert sub_ca.is_ca and sub_ca.path_length == 0
    assert sub_ca.name_constraints_permitted_dn == "C=VN"
    assert profiles["ocsp-signing"].ocsp_nocheck


@pytest.mark.parametrize("change,text", [
    ({"colour": "red"}, "unknown settings"),
    ({"category": "boss"}, "category must be"),
    ({"key_usage": ["digitalSignature", "keyCertSign"]}, "only CA profiles"),
    ({"key_usage": ["flying"]}, "key_usage must be"),
    ({"extended_key_usage": ["magic"]}, "unknown extended key usages"),
    ({"max_validity_days": 1827, "validity_days": 1827}, "exceeds the subscriber limit"),
    ({"validity_days": 400, "max_validity_days": 365}, "exceeds max_validity_days"),
    ({"key_types": {"rsa": ["1024"]}}, "key_types"),
    ({"key_types": {"ec": ["secp521r1"]}}, "key_types"),
    ({"key_types": {"dsa": ["2048"]}}, "key_types"),
    ({"path_length": 0}, "path_length"),
    ({"certificate_policies": ["not-an-oid"]}, "not an OID"),
    ({"category": "responder", "subject": "responder"}, "responder profile needs"),
])
def test_bad_profiles_fail_at_load(change, text):
    with pytest.raises(ProfileError) as exc:
        parse_profile("x", {**BASE, **change})
    assert text in exc.value.message and exc.value.message.startswith("profile 'x': ")


def test_operator_file_is_merged_and_validated(tmp_path):
    f = tmp_path / "profiles.json"
    f.write_text(json.dumps({"personal": {"validity_days": 730}}))
    assert builtin_profiles(f)["personal"].validity_days == 730
    f.write_text(json.dumps({"personal": {"max_validity_days": 3650}}))
    with pytest.raises(ProfileError, match="exceeds the subscriber limit"):
        builtin_profiles(f)
    f.write_text(json.dumps(["personal"]))
    with pytest.raises(ProfileError, match="must map profile names"):
        builtin_profiles(f)
    f.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        builtin_profiles(f)
