"""The one error hierarchy of the core; each error has a stable machine-readable `code`."""
from __future__ import annotations

from typing import Any


class CAError(Exception):
    """Base of every expected failure. `code` is stable; `message` is one English sentence;
    `field` names the input at fault; `params` carry data for translated messages."""

    code = "ca_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 **params: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code
        self.params = params

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            d["field"] = self.field
        return d


class InvalidInput(CAError):
    """The caller sent something malformed (bad PEM, bad field)."""
    code = "invalid_input"


class BadCSR(InvalidInput):
    code = "bad_csr"


class PolicyViolation(CAError):
    """Well-formed input that the profile or CA policy forbids."""
    code = "policy_violation"


class NotFound(CAError):
    code = "not_found"


class Conflict(CAError):
    """The request clashes with the current state (already exists, already revoked...)."""
    code = "conflict"


class PermissionDenied(CAError):
    code = "permission_denied"


class LintFailed(CAError):
    """The certificate about to be signed failed the linter; nothing was signed."""
    code = "lint_failed"

    def __init__(self, message: str, findings: list[str]) -> None:
        super().__init__(message)
        self.findings = findings


class IntegrityError(CAError):
    """The HSM's output does not match what was checked (wrong TBS, bad signature)."""
    code = "integrity_error"


class HsmUnavailable(CAError):
    """The HSM (PKCS#11 module or token) cannot be reached now; retry later."""
    code = "hsm_unavailable"


class ConfigurationError(CAError):
    code = "configuration_error"
