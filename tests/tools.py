"""Independent checks: openssl and pkilint run as separate programs on our output."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

VENV_BIN = Path(sys.executable).parent


def pem(cert: x509.Certificate | bytes) -> bytes:
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert)
    return cert.public_bytes(serialization.Encoding.PEM)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("openssl")
    assert exe, "openssl is required for the tests"
    return subprocess.run([exe, *args], input=input, capture_output=True)


def openssl_verify(tmp: Path, leaf_pem: bytes, root_pem: bytes, untrusted_pem: bytes | None = None,
                   *extra: str) -> subprocess.CompletedProcess:
    args = ["verify", "-CAfile", str(write(tmp / "root.pem", root_pem))]
    if untrusted_pem:
        args += ["-untrusted", str(write(tmp / "untrusted.pem", untrusted_pem))]
    args += [*extra, str(write(tmp / "leaf.pem", leaf_pem))]
    return openssl(*args)


def pkilint(kind: str, path: Path, crl_type: str = "CRL") -> subprocess.CompletedProcess:
    """Run one of pkilint's command-line linters; findings at WARNING or worse make rc != 0.
    `crl_type` is CRL or ARL (a CRL of a root listing CA certificates)."""
    tool = {"cert": "lint_pkix_cert", "crl": "lint_crl", "ocsp": "lint_ocsp_response"}[kind]
    args = [str(VENV_BIN / tool), "lint", "-s", "WARNING"]
    if kind == "crl":
        args += ["-t", crl_type, "-p", "PKIX"]
    return subprocess.run(args + [str(path)], capture_output=True, text=True)
