"""Portal users: creation under the delegated-grant rule, argon2 passwords and TOTP secrets."""
from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ca.ra.roles import CENTRAL_ROLES, DOMAIN_ROLES, PERMISSIONS, SECOND_FACTOR_ROLES, Caller
from ca.ra.scope import Scope, subtree_ids
from ca.store.models import Organization, RaDomain, Subscriber
from ca.store.models_ra import ROLES, RaUser

HASHER = PasswordHasher()  # argon2id, library defaults (RFC 9106 second recommendation)
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD = 12


def hash_password(password: str) -> str:
    check_password_strength(password)
    return HASHER.hash(password)


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters",
                           field="password", code="weak_password")
    if len(password) > 256:
        raise InvalidInput("a password has at most 256 characters", field="password",
                           code="too_long")


def verify_password(user: RaUser, password: str) -> bool:
    try:
        return HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits


def generate_totp_secret() -> str:
    return pyotp.random_base32()


@dataclass(frozen=True)
class NewUser:
    """A created user with the secrets to hand over once (never stored in clear but TOTP)."""

    user: RaUser
    password: str
    totp_secret: str | None


def _check_grant(session: Session, by: Caller, role: str, domain: RaDomain | None,
                 org_id: int | None, subscriber: Subscriber | None) -> None:
    """A delegated admin grants only rights they hold, only inside their own scope."""
    by.require("user.grant")
    if not PERMISSIONS[role] <= by.permissions:
        raise PermissionDenied(f"a {by.role} cannot grant the role {role}", field="role",
                               code="grant_exceeds_rights")
    if by.is_central:
        return
    if domain is None or domain.id != by.domain_id:
        raise PermissionDenied("a user can be created only inside your own domain",
                               field="domain", code="grant_outside_scope")
    if by.organization_id is not None:
        allowed = subtree_ids(session, by.organization_id)
        target_org = org_id if subscriber is None else subscriber.organization_id
        if target_org is None or target_org not in allowed:
            raise PermissionDenied("a user can be created only inside your own organisation "
                                   "subtree", field="organization_id", code="grant_outside_scope")


def create_user(session: Session, by: Caller, *, username: str, role: str, at: dt.datetime,
                domain_code: str | None = None, organization_id: int | None = None,
                subscriber_ref: int | None = None, password: str | None = None,
                totp_secret: str | None = None, email: str | None = None) -> NewUser:
    """Create a user. Domain roles need a domain; subscribers need a subscriber (its domain)."""
    username = (username or "").strip().lower()
    email = clean_user_email(email)
    if not USERNAME_RE.match(username):
        raise InvalidInput("a username is 2-64 characters: a-z, 0-9, '.', '_' or '-'",
                           field="username")
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}", field="role")
    domain = subscriber = None
    if domain_code:
        domain = session.execute(select(RaDomain).where(
            RaDomain.code == domain_code)).scalar_one_or_none()
        if domain is None:
            raise NotFound(f"no RA domain with code {domain_code!r}", field="domain")
    if role in CENTRAL_ROLES and (domain or organization_id or subscriber_ref):
        raise InvalidInput("central roles have no domain, organisation or subscriber",
                           field="role")
    if role in DOMAIN_ROLES:
        if domain is None:
            raise InvalidInput(f"the role {role} needs a domain (--domain CODE)", field="domain")
        if organization_id is not None:
            org = session.get(Organization, organization_id)
            if org is None or org.domain_id != domain.id:
                raise InvalidInput("the organisation is not in that domain",
                                   field="organization_id", code="unknown_organization")
    if role == "subscriber":
        if subscriber_ref is None:
            raise InvalidInput("a subscriber user needs a subscriber (--subscriber ID)",
                               field="subscriber")
        subscriber = Scope(session, by).subscriber(int(subscriber_ref))
        domain = session.get(RaDomain, subscriber.domain_id)
        organization_id = None
        if session.execute(select(RaUser.id).where(
                RaUser.subscriber_id == subscriber.id)).first():
            raise Conflict("this subscriber already has a login", field="subscriber",
                           code="duplicate_user")
    _check_grant(session, by, role, domain, organization_id, subscriber)
    if session.execute(select(RaUser.id).where(RaUser.username == username)).first():
        raise Conflict(f"the username {username!r} is taken", field="username",
                       code="duplicate_user")
    password = password or generate_password()
    if role in SECOND_FACTOR_ROLES:
        totp_secret = totp_secret or generate_totp_secret()
    if totp_secret is not None:
        try:
            pyotp.TOTP(totp_secret).now()
        except Exception:
            raise InvalidInput("a TOTP secret is base32 text", field="totp_secret") from None
    user = RaUser(username=username, role=role, domain_id=domain.id if domain else None,
                  organization_id=organization_id if role in DOMAIN_ROLES else None,
                  subscriber_id=subscriber.id if subscriber else None,
                  password_hash=hash_password(password), totp_secret=totp_secret,
                  failed_logins=0, active=True, auth_epoch=1, created_at=at,
                  created_by=by.actor, email=email)
    session.add(user)
    session.flush()
    audit.record(session, "user.create", actor=by.actor, at=at, target=f"user:{username}",
                 domain_id=user.domain_id,
                 details={"role": role, "organization_id": user.organization_id,
                          "subscriber_id": user.subscriber_id,
                          "second_factor": totp_secret is not None, "email": email})
    return NewUser(user=user, password=password, totp_secret=totp_secret)


def clean_user_email(email: str | None) -> str | None:
    """The e-mail for notices (docs/notices.md): optional, ASCII, one '@'."""
    from ca.names import clean_email
    if email is None or not str(email).strip():
        return None
    email = clean_email(str(email).strip())
    local, at, domain = email.partition("@")
    if not (local and at and domain and "@" not in domain and "." in domain):
        raise InvalidInput("an e-mail address looks like name@agency.gov.vn", field="email")
    return email


def set_email(session: Session, user: RaUser, email: str | None, *, actor: str,
              at: dt.datetime) -> None:
    """Set or clear the user's notice address (audited)."""
    user.email = clean_user_email(email)
    audit.record(session, "user.email", actor=actor, at=at, target=f"user:{user.username}",
                 domain_id=user.domain_id, details={"email": user.email})


def find_user(session: Session, username: str) -> RaUser:
    user = session.execute(select(RaUser).where(
        RaUser.username == (username or "").strip().lower())).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user named {username!r}", field="username")
    return user


def set_password(session: Session, user: RaUser, password: str, *, actor: str,
                 at: dt.datetime) -> None:
    """Replace the password; every open session of the user ends (auth_epoch)."""
    user.password_hash = hash_password(password)
    user.auth_epoch += 1
    user.failed_logins = 0
    user.locked_until = None
    audit.record(session, "user.password", actor=actor, at=at, target=f"user:{user.username}",
                 domain_id=user.domain_id)


def unlock(session: Session, user: RaUser, *, actor: str, at: dt.datetime) -> None:
    user.failed_logins = 0
    user.locked_until = None
    audit.record(session, "user.unlock", actor=actor, at=at, target=f"user:{user.username}",
                 domain_id=user.domain_id)
