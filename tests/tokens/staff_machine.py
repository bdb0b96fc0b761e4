"""The holder's side in its own process (own SOFTHSM2_CONF): wrong PINs, sign, read the token.

Usage: python staff_machine.py MODULE LABEL COMMAND [ARGS]; prints one JSON object.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402

from ca.errors import CAError  # noqa: E402
from hsm.token_ops import StaffToken, pin_status  # noqa: E402


def main(module: str, label: str, command: str, *args: str) -> dict:
    tokens = StaffToken(module)
    info = tokens.find(label=label)
    if command == "wrong-pins":
        pin, tries = args[0], int(args[1])
        codes = []
        for _ in range(tries):
            try:
                tokens.try_login(info.serial, pin)
                codes.append("accepted")
            except CAError as exc:
                codes.append(exc.code)
        flags = tokens.info(info.serial).flags
        return {"codes": codes, "flags": flags, "status": pin_status(flags)}
    if command == "login":
        try:
            tokens.try_login(info.serial, args[0])
            return {"ok": True}
        except CAError as exc:
            return {"ok": False, "code": exc.code, "message": exc.message}
    if command == "sign":
        pin, data = args[0], bytes.fromhex(args[1])
        with tokens.user_session(info.serial, pin) as keys:
            with keys.session() as ps:
                from pkcs11 import Attribute, ObjectClass
                key_ids = [bytes(k[Attribute.ID]) for k in ps.session.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY})]
        assert len(key_ids) == 1, key_ids
        with tokens.private_key(info.serial, pin, key_ids[0]) as key:
            if isinstance(key, rsa.RSAPrivateKey):
                sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            else:
                sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
        return {"signature": sig.hex(), "serial": info.serial,
                "certificates": [c.hex() for c in tokens.certificates(info.serial)]}
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
