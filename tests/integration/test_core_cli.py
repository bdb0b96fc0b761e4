"""The `govca` command line of the CA core, run as a real subprocess against the test database
and the session's SoftHSM token: --help everywhere, one-sentence errors, exit codes."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from ca.revocation import revoke
from ca.store.models import AuditEvent, Certificate, CertificateAuthority
from ra_portal.cli import main
from tests import factories
from tests.tools import VENV_BIN, openssl_verify, pem
from tests.unit import samples


def cli_env(tmp_path: Path, hsm_config, **extra: str) -> dict[str, str]:
    """Environment pointing `govca` at the test database and the session's token."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GOVCA_") or k.startswith("GOVCA_TEST_BACKEND")}
    inst = tmp_path / "instance"
    inst.mkdir(exist_ok=True)
    env.update(GOVCA_INSTANCE=str(inst), GOVCA_DATABASE_URL=db_url(tmp_path),
               GOVCA_PKCS11_MODULE=hsm_config.module, GOVCA_PKCS11_TOKEN=hsm_config.token_label,
               GOVCA_PKCS11_PIN_FILE=str(hsm_config.pin_file))
    env.update(extra)
    return env


def db_url(tmp_path: Path) -> str:
    """The URL of the `db` fixture's database (same rule as tests/conftest.py)."""
    if os.environ.get("GOVCA_TEST_BACKEND", "sqlite") == "postgresql":
        return os.environ["GOVCA_TEST_DATABASE_URL"]
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


def run_cli(env: dict[str, str], *args: str, input: bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "govca"), *args], env=env, input=input,
                          capture_output=True, timeout=timeout)


