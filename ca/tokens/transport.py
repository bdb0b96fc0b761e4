"""A swappable transport between the RA workstation and GovCA's TokenGateway: JSON messages over
a child process's pipes today (the GovCA side runs with its own HSM configuration); the same
messages map one-to-one onto REST calls (`POST /api/v1/tokens/<method>`) later."""
from __future__ import annotations

import json
import subprocess
from typing import IO, Any

from ca import errors
from ca.errors import CAError, HsmUnavailable

METHODS = ("start", "escrow", "initialised", "issue", "complete", "abort", "redeem_unblock",
           "so_pin_state", "stage_so_pin", "unblock_done")
_KINDS = {cls.__name__: cls for cls in (errors.InvalidInput, errors.BadCSR,
                                        errors.PolicyViolation, errors.NotFound, errors.Conflict,
                                        errors.PermissionDenied, errors.LintFailed,
                                        errors.IntegrityError, errors.HsmUnavailable,
                                        errors.ConfigurationError)}


def error_to_dict(exc: CAError) -> dict:
    kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _KINDS), "CAError")
    return {"kind": kind, "code": exc.code, "message": exc.message, "field": exc.field}


def error_from_dict(d: dict) -> CAError:
    cls = _KINDS.get(d.get("kind"), CAError)
    if cls is errors.LintFailed:
        return errors.LintFailed(d.get("message", ""), [])
    return cls(d.get("message", "GovCA refused the request"), field=d.get("field"),
               code=d.get("code"))


def serve(gateway: Any, infile: IO[str], outfile: IO[str]) -> None:
    """Answer one JSON request per line until end of input. Unexpected errors end the line
    with a generic message (details stay on the server side's stderr, never secrets)."""
    for line in infile:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            method, params = msg["method"], msg.get("params") or {}
            if method not in METHODS or not isinstance(params, dict):
                raise errors.InvalidInput(f"unknown method {method!r}", field="method")
            reply = {"result": getattr(gateway, method)(**params)}
        except CAError as exc:
            reply = {"error": error_to_dict(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"error": {"kind": "InvalidInput", "code": "bad_message",
                               "message": f"malformed request ({type(exc).__name__})"}}
        outfile.write(json.dumps(reply) + "\n")
        outfile.flush()


class PipeGateway:
    """The workstation's end: a TokenGateway in a child process (`govca token gateway-serve`)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env, text=True, bufsize=1)

    def call(self, method: str, **params: Any) -> dict:
        if self._proc.poll() is not None:
            raise HsmUnavailable("the GovCA gateway process has exited", code="gateway_down")
        try:
            self._proc.stdin.write(json.dumps({"method": method, "params": params}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise HsmUnavailable("GovCA did not answer (gateway process ended)",
                                 code="gateway_down")
        reply = json.loads(line)
        if "error" in reply:
            raise error_from_dict(reply["error"])
        return reply["result"]

    def __getattr__(self, name: str):
        if name not in METHODS:
            raise AttributeError(name)
        return lambda **params: self.call(name, **params)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
                self._proc.wait()
