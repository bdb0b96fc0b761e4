"""Where the PKCS#11 module, token and PIN are: from GOVCA_* variables with instance defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)


class HsmConfigError(RuntimeError):
    pass


def find_softhsm() -> str | None:
    for path in SOFTHSM_CANDIDATES:
        if os.path.exists(path):
            return path
    return None


@dataclass(frozen=True)
class HsmConfig:
    module: str
    token_label: str
    pin_file: Path
    softhsm_conf: Path | None = None
    pool_size: int = 4

    @property
    def is_softhsm(self) -> bool:
        return "softhsm" in os.path.basename(self.module).lower()

    def read_pin(self) -> str:
        try:
            pin = self.pin_file.read_text("utf-8").strip()
        except OSError as exc:
            raise HsmConfigError(f"cannot read the token PIN file {self.pin_file}: "
                                 f"{exc.strerror}") from None
        if not pin:
            raise HsmConfigError(f"the token PIN file {self.pin_file} is empty")
        return pin

    def apply_environment(self) -> None:
        """SoftHSM reads SOFTHSM2_CONF when the module initialises: set it first."""
        if self.is_softhsm and self.softhsm_conf and "SOFTHSM2_CONF" not in os.environ:
            os.environ["SOFTHSM2_CONF"] = str(self.softhsm_conf)

    @classmethod
    def from_env(cls, instance: Path, env: dict[str, str] | None = None) -> "HsmConfig":
        env = dict(os.environ if env is None else env)
        module = env.get("GOVCA_PKCS11_MODULE") or find_softhsm()
        if not module:
            raise HsmConfigError("no PKCS#11 module: install SoftHSM 2 (apt-get install softhsm2) "
                                 "or set GOVCA_PKCS11_MODULE")
        conf = instance / "softhsm2.conf"
        return cls(module=module,
                   token_label=env.get("GOVCA_PKCS11_TOKEN", "govca"),
                   pin_file=Path(env.get("GOVCA_PKCS11_PIN_FILE", instance / "hsm-user-pin")),
                   softhsm_conf=conf,
                   pool_size=int(env.get("GOVCA_PKCS11_POOL", "4")))
