"""The composition root: builds the services from settings (the only place that joins core,
HSM and database)."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from ca.clock import Clock, SystemClock
from ca.errors import HsmUnavailable
from ca.issuance.service import IssuanceService
from ca.ceremony import Ceremony
from ca.profiles.model import Profile, builtin_profiles
from ca.store.database import Database, make_engine, make_read_engine
from ra_portal.settings import Settings


def _fault_from_env():
    """Test-only fault injection: GOVCA_TEST_FAULT=after_sign kills the process at that point."""
    point = os.environ.get("GOVCA_TEST_FAULT")
    if not point:
        return lambda p: None

    def fault(p: str) -> None:
        if p == point:
            os._exit(137)
    return fault


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    profiles: dict[str, Profile]
    _keys: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sealer: object = None  # SO-PIN escrow (docs/tokens.md)
    _sealer_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def keys(self):
        """The HSM key store, opened on first use (so forked workers initialise their own)."""
        with self._lock:
            if self._keys is None:
                if self.settings.hsm is None:
                    raise HsmUnavailable("no PKCS#11 module configured: install SoftHSM 2 or "
                                         "set GOVCA_PKCS11_MODULE")
                from hsm.store import HsmKeyStore
                self._keys = HsmKeyStore(self.settings.hsm)
            return self._keys

    def escrow_sealer(self):
        """The SO-PIN escrow sealer in the CA token (hsm.escrow), its wrapping key created on
        first use (docs/tokens.md)."""
        with self._sealer_lock:
            if self._sealer is None:
                from hsm.escrow import HsmSealer
                sealer = HsmSealer(self.keys.pool)
                sealer.ensure_key()
                self._sealer = sealer
            return self._sealer

    def issuance(self) -> IssuanceService:
        service = IssuanceService(self.db, self.keys, self.clock, self.profiles,
                                  self.settings.base_url, fault=_fault_from_env())
        service.sign_threads = self.settings.sign_threads
        return service

    def ceremony(self, actor: str = "operator:cli") -> Ceremony:
        return Ceremony(self.db, self.keys, self.clock, self.settings.base_url, actor=actor)

    def close(self) -> None:
        if self._keys is not None:
            self._keys.close()
        self.db.dispose()


def build_services(settings: Settings, clock: Clock | None = None, engine=None) -> Services:
    engine = engine or make_engine(settings.database_url)
    replica = make_read_engine(settings.read_database_url) if settings.read_database_url else None
    db = Database(engine, replica, read_max_lag=settings.read_max_lag)
    return Services(settings=settings, db=db, clock=clock or SystemClock(),
                    profiles=builtin_profiles(settings.profiles_file))
