"""OpenAPI description of /api/v1/tokens/*: the RA workstation's calls to GovCA (issue 6).

One operation per `ca.tokens.gateway.TokenGateway` method; the request bodies below are also
what `ra_portal.api.v1_tokens` validates (one source for the document and the checks)."""
from __future__ import annotations

from ra_portal.api.openapi import B, I, S, body, obj, ok, op, ref

TEXT = "^[^\\x00-\\x1f\\x7f]*$"  # no control characters
B64 = "^[A-Za-z0-9+/]*={0,2}$"


def text(lo: int, hi: int, **more) -> dict:
    return {"type": "string", "minLength": lo, "maxLength": hi, "pattern": TEXT, **more}


DEVICE_ID = {"type": "integer", "minimum": 1, "maximum": 2147483647}
AUTH_ID = {"type": "integer", "minimum": 1, "maximum": 2147483647}
SERIAL = text(1, 64, description="the token's CK_TOKEN_INFO.serialNumber")
SO_PIN = {"type": "string", "minLength": 8, "maxLength": 64, "pattern": "^[\\x21-\\x7e]+$",
          "description": "a random SO PIN drawn on the workstation; only its ciphertext "
                         "(under the CA HSM's wrapping key) is kept"}
ON_TOKEN = {"type": "string", "enum": ["current", "pending"]}
NSO_PIN = {"type": ["string", "null"],
           "description": "an escrowed SO PIN, released once (audited)"}

SCHEMAS = {
    "TokenStart": obj({
        "subscriber": text(1, 64, description="the holder: subscriber id or staff username"),
        "label": text(1, 32), "manufacturer": text(0, 64), "model": text(0, 64),
        "serial": {**SERIAL, "description": "only for a token whose enrolment failed: GovCA "
                   "releases its escrowed SO PIN so it can be initialised again"},
        "device_type": {"type": "string", "enum": ["TOKEN", "SIM", "SOFT", "RSSP", "HSM"]},
    }, ["subscriber", "label"], extra=False),
    "TokenStarted": obj({"device_id": I, "so_pin": NSO_PIN, "so_pin_pending": NSO_PIN,
                         "holder": S}, ["device_id", "so_pin", "holder"]),
    "TokenEscrow": obj({"device_id": DEVICE_ID, "so_pin": SO_PIN}, ["device_id", "so_pin"],
                       extra=False),
    "TokenDevice": obj({"device_id": DEVICE_ID, "serial": SERIAL}, ["device_id", "serial"],
                       extra=False),
    "TokenIssue": obj({"device_id": DEVICE_ID, "serial": SERIAL,
                       "csr": {"type": "string", "minLength": 1, "maxLength": 65536,
                               "pattern": B64, "description": "PKCS#10, DER, base64"},
                       "key_ref": {"type": "string", "minLength": 1, "maxLength": 128,
                                   "pattern": "^[0-9a-f]+$",
                                   "description": "CKA_ID of the key on the token, hex"}},
                      ["device_id", "serial", "csr", "key_ref"], extra=False),
    "TokenIssued": obj({"certificate": S, "serial": S,
                        "chain": {"type": "array", "items": S}},
                       ["certificate", "serial", "chain"]),
    "TokenAbort": obj({"device_id": DEVICE_ID, "reason": text(0, 1000), "serial": SERIAL},
                      ["device_id", "reason"], extra=False),
    "TokenAborted": obj({"revoked": {"type": "array", "items": S}, "state": S},
                        ["revoked", "state"]),
    "TokenRedeem": obj({
        "code": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": TEXT,
                 "description": "the one-time unblock code (case and separators ignored)"},
        "serial": SERIAL,
        "certificates": {"type": "array", "maxItems": 16, "items": {
            "type": "string", "maxLength": 65536, "pattern": B64},
            "description": "the certificates on the token (DER, base64): one of them must be "
                           "registered for the device"}},
        ["code", "serial", "certificates"], extra=False),
    "TokenRedeemed": obj({"device_id": I, "so_pin": NSO_PIN, "so_pin_pending": NSO_PIN,
                         "authorisation_id": I},
                        ["device_id", "so_pin", "authorisation_id"]),
    "TokenSoPinState": obj({"device_id": DEVICE_ID, "serial": SERIAL,
                            "authorisation_id": AUTH_ID, "on_token": ON_TOKEN},
                           ["device_id", "serial", "authorisation_id", "on_token"], extra=False),
    "TokenStageSoPin": obj({"device_id": DEVICE_ID, "serial": SERIAL,
                            "authorisation_id": AUTH_ID, "so_pin": SO_PIN},
                           ["device_id", "serial", "authorisation_id", "so_pin"], extra=False),
    "TokenUnblockDone": obj({"device_id": DEVICE_ID, "serial": SERIAL, "ok": B,
                             "detail": text(0, 1000), "authorisation_id": AUTH_ID,
                             "so_pin_on_token": ON_TOKEN},
                            ["device_id", "serial", "ok"], extra=False),
    "Ok": obj({"ok": B}, ["ok"]),
}

# route (under /tokens/) -> (gateway method, request schema, response schema, summary)
OPERATIONS = {
    "start": ("start", "TokenStart", "TokenStarted",
              "Enrolment step 1: register the holder's new device (or, serial given, release "
              "the SO PIN of a token whose enrolment failed)"),
    "escrow": ("escrow", "TokenEscrow", "Ok",
               "Escrow the token's new random SO PIN, sealed in the CA's HSM, before it is set"),
    "initialised": ("initialised", "TokenDevice", "Ok",
                    "The token is initialised: bind its serial to the device"),
    "issue": ("issue", "TokenIssue", "TokenIssued",
              "Certify the key generated on the token (certificate and chain, DER base64)"),
    "complete": ("complete", "TokenDevice", "Ok",
                 "Certificate and chain are on the token: the device is issued"),
    "abort": ("abort", "TokenAbort", "TokenAborted",
              "The enrolment failed: revoke what was issued for the wiped key"),
    "redeem-unblock": ("redeem_unblock", "TokenRedeem", "TokenRedeemed",
                       "Use a one-time unblock code for THIS token (serial and certificate "
                       "checked; rate limited): the escrowed SO PIN is released once"),
    "so-pin-state": ("so_pin_state", "TokenSoPinState", "Ok",
                     "During an unblock: which escrowed SO PIN opened the token"),
    "stage-so-pin": ("stage_so_pin", "TokenStageSoPin", "Ok",
                     "During an unblock: escrow the replacement SO PIN before it is set"),
    "unblock-done": ("unblock_done", "TokenUnblockDone", "Ok",
                     "The unblock ended (new user PIN set, or not): device restored"),
}

UNAVAILABLE = {"description": "The CA's HSM cannot be reached now; retry later",
               "content": {"application/json": {"schema": ref("Error")}}}


def _responses(resp: str) -> dict:
    r = ok(ref(resp), "200", "OK", 403, 409, 415, 422)
    r["503"] = UNAVAILABLE
    return r


PATHS = {
    f"/tokens/{route}": {"post": op(
        summary + ". Officer in scope (RA officer, central operator); the unblock calls also "
        "the holder. Answers carry Cache-Control: no-store.",
        _responses(resp), request_body=body(ref(req)))}
    for route, (_method, req, resp, summary) in OPERATIONS.items()
}
