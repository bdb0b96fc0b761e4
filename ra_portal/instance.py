"""The embedded instance: folder, SoftHSM configuration and token, PIN files, secret key."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from hsm.config import HsmConfig


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def random_pin(digits: int = 12) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(digits))


def softhsm_token_exists(label: str) -> bool:
    out = subprocess.run(["softhsm2-util", "--show-slots"], capture_output=True, text=True,
                         check=False)
    return any(line.strip() == f"Label:            {label}" or
               (line.strip().startswith("Label:") and line.split(":", 1)[1].strip() == label)
               for line in out.stdout.splitlines())


def init_instance(instance: Path, hsm: HsmConfig, echo=print) -> None:
    """Create what is missing; never touch what exists (idempotent)."""
    instance.mkdir(parents=True, exist_ok=True)
    os.chmod(instance, 0o700)
    if not hsm.is_softhsm:
        echo(f"PKCS#11 module {hsm.module}: token {hsm.token_label!r} must be set up with the "
             f"vendor's tools; the PIN is read from {hsm.pin_file}")
        return
    tokens = instance / "softhsm-tokens"
    tokens.mkdir(exist_ok=True)
    os.chmod(tokens, 0o700)
    conf = hsm.softhsm_conf or instance / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                        f"log.level = ERROR\nslots.removable = false\n", "utf-8")
        echo(f"wrote {conf}")
    os.environ.setdefault("SOFTHSM2_CONF", str(conf))
    if shutil.which("softhsm2-util") is None:
        raise RuntimeError("softhsm2-util not found: apt-get install softhsm2")
    if softhsm_token_exists(hsm.token_label):
        if not hsm.pin_file.exists():
            raise RuntimeError(f"token {hsm.token_label!r} exists but its PIN file "
                               f"{hsm.pin_file} is missing: restore the PIN file")
        return
    if hsm.pin_file.exists():
        raise RuntimeError(f"{hsm.pin_file} exists but token {hsm.token_label!r} does not: "
                           f"restore the token directory or remove the PIN file")
    user_pin, so_pin = random_pin(), random_pin(16)
    so_pin_file = instance / "hsm-so-pin"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", hsm.token_label,
                    "--pin", user_pin, "--so-pin", so_pin], check=True,
                   capture_output=True, text=True)
    _write_secret(hsm.pin_file, user_pin)
    _write_secret(so_pin_file, so_pin)
    echo(f"created SoftHSM token {hsm.token_label!r}; user PIN in {hsm.pin_file}, SO PIN in "
         f"{so_pin_file} (mode 0600)")
