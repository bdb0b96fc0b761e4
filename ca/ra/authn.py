"""Authentication: password + TOTP login with lockout, and hashed, revocable API tokens."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import pyotp
from sqlalchemy import bindparam, select, update

from ca import audit
from ca.clock import Clock
from ca.errors import CAError, InvalidInput, NotFound
from ca.ra.roles import SECOND_FACTOR_ROLES, Caller
from ca.ra.users import HASHER, verify_password
from ca.store.database import Database
from ca.store.models_ra import ApiToken, RaUser

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
TOKEN_PREFIX = "gca_"
# A fixed hash to verify against when the user does not exist, so both cases cost the same.
_DUMMY_HASH = HASHER.hash("not-a-real-password-0000")


class AuthenticationFailed(CAError):
    """Wrong username, password or code: one message for all, so nothing is revealed."""
    code = "authentication_failed"


class AccountLocked(AuthenticationFailed):
    code = "account_locked"


def _code_ok(user: RaUser, otp: str | None, now: dt.datetime) -> int | None:
    """The TOTP time step the code matches (current one or one either side), else None."""
    if not user.totp_secret or not otp:
        return None
    otp = otp.strip().replace(" ", "")
    if not (otp.isdigit() and len(otp) == 6):
        return None
    totp = pyotp.TOTP(user.totp_secret)
    step = int(now.timestamp()) // totp.interval
    for candidate in (step, step - 1, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), otp):
            return candidate
    return None


def login(db: Database, clock: Clock, username: str, password: str,
          otp: str | None = None) -> RaUser:
    """Check the password (and the TOTP code for roles that need one). Five failures lock the
    account for 15 minutes. Failures are recorded, then raised, after the transaction commits."""
    now = clock.now()
    name = (username or "").strip().lower()[:64]
    failure: CAError | None = None
    with db.transaction() as s:
        user = s.execute(select(RaUser).where(RaUser.username == name)).scalar_one_or_none()
        if user is None or not user.active:
            verify_password(RaUser(password_hash=_DUMMY_HASH), password or "")
            audit.record(s, "auth.login.failed", actor=f"user:{name or '?'}", at=now,
                         details={"why": "unknown or inactive user"})
            failure = AuthenticationFailed("wrong username, password or code")
        elif user.locked_until is not None and user.locked_until > now:
            failure = AccountLocked("the account is locked after repeated failures; try again "
                                    "later", until=user.locked_until.isoformat())
        else:
            why = None
            step = None
            if not verify_password(user, password or ""):
                why = "password"
            elif user.role in SECOND_FACTOR_ROLES or user.totp_secret:
                step = _code_ok(user, otp, now)
                if step is None:
                    why = "second factor"
                elif user.totp_last_step is not None and step <= user.totp_last_step:
                    why = "second factor replayed"
            if why:
                user.failed_logins += 1
                if user.failed_logins >= MAX_FAILURES:
                    user.locked_until = now + LOCKOUT
                    user.failed_logins = 0
                    audit.record(s, "auth.lockout", actor=f"user:{name}", at=now,
                                 target=f"user:{name}", domain_id=user.domain_id)
                audit.record(s, "auth.login.failed", actor=f"user:{name}", at=now,
                             domain_id=user.domain_id, details={"why": why})
                failure = AuthenticationFailed("wrong username, password or code")
            else:
                user.failed_logins = 0
                user.locked_until = None
                user.last_login_at = now
                if step is not None:
                    user.totp_last_step = step
                if HASHER.check_needs_rehash(user.password_hash):
                    user.password_hash = HASHER.hash(password)
                audit.record(s, "auth.login", actor=f"user:{name}", at=now,
                             domain_id=user.domain_id)
    if failure is not None:
        raise failure
    return user


# --- API tokens ------------------------------------------------------------------------------
def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: int
    token: str  # shown once
    prefix: str


def create_token(db: Database, clock: Clock, username: str, *, actor: str, name: str = "api",
                 expires_days: int | None = None) -> IssuedToken:
    """A fresh random token; only its SHA-256 is stored (256 bits of entropy need no salt)."""
    now = clock.now()
    if expires_days is not None and not 1 <= expires_days <= 3650:
        raise InvalidInput("a token lives 1 to 3650 days", field="expires_days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.transaction() as s:
        user = s.execute(select(RaUser).where(
            RaUser.username == username.strip().lower())).scalar_one_or_none()
        if user is None:
            raise NotFound(f"no user named {username!r}", field="username")
        row = ApiToken(user_id=user.id, name=name[:64], prefix=token[:12],
                       token_hash=token_digest(token), created_at=now, created_by=actor,
                       expires_at=now + dt.timedelta(days=expires_days) if expires_days else None)
        s.add(row)
        s.flush()
        audit.record(s, "token.create", actor=actor, at=now, target=f"user:{user.username}",
                     domain_id=user.domain_id, details={"token_id": row.id, "prefix": row.prefix})
        return IssuedToken(id=row.id, token=token, prefix=row.prefix)


def revoke_token(db: Database, clock: Clock, token_id: int, *, actor: str) -> None:
    now = clock.now()
    with db.transaction() as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"no API token with id {token_id}", field="token_id")
        s.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                  .values(revoked_at=now))
        audit.record(s, "token.revoke", actor=actor, at=now, target=f"user:{row.user.username}",
                     domain_id=row.user.domain_id, details={"token_id": token_id})


# The token check runs on every API call: one prepared Core statement (the unique token_hash
# joined to its user, plain columns) on a pooled read connection, without an ORM session.
_TOKENS, _USERS = ApiToken.__table__, RaUser.__table__
_BY_DIGEST = (select(_TOKENS.c.id, _TOKENS.c.revoked_at, _TOKENS.c.expires_at,
                     _TOKENS.c.last_used_at, _USERS.c.active, _USERS.c.username, _USERS.c.role,
                     _USERS.c.id.label("user_id"), _USERS.c.domain_id,
                     _USERS.c.organization_id, _USERS.c.subscriber_id)
              .join_from(_TOKENS, _USERS, _USERS.c.id == _TOKENS.c.user_id)
              .where(_TOKENS.c.token_hash == bindparam("digest")))


def caller_for_token(db: Database, clock: Clock, token: str) -> Caller | None:
    """The Caller a bearer token stands for, or None (unknown, revoked, expired, user off).

    One indexed query (`_BY_DIGEST`); the last-use time is written at most every 5 minutes.
    Nothing is cached, so a revoked token or a deactivated user is refused on the very next
    call."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    now = clock.now()
    with db.read_connection() as conn:  # beside the SQLite writer, not behind it
        row = conn.execute(_BY_DIGEST, {"digest": token_digest(token)}).first()
    if row is None or row.revoked_at is not None or not row.active:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.last_used_at is None or (now - row.last_used_at) > dt.timedelta(minutes=5):
        with db.transaction() as s:
            s.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return Caller(username=row.username, role=row.role, user_id=row.user_id,
                  domain_id=row.domain_id, organization_id=row.organization_id,
                  subscriber_id=row.subscriber_id)
