"""Sends the e-mail notices of a request after the page has committed its decision."""
from __future__ import annotations

import os

from flask import current_app

from ca.ra import notify
from ra_portal import services


def smtp_config() -> notify.SmtpConfig | None:
    ext = current_app.extensions
    if "govca_smtp" not in ext:
        ext["govca_smtp"] = notify.SmtpConfig.from_env(dict(os.environ))
    return ext["govca_smtp"]


def after_decision(request_id: int) -> None:
    config = smtp_config()
    if config is None:
        return
    with services().db.transaction() as s:
        notices = notify.request_notices(s, request_id)
    notify.send(config, notices)
