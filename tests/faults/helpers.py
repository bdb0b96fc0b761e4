"""Shared parts of the fault tests: a gunicorn GovCA on its own copy of the SoftHSM token (so
that the token can be taken away from the server without touching the test session's), API
calls over loopback HTTP, and the request/approve steps of the two-person workflow."""
from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import select

from ca.clock import SystemClock
from ca.ra.authn import create_token
from ca.store.models import Subscriber
from tests import factories
from tests.conftest import database_url
from tests.crl.server import Server, free_port


class HsmCopy:
    """A private copy of the session's token directory with its own softhsm2.conf. `remove()`
    takes the token away the way an unplugged token or a lost network HSM looks to SoftHSM:
    `token` moves the token's own directory (the module then reports the token gone),
    `module` moves the whole token directory (C_Initialize itself fails, CKR_GENERAL_ERROR)."""

    def __init__(self, hsm_config, root: Path) -> None:
        src = hsm_config.softhsm_conf.parent / "tokens"
        self.root = root
        self.tokens = root / "tokens"
        shutil.copytree(src, self.tokens)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.tokens}\nobjectstore.backend = file\n"
                             "log.level = ERROR\n")
        self._moved: list[tuple[Path, Path]] = []

    def remove(self, how: str) -> None:
        if how == "module":
            pairs = [(self.tokens, self.root / "tokens.away")]
        else:
            pairs = [(d, self.root / f"away-{d.name}") for d in self.tokens.iterdir()]
        for a, b in pairs:
            a.rename(b)
        self._moved = pairs

    def restore(self) -> None:
        for a, b in reversed(self._moved):
            b.rename(a)
        self._moved = []


def start_server(tmp_path: Path, hsm_config, *, hsm: HsmCopy | None = None,
                 scheduler_interval: float | None = None, workers: int = 2,
                 extra_env: dict | None = None, database: str | None = None) -> Server:
    instance = tmp_path / f"instance-{free_port()}"
    instance.mkdir()
    env = {"GOVCA_HSM_RETRY_SECONDS": "0.5"}
    if hsm is not None:
        env["SOFTHSM2_CONF"] = str(hsm.conf)
    env.update(extra_env or {})
    server = Server(port=free_port(), database_url=database or database_url(tmp_path),
                    hsm_config=hsm_config, instance=instance, workers=workers,
                    scheduler_interval=scheduler_interval, extra_env=env)
    try:
        server.wait_ready(60)
    except Exception:
        server.stop()
        raise
    return server


def call(base: str, method: str, path: str, token: str | None = None, body: dict | None = None,
         timeout: float = 30) -> tuple[int, dict, object]:
    """(status, headers, parsed JSON or text) of one HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers), e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw.decode(errors="replace")


def api_token(db, username: str) -> str:
    # The server runs on the system clock: its tokens must be valid now, not at the test's NOW.
    return create_token(db, SystemClock(), username, actor="test").token


def staff_ids(db, prefix: str = "staff.hanoi.") -> list[int]:
    with db.transaction() as s:
        return list(s.execute(select(Subscriber.id).where(Subscriber.username.like(prefix + "%"))
                              .order_by(Subscriber.id)).scalars())


def submit_issue(base: str, officer: str, subscriber_id: int) -> int:
    csr = factories.csr(factories.key("p256")).decode()
    st, _, req = call(base, "POST", "/api/v1/requests", officer,
                      {"type": "issue", "subscriber_id": subscriber_id, "profile": "personal",
                       "csr_pem": csr})
    assert st == 201 and req["state"] == "submitted", (st, req)
    return req["id"]


def approve_until_done(base: str, approver: str, request_id: int, deadline: float,
                       refusals: list | None = None) -> dict:
    """Approve, honouring 503 + Retry-After, until the request is carried out; each 503 is
    appended to `refusals`."""
    while True:
        st, hdrs, body = call(base, "POST", f"/api/v1/requests/{request_id}/approve", approver)
        if st == 200:
            return body
        assert st == 503, (st, body)
        assert "Retry-After" in hdrs, hdrs
        if refusals is not None:
            refusals.append((request_id, body["error"]["code"]))
        assert time.monotonic() < deadline, f"request {request_id} still refused: {body}"
        time.sleep(min(float(hdrs["Retry-After"]), 1.0))
