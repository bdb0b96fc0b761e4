"""Roles, their permissions, and the Caller every RA service acts for."""
from __future__ import annotations

from dataclasses import dataclass

from ca.errors import PermissionDenied
from ca.store.models_ra import ROLES, RaUser

CENTRAL_ROLES = ("central_operator", "central_auditor")
DOMAIN_ROLES = ("ra_officer", "ra_approver")
SECOND_FACTOR_ROLES = ("central_operator", "ra_officer", "ra_approver")

# What each role may do. "read" sees everything in scope; "self" only the caller's own records.
PERMISSIONS: dict[str, frozenset[str]] = {
    "central_operator": frozenset({
        "read", "self", "subscriber.write", "request.create", "request.approve",
        "request.central_approve", "user.grant", "audit.read"}),
    "central_auditor": frozenset({"read", "self", "audit.read"}),
    "ra_officer": frozenset({"read", "self", "subscriber.write", "request.create", "user.grant"}),
    "ra_approver": frozenset({"read", "self", "request.approve", "user.grant"}),
    "subscriber": frozenset({"self"}),
}
assert set(PERMISSIONS) == set(ROLES)


@dataclass(frozen=True)
class Caller:
    """Who is acting: an authenticated portal user (or a system actor for the CLI)."""

    username: str
    role: str
    user_id: int | None = None
    domain_id: int | None = None
    organization_id: int | None = None
    subscriber_id: int | None = None

    @classmethod
    def of(cls, user: RaUser) -> "Caller":
        return cls(username=user.username, role=user.role, user_id=user.id,
                   domain_id=user.domain_id, organization_id=user.organization_id,
                   subscriber_id=user.subscriber_id)

    @classmethod
    def system(cls, name: str = "cli") -> "Caller":
        """The operator at the console (CLI): central rights."""
        return cls(username=f"system:{name}", role="central_operator")

    @property
    def actor(self) -> str:
        return self.username if self.username.startswith("system:") else f"user:{self.username}"

    @property
    def is_central(self) -> bool:
        return self.role in CENTRAL_ROLES

    @property
    def permissions(self) -> frozenset[str]:
        return PERMISSIONS[self.role]

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(f"the role {self.role} may not do this ({permission})",
                                   code="forbidden")