def assert_clean_error(result: subprocess.CompletedProcess, exit_code: int = 1) -> str:
    """Exit status != 0, one line on stderr starting 'govca: error:', no traceback, no stdout."""
    err = result.stderr.decode("utf-8")
    assert result.returncode == exit_code, (result.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("govca: error: "), err
    assert result.stdout == b""
    return lines[0]


def counts(db) -> tuple[int, int]:
    with db.transaction() as s:
        return (s.execute(select(func.count()).select_from(Certificate)).scalar_one(),
                s.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


@pytest.fixture
def env(tmp_path, db, hsm_config):
    return cli_env(tmp_path, hsm_config)


# --- --help on every command ---------------------------------------------------------------
def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


def test_every_command_has_help():
    runner = CliRunner()
    paths = [()] + list(_commands(main))
    core = {("db", "upgrade"), ("demo", "init"), ("ca", "init-root"), ("ca", "init-issuing"),
            ("cert", "issue"), ("cert", "show"), ("ca", "recover"), ("instance", "init")}
    assert core <= set(paths)
    for path in paths:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path


# --- cert issue --------------------------------------------------------------------------------
def test_cert_issue_prints_pem_that_openssl_verifies(env, db, tmp_path):
    csr = tmp_path / "req.der"
    csr.write_bytes(factories.csr(factories.key("rsa2048"), encoding="der"))
    result = run_cli(env, "cert", "issue", "--csr", str(csr), "--subscriber", "staff.quangninh.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"issued serial" in result.stderr
    with db.transaction() as s:
        cas = {c.name: c.certificate_der for c in s.execute(select(CertificateAuthority)).scalars()}
    verify = openssl_verify(tmp_path, result.stdout, pem(cas["root"]), pem(cas["issuing"]))
    assert verify.returncode == 0, verify.stderr


def test_cert_issue_reads_stdin(env):
    result = run_cli(env, "cert", "issue", "--csr", "-", "--subscriber", "staff.hanoi.3",
                     input=factories.csr())
    assert result.returncode == 0, result.stderr
    assert b"BEGIN CERTIFICATE" in result.stdout


BAD = {
    "malformed-pem": (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\n@@\n-----END CERTIFICATE "
                      b"REQUEST-----\n", (), "not valid base64"),
    "garbage-der": (lambda: os.urandom(300), (), "not a PKCS#10"),
    "ber-not-der": (lambda: samples.ber_not_der(factories.csr(encoding="der")), (), "DER"),
    "broken-signature": (lambda: samples.broken_signature(factories.csr(encoding="der")), (),
                         "signature does not verify"),
    "rsa1024": (lambda: factories.csr(factories.key("rsa1024")), (), "too small"),
    "rsa-e3": (lambda: factories.csr(factories.key("rsa-e3")), (), "exponent 3"),
    "dsa": (lambda: factories.csr(factories.key("dsa2048")), (), "DSA"),
    "p521": (lambda: factories.csr(factories.key("p521")), (), "secp521r1"),
    "secp256k1": (lambda: factories.csr(factories.key("k256")), (), "secp256k1"),
    "sha1": (samples.sha1_csr, (), "SHA1"),
    "ca-rights": (lambda: samples.ca_rights_csrs()["basic_constraints"], (), "CA rights"),
    "oversized": (samples.oversized_csr, (), "at most 65536 bytes"),
    "control-chars": (lambda: factories.csr(cn="a\x01b"), (), "control character"),
    "over-long-cn": (factories.csr, ("--profile", "tls-server", "--cn", "x" * 65, "--dns",
                                     "a.gov.vn"), "65 characters"),
    "unknown-profile": (factories.csr, ("--profile", "nope"), "unknown profile"),
    "unknown-ca": (factories.csr, ("--ca", "nope"), "no CA named"),
    "unknown-subscriber": (factories.csr, ("--subscriber", "nobody"), "no subscriber"),
}


def _bad_args(case: str, tmp_path: Path) -> tuple[list[str], str]:
    make, extra, expected = BAD[case]
    csr = tmp_path / "req.bin"
    csr.write_bytes(make())
    args = ["cert", "issue", "--csr", str(csr)]
    if "--subscriber" not in extra and "--cn" not in extra:
        args += ["--subscriber", "staff.hanoi.1"]
    return [*args, *extra], expected


@pytest.mark.parametrize("case", sorted(BAD))
def test_cert_issue_bad_input(case, env, db, tmp_path):
    """In-process (click's runner, same environment): fast enough for every case."""
    args, expected = _bad_args(case, tmp_path)
    before = counts(db)
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("govca: error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert result.stdout == ""
    assert counts(db) == before


@pytest.mark.parametrize("case", ["garbage-der", "rsa1024", "oversized"])
def test_cert_issue_bad_input_subprocess(case, env, db, tmp_path):
    """The same through the installed `govca` script: real stderr, real exit status."""
    args, expected = _bad_args(case, tmp_path)
    before = counts(db)
    line = assert_clean_error(run_cli(env, *args))
    assert expected in line, line
    assert counts(db) == before


def test_cert_issue_missing_file(env):
    line = assert_clean_error(run_cli(env, "cert", "issue", "--csr", "/nonexistent/req.pem",
                                      "--subscriber", "staff.hanoi.1"))
    assert "cannot read /nonexistent/req.pem" in line


def test_cli_reports_unmigrated_database(tmp_path, hsm_config):
    env = cli_env(tmp_path, hsm_config, GOVCA_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    line = assert_clean_error(run_cli(env, "cert", "show", "abc"))
    assert "govca db upgrade" in line


# --- cert show ---------------------------------------------------------------------------------
def test_cert_show_prints_status(env, db, issuance, clock):
    from ca.issuance.service import IssueRequest
    from ca.registry import find_subscriber
    with db.transaction() as s:
        sub = find_subscriber(s, "staff.hanoi.4").id
    row = issuance.issue(IssueRequest(ca="issuing", profile="personal", actor="test",
                                      subscriber_id=sub, csr=factories.csr()))
    shown = run_cli(env, "cert", "show", row.serial.upper())
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.decode()
    assert f"serial:     {row.serial}" in out and "status:     valid" in out
    assert "issuer:     issuing" in out
    revoke(db, clock, serial=row.serial, reason="keyCompromise", actor="test", ca="issuing")
    out = run_cli(env, "cert", "show", row.serial).stdout.decode()
    assert "status:     revoked" in out and "keyCompromise" in out
    pem_out = run_cli(env, "cert", "show", row.serial, "--pem")
    assert pem_out.stdout == pem(row.der)


@pytest.mark.parametrize("args,text", [
    (("cert", "show", "xyz"), "not a certificate serial"),
    (("cert", "show", "abcdef12"), "no certificate with serial"),
    (("ca", "show", "nope"), "no CA named 'nope'"),
    (("ca", "init-root", "--key", "rsa1024"), "unsupported key"),
    (("ca", "init-issuing", "--name", "x", "--parent", "nope"), "does not exist"),
    (("ca", "init-root", "--name", "x", "--validity-days", "0"), "at least one day"),
])
def test_errors_go_to_stderr(env, args, text):
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.stdout == ""
    assert result.stderr.startswith("govca: error: ") and result.stderr.count("\n") == 1
    assert text in result.stderr


def test_usage_errors_exit_2(env):
    result = run_cli(env, "cert", "issue")
    assert result.returncode == 2 and b"Missing option '--csr'" in result.stderr
    assert b"Traceback" not in result.stderr


def test_ca_list_and_show(env, db):
    listed = run_cli(env, "ca", "list")
    assert listed.returncode == 0
    assert b"root" in listed.stdout and b"issuing" in listed.stdout
    shown = run_cli(env, "ca", "show", "issuing")
    assert shown.returncode == 0, shown.stderr
    assert b"sensitive=True" in shown.stdout and b"extractable=False" in shown.stdout


# --- HSM errors --------------------------------------------------------------------------------
def test_wrong_pin_is_hsm_unavailable(tmp_path, db, hsm_config):
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("000000000")
    env = cli_env(tmp_path, hsm_config, GOVCA_PKCS11_PIN_FILE=str(wrong))
    line = assert_clean_error(run_cli(env, "ca", "show", "issuing"), exit_code=3)
    assert "rejected the PIN" in line and "000000000" not in line


def test_missing_pin_file_is_hsm_unavailable(tmp_path, db, hsm_config):
    env = cli_env(tmp_path, hsm_config, GOVCA_PKCS11_PIN_FILE=str(tmp_path / "absent"))
    line = assert_clean_error(run_cli(env, "ca", "show", "issuing"), exit_code=3)
    assert "cannot read the token PIN file" in line


def test_unknown_token_is_hsm_unavailable(tmp_path, db, hsm_config):
    env = cli_env(tmp_path, hsm_config, GOVCA_PKCS11_TOKEN="no-such-token")
    line = assert_clean_error(run_cli(env, "ca", "show", "issuing"), exit_code=3)
    assert "no token labelled 'no-such-token'" in line


def test_bad_module_is_hsm_unavailable(tmp_path, db, hsm_config):
    env = cli_env(tmp_path, hsm_config, GOVCA_PKCS11_MODULE=str(tmp_path / "nope.so"))
    line = assert_clean_error(run_cli(env, "ca", "show", "issuing"), exit_code=3)
    assert "nope.so" in line
