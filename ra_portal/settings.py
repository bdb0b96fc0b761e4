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
    read_database_url: str | None = None  # GOVCA_READ_DATABASE_URL: a streaming replica
    read_max_lag: float = 60.0  # GOVCA_READ_DATABASE_MAX_LAG: seconds a replica may lag
    # GOVCA_OCSP_REPLICA_MAX_LAG: OCSP status reads may use the replica while it lags less than
    # this; unset (the default): OCSP reads the primary only.
    ocsp_replica_max_lag: float | None = None
    # GOVCA_SIGN_THREADS: threads in which a worker has a batch's certificates signed (the
    # approve-batch API). 1: several worker processes share the CPUs (govca serve), and a second
    # thread only adds GIL hand-overs (docs/performance-issuance.md §2d).
    sign_threads: int = 1

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
            hsm=hsm, read_database_url=read_database_url(env, db_url),
            read_max_lag=read_max_lag(env), ocsp_replica_max_lag=ocsp_replica_max_lag(env),
            sign_threads=sign_threads(env))

    def secret_key(self) -> str:
        """The Flask secret key, generated into the instance on first use (mode 0600).

        gunicorn's workers start at the same moment and each asks for the key, so the first
        start of an instance is a race: the key is written whole to a file of its own and then
        hard-linked to its name, which succeeds for one process only and never shows a
        half-written file; every other process reads the key that won."""
        path = self.secret_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass  # a sibling worker made it first: its key is the instance's
            finally:
                os.unlink(tmp)
        key = path.read_text("utf-8").strip()
        if not key:
            from ca.errors import ConfigurationError
            raise ConfigurationError(f"the secret key file {path} is empty: delete it to have "
                                     f"a new key generated", field="GOVCA_SECRET_KEY_FILE")
        return key


def read_database_url(env: dict[str, str], primary: str) -> str | None:
    """GOVCA_READ_DATABASE_URL, checked at start: a PostgreSQL URL naming a database, beside a
    PostgreSQL primary. The URL is never repeated in the message (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ca.errors import ConfigurationError
    raw = (env.get("GOVCA_READ_DATABASE_URL") or "").strip()
    if not raw:
        return None
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigurationError("GOVCA_READ_DATABASE_URL is not a database URL (expected "
                                 "postgresql+psycopg://user@replica-host:5432/govca)",
                                 field="GOVCA_READ_DATABASE_URL") from None
    if not url.drivername.startswith("postgresql"):
        raise ConfigurationError("GOVCA_READ_DATABASE_URL must be a PostgreSQL URL (a streaming "
                                 "replica of the primary), e.g. postgresql+psycopg://...",
                                 field="GOVCA_READ_DATABASE_URL")
    if not url.database:
        raise ConfigurationError("GOVCA_READ_DATABASE_URL names no database (add /govca)",
                                 field="GOVCA_READ_DATABASE_URL")
    if not primary.startswith("postgresql"):
        raise ConfigurationError("GOVCA_READ_DATABASE_URL needs a PostgreSQL primary "
                                 "(GOVCA_DATABASE_URL); with SQLite there is no replica",
                                 field="GOVCA_READ_DATABASE_URL")
    return raw


def read_max_lag(env: dict[str, str]) -> float:
    from ca.errors import ConfigurationError
    raw = (env.get("GOVCA_READ_DATABASE_MAX_LAG") or "60").strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise ConfigurationError("GOVCA_READ_DATABASE_MAX_LAG must be a number of seconds from "
                                 "0 to 86400", field="GOVCA_READ_DATABASE_MAX_LAG")
    return value


def ocsp_replica_max_lag(env: dict[str, str]) -> float | None:
    """GOVCA_OCSP_REPLICA_MAX_LAG: off unless set. A revocation must show in OCSP within
    seconds, so the bound is small (at most 30 s) and needs a replica to use."""
    from ca.errors import ConfigurationError
    raw = (env.get("GOVCA_OCSP_REPLICA_MAX_LAG") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 30:
        raise ConfigurationError("GOVCA_OCSP_REPLICA_MAX_LAG must be a number of seconds from 0 "
                                 "to 30 (a revocation must show in OCSP within seconds)",
                                 field="GOVCA_OCSP_REPLICA_MAX_LAG")
    if not (env.get("GOVCA_READ_DATABASE_URL") or "").strip():
        raise ConfigurationError("GOVCA_OCSP_REPLICA_MAX_LAG needs a replica "
                                 "(GOVCA_READ_DATABASE_URL)", field="GOVCA_OCSP_REPLICA_MAX_LAG")
    return value


def sign_threads(env: dict[str, str]) -> int:
    from ca.errors import ConfigurationError
    raw = (env.get("GOVCA_SIGN_THREADS") or "1").strip()
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 16:
        raise ConfigurationError("GOVCA_SIGN_THREADS must be a whole number from 1 to 16",
                                 field="GOVCA_SIGN_THREADS")
    return value
