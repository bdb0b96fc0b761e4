"""/api/v1 organisation versions: history and rename (RA officer in scope or central operator)."""
from __future__ import annotations

from sqlalchemy.orm import object_session

from ca.ra import organizations as ra_orgs
from ca.ra.scope import Scope
from ca.store.models import Certificate
from ca.store.models_org import OrganizationVersion
from ra_portal import services
from ra_portal.api import bp, caller, json_body, only_fields


def issued_organization(c: Certificate) -> dict | None:
    """The subscriber's organisation as it was when the certificate was issued."""
    if c.organization_version_id is None:
        return None
    v = object_session(c).get(OrganizationVersion, c.organization_version_id)
    return {"id": v.organization_id, "version": v.version, "name": v.name} if v else None


@bp.get("/organizations/<int:organization_id>/versions")
def organization_versions(organization_id: int):
    svc = services()
    with svc.db.transaction() as s:
        return [ra_orgs.version_dict(v) for v in ra_orgs.history(s, caller(), organization_id)]


@bp.post("/organizations/<int:organization_id>/rename")
def rename_organization(organization_id: int):
    svc = services()
    who = caller()
    with svc.db.transaction() as s:
        Scope(s, who).organization(organization_id)  # 404 before the body is looked at
        body = only_fields(json_body(), {"name", "reason"})
        ver = ra_orgs.rename(s, who, organization_id, body.get("name"), body.get("reason"),
                             clock=svc.clock)
        return ra_orgs.version_dict(ver)
