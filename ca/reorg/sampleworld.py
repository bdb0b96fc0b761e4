"""A world of old provinces for the reorganisation: the 63 provinces of before 2025 as RA domains,
with staff, seals and issued certificates. Certificates are built by the real builder and signed by
the issuing CA's key in the HSM; only the rows are inserted in bulk (the reorganisation itself then
runs through the real issuance cycle). Used by the reorganisation tests and by bench.reorg; not
for a production instance (it invents people)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select

from ca import serial as serials
from ca.issuance.builder import CertificateContent, build
from ca.issuance.service import ca_view
from ca.issuance.signing import sign_options
from ca.keys import KeySpec
from ca.names import build_name, fold
from ca.registry import add_domain, add_organization
from ca.reorg import csvmap
from ca.reorg.structure import domain_code, short_name
from ca.store.models import Certificate, CertificateAuthority, Organization, RaDomain, Subscriber
from ca.store.models_org import current_version
from ca.subjects import subject_for

DEPARTMENTS = ["Sở Y tế", "Sở Nội vụ"]
UNITS = ["Văn phòng", "Phòng Tổ chức cán bộ"]
GIVEN = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Hoàng Cường", "Phạm Thị Dung", "Hoàng Văn Đức",
         "Vũ Thị Hạnh", "Đặng Minh Khoa", "Bùi Thị Lan", "Đỗ Quang Minh", "Ngô Thị Ngọc"]


def old_provinces(only: list[str] | None = None) -> list[str]:
    names = [old for old, _new in csvmap.parse_rows(csvmap.builtin_csv())]
    return [n for n in names if only is None or n in only]


def ensure_provinces(s, names: list[str], at: dt.datetime) -> dict[str, RaDomain]:
    out = {}
    for full in names:
        dom = s.execute(select(RaDomain).where(RaDomain.code == domain_code(full))).scalar_one_or_none()
        if dom is None:
            dom = add_domain(s, code=domain_code(full), name=full, kind="province",
                             locality=short_name(full), at=at)
            ubnd = add_organization(s, domain=dom, name=f"Ủy ban nhân dân {full}", kind="agency",
                                    parent=None, at=at)
            for dept in DEPARTMENTS:
                agency = add_organization(s, domain=dom, name=dept, kind="agency", parent=ubnd,
                                          at=at)
                for unit in UNITS:
                    add_organization(s, domain=dom, name=unit, kind="unit", parent=agency, at=at)
        out[full] = dom
    return out


def populate(db, keys, clock, profiles, *, n_persons: int, provinces: list[str] | None = None,
             seals: bool = True, base_url: str = "http://127.0.0.1:8080") -> dict:
    """Create the provinces (if missing), `n_persons` staff spread over them, a seal for each
    province's People's Committee and its first department, and one valid certificate each.
    Returns {'subscribers': [...ids], 'certificates': n}."""
    now = clock.now()
    names = old_provinces(provinces)
    with db.transaction() as s:
        doms = ensure_provinces(s, names, now)
        units, seal_orgs = [], []
        for full in names:
            dom = doms[full]
            unit_rows = s.execute(select(Organization).where(
                Organization.domain_id == dom.id, Organization.kind == "unit",
                Organization.active.is_(True)).order_by(Organization.id)).scalars().all()
            units.append((dom, unit_rows))
            tops = s.execute(select(Organization).where(
                Organization.domain_id == dom.id, Organization.parent_id.is_(None))
                .order_by(Organization.id)).scalars().all()
            if seals and tops:
                dept = s.execute(select(Organization).where(
                    Organization.parent_id == tops[0].id).order_by(Organization.id)
                ).scalars().first()
                seal_orgs += [o for o in (tops[0], dept) if o is not None]
        base = s.execute(select(Subscriber.id).order_by(Subscriber.id.desc())).scalars().first() or 0
        rows = []
        for i in range(n_persons):
            dom, unit_rows = units[i % len(units)]
            org = unit_rows[(i // len(units)) % len(unit_rows)]
            name = f"{GIVEN[i % len(GIVEN)]} {i}"
            rows.append(dict(kind="person", domain_id=dom.id, organization_id=org.id,
                             full_name=name, search_name=fold(name), id_type="CCCD",
                             id_number=f"9{base:05d}{i:06d}", email=f"nv{i}@{dom.code}.gov.vn",
                             device_type="TOKEN", created_at=now, updated_at=now))
        for j, org in enumerate(seal_orgs):
            rows.append(dict(kind="organization", domain_id=org.domain_id,
                             organization_id=org.id, full_name=org.name,
                             search_name=fold(org.name), id_type="CCCD",
                             id_number=f"8{base:05d}{j:06d}", email=f"vanthu{org.id}@gov.vn",
                             device_type="HSM", created_at=now, updated_at=now))
        s.execute(insert(Subscriber), rows)
        ids = s.execute(select(Subscriber.id).where(Subscriber.id > base)
                        .order_by(Subscriber.id)).scalars().all()
        ca = s.execute(select(CertificateAuthority).where(
            CertificateAuthority.name == "issuing")).scalar_one()
        issuer = ca_view(ca, base_url)
        opts = sign_options(KeySpec(ca.key_type, ca.key_spec), ca.signature_scheme,
                            ca.hash_algorithm)
        ca_key = keys.load(bytes.fromhex(ca.key_id), ca.key_label)
        ca_id = ca.id
        not_before = (now - dt.timedelta(days=30)).replace(microsecond=0)
        not_after = (now + dt.timedelta(days=700)).replace(microsecond=0)
        certs = []
        version_of: dict[int, int] = {}
        subjects: dict[tuple[int, str], object] = {}  # one subject_for per unit and kind
        for sub in s.execute(select(Subscriber).where(Subscriber.id.in_(ids))).scalars():
            profile = profiles["personal" if sub.kind == "person" else "organization"]
            key = ec.generate_private_key(ec.SECP256R1())
            serial = serials.generate()
            shape = subjects.get((sub.organization_id, sub.kind))
            if shape is None:
                shape = subjects[(sub.organization_id, sub.kind)] = subject_for(s, sub)
            name = build_name(dataclasses.replace(shape, common_name=sub.full_name))
            cert = build(profile, issuer, CertificateContent(
                subject=name, public_key=key.public_key(), serial=serial,
                not_before=not_before, not_after=not_after, email=sub.email)).sign(ca_key, **opts)
            der = cert.public_bytes(serialization.Encoding.DER)
            spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
            if sub.organization_id not in version_of:
                version_of[sub.organization_id] = current_version(s, sub.organization_id).id
            certs.append(dict(
                ca_id=ca_id, serial=serials.to_hex(serial), state="issued",
                subscriber_id=sub.id, profile=profile.name, subject=name.rfc4514_string(),
                not_before=not_before, not_after=not_after,
                spki_sha256=hashlib.sha256(spki).hexdigest(),
                tbs_sha256=hashlib.sha256(cert.tbs_certificate_bytes).hexdigest(), der=der,
                fingerprint_sha256=hashlib.sha256(der).hexdigest(), reserved_at=not_before,
                issued_at=not_before, organization_version_id=version_of[sub.organization_id]))
        for k in range(0, len(certs), 2000):
            s.execute(insert(Certificate), certs[k:k + 2000])
    return {"subscribers": list(ids), "certificates": len(certs)}
