"""A real GovCA server for relying-party tests: gunicorn on a free loopback port against the
test database and the session's SoftHSM token, with the in-process scheduler. The process
handling is tests/serverkit.py; this keeps the constructor the relying-party and fault tests
use."""
from __future__ import annotations

from pathlib import Path

from tests.serverkit import ROOT, GovcaServer, free_port, govca_env, http

__all__ = ["ROOT", "Server", "free_port", "http"]


class Server(GovcaServer):
    def __init__(self, *, port: int, database_url: str, hsm_config, instance: Path,
                 workers: int = 2, scheduler_interval: float | None = 1.0,
                 extra_env: dict | None = None, extra_args: tuple[str, ...] = ()) -> None:
        base = f"http://127.0.0.1:{port}"
        env = govca_env(instance=instance, database_url=database_url, hsm_config=hsm_config,
                        base_url=base, scheduler_interval=scheduler_interval,
                        extra={"GOVCA_PROFILES_FILE": str(instance / "profiles.json"),
                               **(extra_env or {})})
        super().__init__(env, log_path=instance / "server.log", port=port, workers=workers,
                         extra_args=extra_args, ready_timeout=30)
        self.log = self.log_path  # the tests read server.log as a Path

    def stop(self, timeout: float = 10) -> None:
        super().stop(timeout)
