"""The RA workstation over HTTP against a real `govca serve`, with real SoftHSM tokens: expired,
wrong, reused codes; a code for another token; a token that does not hold the registered
certificate; a caller outside the holder's province; the rate limit. Every refusal is clear and
leaves the code usable (nothing half-done); errors come back as the same exception classes."""
from __future__ import annotations

import base64
import datetime as dt
import re
import secrets

import pytest
from sqlalchemy import select

from ca.errors import ConfigurationError, Conflict, HsmUnavailable, NotFound, PermissionDenied
from ca.store.models import AuditEvent
from ca.store.models_tokens import KeyDevice, UnblockAuthorisation
from ca.tokens import unblock as codes
from ca.tokens.transport import HttpGateway
from tests.tokens.conftest import real_now_clock
from tests.tokens.test_done_when import _pin


def _enrol(ws, username: str) -> tuple[str, int]:
    label = "staff-" + secrets.token_hex(4)
    r = ws.govca("token", "enrol", "--token-label", label, "--subscriber", username,
                 "--pin-file", str(ws.secret_file(f"pin-{label}", _pin())), "--key", "p256")
    assert r.returncode == 0, r.stderr
    return label, int(re.search(r"enrolled device (\d+)", r.stdout).group(1))


def _code(db, device_id: int, at: dt.datetime | None = None,
          ttl: dt.timedelta = codes.CODE_TTL) -> codes.IssuedCode:
    with db.transaction() as s:
        return codes.issue_authorisation(s, device_id=device_id, actor="user:approver.hanoi",
                                         at=at or real_now_clock().now(), ttl=ttl,
                                         request_ref="test")


def _unblock(ws, label: str, code: str, as_user: str):
    return ws.govca("token", "unblock", "--token-label", label, "--code", code,
                    "--new-pin-file", str(ws.secret_file("new-" + secrets.token_hex(3), _pin())),
                    as_user=as_user)


def _state(db, device_id: int) -> str:
    with db.transaction() as s:
        return s.get(KeyDevice, device_id).state


def _unused(db, authorisation_id: int) -> bool:
    with db.transaction() as s:
        row = s.get(UnblockAuthorisation, authorisation_id)
        return row.consumed_at is None and row.cancelled_at is None


def test_refused_codes_leave_nothing_half_done(workstation, db):
    ws = workstation
    label_a, dev_a = _enrol(ws, "staff.hanoi.1")
    label_b, dev_b = _enrol(ws, "staff.hanoi.2")
    ws.staff(label_a, "wrong-pins", "000000", "12")

    # Expired: issued 20 minutes ago for 15 minutes.
    old = _code(db, dev_a, at=real_now_clock().now() - dt.timedelta(minutes=20))
    r = _unblock(ws, label_a, old.code, "staff.hanoi.1")
    assert r.returncode == 1 and "expired" in r.stderr, r.stderr
    assert _state(db, dev_a) == "locked"

    fresh = _code(db, dev_a)  # withdraws the expired one
    # A code for another token: the code of A presented with token B.
    r = _unblock(ws, label_b, fresh.code, "ra.hanoi")
    assert r.returncode == 1 and "issued for another device" in r.stderr, r.stderr
    # The token presented does not hold the certificate registered for A (serial of A, the
    # certificate of B): refused by GovCA as the same Conflict the in-process gateway raises.
    gw = HttpGateway(ws.url, ws.api_token("ra.hanoi"))
    with db.transaction() as s:
        serial_a = s.get(KeyDevice, dev_a).serial
        der_a, der_b = _der_of(s, dev_a), _der_of(s, dev_b)
    with pytest.raises(Conflict) as exc:
        gw.redeem_unblock(code=fresh.code, serial=serial_a,
                          certificates=[base64.b64encode(der_b).decode()])
    assert exc.value.code == "device_mismatch"
    # A caller outside Hà Nội gets exactly the answer of an unknown code.
    qn = HttpGateway(ws.url, ws.api_token("ra.quangninh"))
    answers = []
    for code in (fresh.code, codes.new_code()):
        with pytest.raises(PermissionDenied) as exc:
            qn.redeem_unblock(code=code, serial=serial_a,
                              certificates=[base64.b64encode(der_a).decode()])
        answers.append((exc.value.code, exc.value.message, exc.value.field))
    assert answers[0] == answers[1] and answers[0][0] == "unblock_code_wrong"
    # Another holder cannot run the unblock of B's token with their own API token.
    code_b = _code(db, dev_b)
    r = _unblock(ws, label_b, code_b.code, "staff.hanoi.1")
    assert r.returncode == 1 and "not valid" in r.stderr
    assert _unused(db, code_b.authorisation_id) and _state(db, dev_b) == "locked"
    # None of this used the code up or changed the device.
    assert _unused(db, fresh.authorisation_id) and _state(db, dev_a) == "locked"

    # The holder, with the right token, unblocks it; the code cannot be used again.
    r = _unblock(ws, label_a, fresh.code, "staff.hanoi.1")
    assert r.returncode == 0, r.stderr
    assert _state(db, dev_a) == "restored"
    r = _unblock(ws, label_a, fresh.code, "staff.hanoi.1")
    assert r.returncode == 1 and "already been used" in r.stderr


def _der_of(s, device_id: int) -> bytes:
    from ca.tokens.registry import device_certificates
    return bytes(device_certificates(s, device_id)[0].der)


def test_rate_limit_over_http(workstation, db):
    ws = workstation
    label, dev = _enrol(ws, "staff.hanoi.3")
    good = _code(db, dev)
    for _ in range(codes.MAX_FAILURES):
        r = _unblock(ws, label, codes.new_code(), "ra.hanoi")
        assert r.returncode == 1 and "not valid" in r.stderr
    r = _unblock(ws, label, good.code, "ra.hanoi")
    assert r.returncode == 1 and "too many failed unblock attempts" in r.stderr
    assert not _unused(db, good.authorisation_id)  # withdrawn by the alert
    with db.transaction() as s:
        assert s.execute(select(AuditEvent).where(
            AuditEvent.action == "device.unblock.alert")).first() is not None
    assert _state(db, dev) == "locked"


def test_http_gateway_errors_and_refusals(workstation):
    ws = workstation
    gw = HttpGateway(ws.url + "/", ws.api_token("ra.hanoi"))
    with pytest.raises(NotFound) as exc:
        gw.complete(device_id=999999, serial="x")
    assert exc.value.field == "device" and "999999" in exc.value.message
    with pytest.raises(PermissionDenied) as exc:
        HttpGateway(ws.url, "gca_not-a-token").complete(device_id=1, serial="x")
    assert exc.value.code == "unauthenticated"
    with pytest.raises(ConfigurationError):  # SO PINs never over plain HTTP to another host
        HttpGateway("http://govca.example.vn", "gca_x")
    with pytest.raises(ConfigurationError):
        HttpGateway("ftp://127.0.0.1", "gca_x")
    with pytest.raises(HsmUnavailable) as exc:
        HttpGateway("http://127.0.0.1:9", "gca_x", timeout=5).complete(device_id=1, serial="x")
    assert exc.value.code == "gateway_down"
    # The command line: no API token with a URL is a clear error before anything happens.
    r = ws.govca("token", "enrol", "--token-label", "t", "--subscriber", "staff.hanoi.1",
                 "--pin-file", str(ws.secret_file("p", "80246813")), as_user=None,
                 env={"GOVCA_API_URL": ws.url})
    assert r.returncode == 1 and "API token" in r.stderr
