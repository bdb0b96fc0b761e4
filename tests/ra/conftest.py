"""RA fixtures: API tokens for the demo users and a JSON client that sends them."""
from __future__ import annotations

import json as _json

import pytest
from sqlalchemy import select

from ca.ra.authn import create_token
from ca.ra.roles import Caller
from ca.store.models import Organization, RaDomain, Subscriber
from ca.store.models_ra import RaUser


class Api:
    """The Flask test client with a bearer token; returns (status, json)."""

    def __init__(self, client, token: str | None) -> None:
        self.client, self.token = client, token

    def _headers(self):
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, url, **kw):
        r = self.client.get(url, headers=self._headers(), **kw)
        return r.status_code, r.get_json(silent=True)

    def post(self, url, json=None, **kw):
        if json is not None:  # ASCII-escaped, so even lone surrogates reach the server
            kw.update(data=_json.dumps(json), content_type="application/json")
        r = self.client.post(url, headers=self._headers(), **kw)
        return r.status_code, r.get_json(silent=True)


@pytest.fixture
def token_for(services):
    def make(username: str) -> str:
        return create_token(services.db, services.clock, username, actor="test").token
    return make


@pytest.fixture
def api_as(client, token_for):
    def make(username: str) -> Api:
        return Api(client, token_for(username))
    return make


@pytest.fixture
def caller_of(db):
    def make(username: str) -> Caller:
        with db.transaction() as s:
            return Caller.of(s.execute(select(RaUser).where(
                RaUser.username == username)).scalar_one())
    return make


def domain_id(db, code: str) -> int:
    with db.transaction() as s:
        return s.execute(select(RaDomain.id).where(RaDomain.code == code)).scalar_one()


def units(db, code: str) -> list[int]:
    with db.transaction() as s:
        return s.execute(select(Organization.id).join(RaDomain).where(
            RaDomain.code == code, Organization.kind == "unit").order_by(Organization.id)
        ).scalars().all()


def staff_id(db, username: str) -> int:
    with db.transaction() as s:
        return s.execute(select(Subscriber.id).where(
            Subscriber.username == username)).scalar_one()
