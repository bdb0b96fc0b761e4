"""The RA workstation's client of GovCA's REST API (/api/v1/tokens/*): the same methods as
ca.tokens.gateway.TokenGateway, over HTTPS (plain HTTP only to a loopback address), with the
officer's (or holder's) API token. Standard library only (urllib).

GovCA's error answers are turned back into the CAError they came from (the body's `kind`, else
the HTTP status), so the workstation procedures handle them exactly as in process."""
from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ca import errors
from ca.errors import CAError, ConfigurationError, HsmUnavailable

METHODS = ("start", "escrow", "initialised", "issue", "complete", "abort", "redeem_unblock",
           "so_pin_state", "stage_so_pin", "unblock_done")
_KINDS = {cls.__name__: cls for cls in (errors.InvalidInput, errors.BadCSR,
                                        errors.PolicyViolation, errors.NotFound, errors.Conflict,
                                        errors.PermissionDenied, errors.LintFailed,
                                        errors.IntegrityError, errors.HsmUnavailable,
                                        errors.ConfigurationError)}
_BY_STATUS = {400: errors.InvalidInput, 401: errors.PermissionDenied, 403: errors.PermissionDenied,
              404: errors.NotFound, 409: errors.Conflict, 413: errors.InvalidInput,
              415: errors.InvalidInput, 422: errors.PolicyViolation, 503: errors.HsmUnavailable}
MAX_ANSWER = 4 * 1024 * 1024


def error_from_answer(status: int, body: dict | None) -> CAError:
    err = (body or {}).get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {}
    cls = _KINDS.get(err.get("kind")) or _BY_STATUS.get(status, CAError)
    message = str(err.get("message") or f"GovCA answered HTTP {status}")
    if cls is errors.LintFailed:
        return errors.LintFailed(message, [])
    return cls(message, field=err.get("field"), code=err.get("code"))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would re-send (or drop) a body holding an SO PIN: refuse it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class HttpGateway:
    """TokenGateway's methods as POST {url}/api/v1/tokens/<method> (underscores as hyphens)."""

    def __init__(self, url: str, api_token: str, *, timeout: float = 120.0,
                 cafile: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigurationError(f"the GovCA URL must be https://host[:port] (got {url!r})",
                                     field="url")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ConfigurationError("SO PINs travel in these calls: use https:// (plain http "
                                     "only to a loopback address)", field="url")
        if not api_token or not api_token.strip():
            raise ConfigurationError("an API token is needed (govca user token USERNAME)",
                                     field="api_token")
        self.base = urllib.parse.urlunsplit((parts.scheme, parts.netloc,
                                             parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self._token = api_token.strip()
        handlers: list = [_NoRedirect()]
        if parts.scheme == "https":
            handlers.append(urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=cafile)))
        self._opener = urllib.request.build_opener(*handlers)

    def call(self, method: str, **params: Any) -> dict:
        if method not in METHODS:
            raise errors.InvalidInput(f"unknown method {method!r}", field="method")
        url = f"{self.base}/api/v1/tokens/{method.replace('_', '-')}"
        data = json.dumps({k: v for k, v in params.items() if v is not None}).encode()
        req = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json",
            "Authorization": f"Bearer {self._token}"})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return self._json(resp.read(MAX_ANSWER + 1), resp.status)
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read(MAX_ANSWER) or b"null")
            except ValueError:
                body = None
            finally:
                exc.close()
            raise error_from_answer(exc.code, body) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HsmUnavailable(f"GovCA cannot be reached at {self.base} "
                                 f"({type(reason).__name__})", code="gateway_down") from None

    @staticmethod
    def _json(raw: bytes, status: int) -> dict:
        if len(raw) > MAX_ANSWER:
            raise HsmUnavailable("GovCA's answer is too large", code="gateway_bad_answer")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if status != 200 or not isinstance(body, dict):
            raise HsmUnavailable(f"GovCA answered HTTP {status} without a JSON object",
                                 code="gateway_bad_answer")
        return body

    def __getattr__(self, name: str):
        if name not in METHODS:
            raise AttributeError(name)
        return lambda **params: self.call(name, **params)

    def close(self) -> None:
        """Nothing is kept open between calls (one connection per call)."""
