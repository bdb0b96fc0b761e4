"""HSM keys through python-pkcs11 and SoftHSM: threads, fork, non-extractable, clear errors."""
from __future__ import annotations

import os
import re
import subprocess
import threading

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.errors import HsmUnavailable
from ca.keys import KeySpec
from hsm.config import HsmConfig
from hsm.keys import HsmECPrivateKey, HsmRSAPrivateKey, NonExtractable
from hsm.store import HsmKeyStore

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


@pytest.fixture(scope="module")
def test_keys(key_store):
    """An RSA-2048 and a P-256 key generated in the session token for this module."""
    made = {"rsa": key_store.generate(KeySpec("rsa", "2048"), "test-hsm-rsa"),
            "ec": key_store.generate(KeySpec("ec", "secp256r1"), "test-hsm-ec")}
    yield made
    for key in made.values():
        key_store.destroy(key.key_id)


def _sign_and_verify(key, data: bytes, variant: str) -> None:
    pub = key.public_key()
    if variant == "pkcs1":
        pub.verify(key.sign(data, padding.PKCS1v15(), hashes.SHA256()), data, padding.PKCS1v15(),
                   hashes.SHA256())
    elif variant == "pss":
        pub.verify(key.sign(data, PSS, hashes.SHA256()), data, PSS, hashes.SHA256())
    else:
        pub.verify(key.sign(data, ec.ECDSA(hashes.SHA384())), data, ec.ECDSA(hashes.SHA384()))


def test_key_classes(test_keys):
    assert isinstance(test_keys["rsa"], HsmRSAPrivateKey)
    assert isinstance(test_keys["rsa"], rsa.RSAPrivateKey)
    assert isinstance(test_keys["ec"], HsmECPrivateKey)
    assert test_keys["ec"].curve.name == "secp256r1" and test_keys["rsa"].key_size == 2048


@pytest.mark.parametrize("variant", ["pkcs1", "pss", "ecdsa"])
def test_sign_variants_verify(test_keys, variant):
    key = test_keys["ec" if variant == "ecdsa" else "rsa"]
    _sign_and_verify(key, b"v\xe1n b\xe1n", variant)


def test_concurrent_signing_from_threads(test_keys):
    """Measured: without OS locking two threads signing at once crash SoftHSM (SIGSEGV)."""
    errors: list[BaseException] = []
    done = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(30):
                variant = ("pkcs1", "pss", "ecdsa")[(n + i) % 3]
                key = test_keys["ec" if variant == "ecdsa" else "rsa"]
                _sign_and_verify(key, f"doc {n}/{i}".encode(), variant)
                done.append(1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert len(done) == 8 * 30


def test_forked_child_can_sign(test_keys):
    """The pool re-initialises the module and logs in again in a forked child (gunicorn)."""
    key = test_keys["rsa"]
    _sign_and_verify(key, b"parent before fork", "pkcs1")  # the parent's pool is in use
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            sig = key.sign(b"child", padding.PKCS1v15(), hashes.SHA256())
            os.write(write_end, sig)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        sig = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    key.public_key().verify(sig, b"child", padding.PKCS1v15(), hashes.SHA256())
    _sign_and_verify(key, b"parent after fork", "pss")  # the parent is still logged in


def test_private_key_cannot_be_exported(test_keys):
    for key in test_keys.values():
        with pytest.raises(NonExtractable):
            key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        with pytest.raises(NonExtractable):
            key.private_numbers()


def test_attributes_non_extractable_and_sensitive(key_store, test_keys):
    for key in test_keys.values():
        assert key_store.attributes(key.key_id) == {
            "sensitive": True, "extractable": False, "always_sensitive": True,
            "never_extractable": True}


def pkcs11_tool_list(hsm_config: HsmConfig) -> str:
    """The private keys of the token as the independent pkcs11-tool lists them."""
    out = subprocess.run(
        ["pkcs11-tool", "--module", hsm_config.module, "--token-label", hsm_config.token_label,
         "--login", "--pin", hsm_config.read_pin(), "--list-objects", "--type", "privkey"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def token_private_key_count(hsm_config: HsmConfig) -> int:
    return pkcs11_tool_list(hsm_config).count("Private Key Object")


def pkcs11_tool_private_keys(hsm_config: HsmConfig) -> dict[str, str]:
    """label -> 'Access:' line of every private key, as the independent pkcs11-tool sees it."""
    keys: dict[str, str] = {}
    for block in re.split(r"\n(?=Private Key Object)", pkcs11_tool_list(hsm_config)):
        label = re.search(r"label:\s*(\S+)", block)
        access = re.search(r"Access:\s*(.+)", block)
        if label and access:
            keys[label.group(1)] = access.group(1)
    return keys


def test_pkcs11_tool_shows_keys_never_extractable(hsm_config, test_keys):
    listed = pkcs11_tool_private_keys(hsm_config)
    for key in test_keys.values():
        access = listed[key.label]
        flags = {f.strip() for f in access.split(",")}
        assert {"sensitive", "always sensitive", "never extractable", "local"} <= flags, access
        assert "extractable" not in flags


def test_unknown_token_label(hsm_config):
    store = HsmKeyStore(HsmConfig(module=hsm_config.module, token_label="no-such-token",
                                  pin_file=hsm_config.pin_file))
    with pytest.raises(HsmUnavailable) as exc:
        store.load(b"\x01" * 16)
    assert exc.value.message == (f"no token labelled 'no-such-token' in {hsm_config.module}")


def test_missing_pin_file(hsm_config, tmp_path):
    store = HsmKeyStore(HsmConfig(module=hsm_config.module, token_label=hsm_config.token_label,
                                  pin_file=tmp_path / "absent"))
    with pytest.raises(HsmUnavailable) as exc:
        store.load(b"\x01" * 16)
    assert exc.value.message.startswith("cannot read the token PIN file")


def test_empty_pin_file(hsm_config, tmp_path):
    (tmp_path / "pin").write_text("\n")
    cfg = HsmConfig(module=hsm_config.module, token_label=hsm_config.token_label,
                    pin_file=tmp_path / "pin")
    with pytest.raises(HsmUnavailable, match="is empty"):
        HsmKeyStore(cfg).load(b"\x01" * 16)


def test_missing_key_is_a_clear_error(key_store):
    with pytest.raises(HsmUnavailable, match="not in token"):
        key_store.load(os.urandom(16))
