"""`govca user ...`: portal users and API tokens of the delegated RA."""
from __future__ import annotations

import click
from sqlalchemy import select

from ra_portal.cli.common import CLIError, main, read_limited, with_services

ROLE_CHOICES = ["central_operator", "central_auditor", "ra_officer", "ra_approver", "subscriber"]


@main.group()
def user():
    """Portal users (roles, delegation) and their API tokens."""


def _secret_from(path: str | None, what: str) -> str | None:
    if not path:
        return None
    text = read_limited(path, limit=4096, what=what).decode("utf-8", "replace").strip()
    if not text:
        raise CLIError(f"the {what} file is empty")
    return text


@user.command("create")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(ROLE_CHOICES))
@click.option("--domain", "domain_code", help="RA domain code (ra_officer, ra_approver), e.g. hanoi.")
@click.option("--organization", "organization_id", type=int,
              help="Limit an officer/approver to this organisation's subtree.")
@click.option("--subscriber", "subscriber_ref", help="Subscriber id or staff username (role subscriber).")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="Read the password from this file ('-' = stdin) instead of generating one.")
@click.option("--totp-secret-file", type=click.Path(dir_okay=False),
              help="Read the base32 TOTP secret from this file instead of generating one.")
@click.option("--email", help="Address for e-mail notices (approvals awaiting, failures).")
@with_services
def user_create(svc, username, role, domain_code, organization_id, subscriber_ref,
                password_file, totp_secret_file, email):
    """Create a user. A generated password and TOTP secret are printed once, here only."""
    from ca.ra.roles import Caller
    from ca.ra.users import create_user
    from ca.registry import find_subscriber
    password = _secret_from(password_file, "password")
    totp = _secret_from(totp_secret_file, "TOTP secret")
    with svc.db.transaction() as s:
        sub_id = find_subscriber(s, subscriber_ref).id if subscriber_ref else None
        new = create_user(s, Caller.system("cli"), username=username, role=role,
                          at=svc.clock.now(), domain_code=domain_code,
                          organization_id=organization_id, subscriber_ref=sub_id,
                          password=password, totp_secret=totp, email=email)
        name = new.user.username
    click.echo(f"user {name} created ({role})")
    if not password:
        click.echo(f"password: {new.password}")
    if new.totp_secret and not totp:
        click.echo(f"TOTP secret: {new.totp_secret}")
        click.echo(f"otpauth URI: otpauth://totp/GovCA:{name}?secret={new.totp_secret}"
                   f"&issuer=GovCA")


@user.command("token")
@click.argument("username")
@click.option("--name", default="api", show_default=True, help="A label for the token.")
@click.option("--expires-days", type=int, help="Lifetime in days (default: until revoked).")
@with_services
def user_token(svc, username, name, expires_days):
    """Print a fresh API token for USERNAME (shown once; only its hash is kept)."""
    from ca.ra.authn import create_token
    issued = create_token(svc.db, svc.clock, username, actor="system:cli", name=name,
                          expires_days=expires_days)
    click.echo(issued.token)
    click.echo(f"token id {issued.id} ({issued.prefix}...) for {username}", err=True)


@user.command("revoke-token")
@click.argument("token_id", type=int)
@with_services
def user_revoke_token(svc, token_id):
    """Revoke an API token by its id."""
    from ca.ra.authn import revoke_token
    revoke_token(svc.db, svc.clock, token_id, actor="system:cli")
    click.echo(f"token {token_id} revoked")


@user.command("list")
@with_services
def user_list(svc):
    """List users with their role and delegation."""
    from ca.store.models_ra import RaUser
    with svc.db.transaction() as s:
        for u in s.execute(select(RaUser).order_by(RaUser.id)).scalars():
            where = u.domain.code if u.domain else "-"
            state = "active" if u.active else "disabled"
            if u.locked_until and u.locked_until > svc.clock.now():
                state = "locked"
            click.echo(f"{u.username:<22} {u.role:<17} {where:<14} {state}")


@user.command("unlock")
@click.argument("username")
@with_services
def user_unlock(svc, username):
    """Clear a lockout after repeated failed logins."""
    from ca.ra.users import find_user, unlock
    with svc.db.transaction() as s:
        unlock(s, find_user(s, username), actor="system:cli", at=svc.clock.now())
    click.echo(f"{username} unlocked")


@main.group()
def holiday():
    """The holiday calendar used for request deadlines (working days)."""


@holiday.command("list")
@with_services
def holiday_list(svc):
    """List the public holidays (days that are not working days)."""
    from ca.store.models_ra import RaHoliday
    with svc.db.transaction() as s:
        for h in s.execute(select(RaHoliday).order_by(RaHoliday.day)).scalars():
            click.echo(f"{h.day:%Y-%m-%d}  {h.name}")


@holiday.command("add")
@click.argument("day")
@click.argument("name")
@with_services
def holiday_add(svc, day, name):
    """Add a holiday (DAY as YYYY-MM-DD)."""
    import datetime as dt
    from ca.names import clean_text
    from ca.ra.workdays import seed_holidays
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        raise CLIError(f"not a date (YYYY-MM-DD): {day!r}") from None
    name = clean_text(name, field_name="name", max_chars=128)
    from ca import audit
    with svc.db.transaction() as s:
        added = seed_holidays(s, [(date, name)])
        if added:  # a change of configuration: deadlines move with it
            audit.record(s, "config.holiday.add", actor="operator:cli", at=svc.clock.now(),
                         target=f"holiday:{date:%Y-%m-%d}", details={"name": name})
    click.echo(f"{date:%Y-%m-%d} {'added' if added else 'was already a holiday'}")
