"""Configuration from GOVCA_* environment variables, with defaults for the embedded instance."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from hsm.config import HsmConfig


@dataclass(frozen=True)
class Settings:
    instance: Path
    database_url: str
    base_url: str
    secret_key_file: Path
    listen: str
    profiles_file: Path
    hsm: HsmConfig | None = field(default=None)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        instance = Path(env.get("GOVCA_INSTANCE", "instance")).resolve()
        db_url = env.get("GOVCA_DATABASE_URL") or f"sqlite:///{instance / 'govca.sqlite3'}"
        try:
            hsm = HsmConfig.from_env(instance, env)
        except Exception:
            hsm = None  # reported when the HSM is first needed
        return cls(
            instance=instance, database_url=db_url,
            base_url=env.get("GOVCA_BASE_URL", "http://127.0.0.1:8080").rstrip("/"),
            secret_key_file=Path(env.get("GOVCA_SECRET_KEY_FILE", instance / "secret-key")),
            listen=env.get("GOVCA_LISTEN", "127.0.0.1:8080"),
            profiles_file=Path(env.get("GOVCA_PROFILES_FILE", instance / "profiles.json")),
            hsm=hsm)

    def secret_key(self) -> str:
        """The Flask secret key, generated into the instance on first use (mode 0600)."""
        path = self.secret_key_file
        if path.exists():
            return path.read_text("utf-8").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key
