"""Realistic report data inserted in bulk: subscribers in a few provinces, thousands of
certificate rows (active, expired, revoked; several device types) and requests with deadlines."""
from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import insert, select

from ca.store.models import Certificate, CertificateAuthority, Organization, RaDomain, Subscriber
from ca.store.models_ra import RaRequest

PROVINCES = ("hanoi", "quangninh", "bacninh")
DEVICES = ("TOKEN", "TOKEN", "TOKEN", "SIM", "RSSP", "SOFT")


def generate(db, now: dt.datetime, *, per_province: int = 400, seed: int = 7) -> dict:
    rng = random.Random(seed)
    with db.transaction() as s:
        ca_id = s.execute(select(CertificateAuthority.id).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        domains = {code: s.execute(select(RaDomain.id).where(RaDomain.code == code)).scalar_one()
                   for code in PROVINCES}
        orgs = {code: s.execute(select(Organization.id).where(
            Organization.domain_id == dom)).scalars().all() for code, dom in domains.items()}
        first_sub = (s.execute(select(Subscriber.id).order_by(Subscriber.id.desc())).scalars()
                     .first() or 0) + 1
    subs, certs, reqs = [], [], []
    sid = first_sub
    for p_index, code in enumerate(PROVINCES):
        for i in range(per_province * (p_index + 1) // 2):
            subs.append(dict(id=sid, kind="person", domain_id=domains[code],
                             organization_id=rng.choice(orgs[code]), full_name=f"Cán bộ {sid}",
                             search_name=f"can bo {sid}", id_type="CCCD",
                             id_number=f"9{sid:011d}", device_type=rng.choice(DEVICES),
                             created_at=now, updated_at=now))
            for _ in range(rng.choice((0, 1, 1, 1, 2))):
                issued = now - dt.timedelta(days=rng.randrange(1, 900), hours=rng.randrange(24))
                kind = rng.random()
                not_after = issued + dt.timedelta(days=1095)
                if kind < 0.15:
                    not_after = now - dt.timedelta(days=rng.randrange(1, 300))
                revoked = issued + dt.timedelta(days=1) if 0.15 <= kind < 0.3 else None
                serial = f"{rng.getrandbits(150):038x}"
                certs.append(dict(ca_id=ca_id, serial=serial, state="issued", subscriber_id=sid,
                                  profile="personal", subject=f"CN=Cán bộ {sid}",
                                  not_before=issued, not_after=not_after,
                                  spki_sha256=f"{rng.getrandbits(256):064x}",
                                  tbs_sha256="0" * 64, reserved_at=issued, issued_at=issued,
                                  revoked_at=revoked,
                                  revocation_reason="keyCompromise" if revoked else None))
            if rng.random() < 0.5:
                rtype = rng.choice(("issue", "issue", "renew", "restore"))
                submitted = now - dt.timedelta(days=rng.randrange(1, 60), hours=rng.randrange(9))
                due = submitted + dt.timedelta(days=1 if rtype == "restore" else 4)
                state = rng.choice(("submitted", "approved", "done", "done", "issued", "rejected"))
                done = (submitted + dt.timedelta(hours=rng.randrange(1, 150))
                        if state in ("done", "issued") else None)
                reqs.append(dict(type=rtype, state=state, domain_id=domains[code],
                                 subscriber_id=sid, created_by="gen", created_at=submitted,
                                 submitted_by="gen", submitted_at=submitted, due_at=due,
                                 completed_at=done, central_required=False))
            sid += 1
    with db.transaction() as s:
        s.execute(insert(Subscriber), subs)
        s.execute(insert(Certificate), certs)
        s.execute(insert(RaRequest), reqs)
    return {"domains": domains, "subscribers": len(subs), "certificates": len(certs),
            "requests": len(reqs)}
