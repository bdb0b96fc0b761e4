"""`govca user create` and `govca user token` against the test database."""
from __future__ import annotations

import pyotp
import pytest
from click.testing import CliRunner

from ca.ra.authn import login
from ra_portal.cli import main


@pytest.fixture
def cli_app(db, settings, clock, monkeypatch):
    from ra_portal import create_app
    from ra_portal.cli import common
    monkeypatch.setattr(common, "_app", lambda: create_app(settings, clock=clock, testing=True))
    return CliRunner()


def test_user_create_prints_secrets_once_and_they_work(cli_app, db, clock, client):
    r = cli_app.invoke(main, ["user", "create", "ra2.hanoi", "--role", "ra_officer",
                              "--domain", "hanoi"])
    assert r.exit_code == 0, r.output
    password = r.output.split("password: ")[1].split()[0]
    secret = r.output.split("TOTP secret: ")[1].split()[0]
    assert login(db, clock, "ra2.hanoi", password, pyotp.TOTP(secret).at(clock.now()))
    r = cli_app.invoke(main, ["user", "token", "ra2.hanoi"])
    assert r.exit_code == 0, r.output
    token = r.output.strip().splitlines()[0]
    resp = client.get("/api/v1/organizations", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and {o["domain"] for o in resp.get_json()} == {"hanoi"}


def test_user_create_for_staff_username_and_errors(cli_app, db, tmp_path):
    from sqlalchemy import delete
    from ca.store.models_ra import RaUser
    with db.transaction() as s:
        s.execute(delete(RaUser).where(RaUser.username == "staff.quangninh.2"))
    pw = tmp_path / "pw"
    pw.write_text("một mật khẩu dài\n")
    r = cli_app.invoke(main, ["user", "create", "staff.quangninh.2", "--role", "subscriber",
                              "--subscriber", "staff.quangninh.2", "--password-file", str(pw)])
    assert r.exit_code == 0, r.output
    assert "password:" not in r.output and "TOTP" not in r.output
    r = cli_app.invoke(main, ["user", "create", "x.y", "--role", "ra_officer",
                              "--domain", "atlantis"])
    assert r.exit_code == 1 and "atlantis" in r.output
    r = cli_app.invoke(main, ["user", "token", "nobody"])
    assert r.exit_code == 1


def test_holiday_calendar_moves_deadlines(cli_app, api_as, db):
    from tests.ra.conftest import staff_id
    r = cli_app.invoke(main, ["holiday", "add", "2026-06-02", "Ngày nghỉ thử nghiệm"])
    assert r.exit_code == 0, r.output
    assert "2026-06-02  Ngày nghỉ thử nghiệm" in cli_app.invoke(main, ["holiday", "list"]).output
    from sqlalchemy import select as _select
    from ca.store.models import AuditEvent
    with db.transaction() as s:  # a configuration change is audited
        ev = s.execute(_select(AuditEvent).where(AuditEvent.action == "config.holiday.add")
                       ).scalar_one()
        assert ev.target == "holiday:2026-06-02" and "Ngày nghỉ thử nghiệm" in ev.details
    assert cli_app.invoke(main, ["holiday", "add", "2026-02-30", "x"]).exit_code == 1
    st, req = api_as("ra.hanoi").post("/api/v1/requests", {
        "type": "restore", "subscriber_id": staff_id(db, "staff.hanoi.1")})
    assert req["due_at"] == "2026-06-03T08:00:00+00:00"  # Monday 15:00 + 1 day, Tuesday off
