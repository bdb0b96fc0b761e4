"""The e-mail outbox (docs/notices.md): notices are written in the transaction of the change
they report, delivered after its commit by a background thread and retried by the scheduler job
`deliver_notices` with back-off; a sender takes rows with a lease, so none is sent twice. A
failing SMTP server never fails the change; `last_error` keeps the exception class only."""
from __future__ import annotations

import datetime as dt
import logging
import os
import smtplib
import ssl
import threading
import unicodedata
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from sqlalchemy import event, or_, select, update
from sqlalchemy.orm import Session

from ca import audit
from ca.store.models_outbox import NoticeOutbox

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 12
BACKOFF = (60, 300, 900, 3600, 3 * 3600, 6 * 3600)  # seconds after the 1st, 2nd, ... failure
LEASE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    sender: str = "GovCA <no-reply@localhost>"
    starttls: bool = False
    username: str | None = None
    password_file: Path | None = None
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env=None) -> "SmtpConfig | None":
        """None when GOVCA_SMTP_HOST is unset: notices are then not written nor sent."""
        env = os.environ if env is None else env
        host = env.get("GOVCA_SMTP_HOST")
        if not host:
            return None
        pw = env.get("GOVCA_SMTP_PASSWORD_FILE")
        return cls(host=host, port=int(env.get("GOVCA_SMTP_PORT", "25")),
                   sender=env.get("GOVCA_SMTP_FROM", cls.sender),
                   starttls=env.get("GOVCA_SMTP_STARTTLS", "0").lower() in ("1", "true", "yes"),
                   username=env.get("GOVCA_SMTP_USER") or None,
                   password_file=Path(pw) if pw else None)


@dataclass(frozen=True)
class Notice:
    to: str
    subject: str
    body: str
    name: str | None = None  # the recipient's display name (NFC)


def nfc(text: str | None) -> str:
    return unicodedata.normalize("NFC", text or "")


def enabled() -> bool:
    return SmtpConfig.from_env() is not None


def enqueue(session: Session, clock, notices: list[Notice], *, event_name: str, ref: str,
            domain_id: int | None) -> list[int]:
    """Write the notices in the caller's transaction; they are delivered after its commit."""
    if not notices or not enabled():
        return []
    ids = enqueue_rows(session, clock, notices, event_name=event_name, ref=ref,
                       domain_id=domain_id)
    pending = session.info.setdefault("govca_outbox", [])
    if not pending:
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)
    pending.extend(ids)
    session.info["govca_outbox_clock"] = clock
    return ids


def _pack(n: Notice) -> str:
    """The display name travels with the body (first line), so the row is the whole mail."""
    return f"{n.name or ''}\n{n.body}"


def _unpack(row: NoticeOutbox) -> Notice:
    name, _, body = row.body.partition("\n")
    return Notice(row.recipient, row.subject, body, name or None)


def _after_rollback(session: Session) -> None:
    session.info.pop("govca_outbox", None)


def _after_commit(session: Session) -> None:
    ids = session.info.pop("govca_outbox", None)
    clock = session.info.pop("govca_outbox_clock", None)
    if not ids:
        return
    from ca.store.database import Database
    db = Database(session.get_bind())
    thread = threading.Thread(target=_deliver_quietly, args=(db, clock, ids),
                              name="govca-notices", daemon=True)
    thread.start()


def _deliver_quietly(db, clock, ids: list[int]) -> None:
    try:
        deliver_due(db, clock, SmtpConfig.from_env(), ids=ids)
    except Exception as exc:  # the scheduler retries; never a secret in the log
        log.warning("notices %s not delivered now (%s); the scheduler retries", ids,
                    type(exc).__name__)


def enqueue_rows(session: Session, clock, notices: list[Notice], *, event_name: str, ref: str,
                 domain_id: int | None) -> list[int]:
    """Rows without the after-commit thread (the caller delivers them itself)."""
    now = clock.now()
    rows = [NoticeOutbox(event=event_name[:48], ref=ref[:96], domain_id=domain_id,
                         recipient=n.to[:254], subject=n.subject[:300], body=_pack(n),
                         state="pending", attempts=0, created_at=now, next_attempt_at=now)
            for n in notices]
    session.add_all(rows)
    session.flush()
    return [r.id for r in rows]


def _claim(db, now: dt.datetime, ids: list[int] | None, limit: int) -> list[NoticeOutbox]:
    """Take due rows with a lease (conditional UPDATE), so two senders never send one twice."""
    with db.transaction() as s:
        q = select(NoticeOutbox.id).where(or_(
            (NoticeOutbox.state == "pending") & (NoticeOutbox.next_attempt_at <= now),
            (NoticeOutbox.state == "sending") & (NoticeOutbox.lease_until < now)))
        if ids is not None:  # right after commit: these rows, due or not
            q = select(NoticeOutbox.id).where(NoticeOutbox.id.in_(ids),
                                              NoticeOutbox.state == "pending")
        candidates = s.execute(q.order_by(NoticeOutbox.id).limit(limit)).scalars().all()
        taken = []
        for oid in candidates:
            done = s.execute(update(NoticeOutbox).where(
                NoticeOutbox.id == oid, NoticeOutbox.state.in_(("pending", "sending")),
                or_(NoticeOutbox.lease_until.is_(None), NoticeOutbox.lease_until < now))
                .values(state="sending", lease_until=now + LEASE))
            if done.rowcount == 1:
                taken.append(oid)
        return list(s.execute(select(NoticeOutbox).where(
            NoticeOutbox.id.in_(taken)).order_by(NoticeOutbox.id)).scalars()) if taken else []


def deliver_due(db, clock, config: SmtpConfig | None, *, ids: list[int] | None = None,
                limit: int = 100) -> int:
    """Send what is due (or the rows `ids`): sent rows are marked, failed ones rescheduled with
    back-off, and after MAX_ATTEMPTS given up (audited). Returns how many were accepted."""
    if config is None:
        return 0
    clock = clock or _SystemClock()
    rows = _claim(db, clock.now(), ids, limit)
    if not rows:
        return 0
    outcome: dict[int, str | None] = {}
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.username and config.password_file:
                smtp.login(config.username, config.password_file.read_text("utf-8").strip())
            for row in rows:
                try:
                    smtp.send_message(message(config, _unpack(row)))
                    outcome[row.id] = None
                except smtplib.SMTPRecipientsRefused as exc:
                    outcome[row.id] = type(exc).__name__
    except (OSError, smtplib.SMTPException) as exc:
        for row in rows:
            outcome.setdefault(row.id, type(exc).__name__)
        log.warning("e-mail notices not sent (%s after %d of %d); they stay in the outbox",
                    type(exc).__name__, sum(1 for v in outcome.values() if v is None),
                    len(rows))
    return _settle(db, clock, outcome)


def _settle(db, clock, outcome: dict[int, str | None]) -> int:
    now = clock.now()
    sent = 0
    with db.transaction() as s:
        for oid, err in outcome.items():
            row = s.get(NoticeOutbox, oid)
            if err is None:
                row.state, row.sent_at, row.lease_until = "sent", now, None
                row.attempts += 1
                sent += 1
                continue
            row.attempts += 1
            row.last_error, row.lease_until = err[:200], None
            if row.attempts >= MAX_ATTEMPTS:
                row.state = "dead"
                audit.record(s, "notice.undeliverable", actor="system:notify", at=now,
                             target=f"notice:{row.id}", domain_id=row.domain_id,
                             details={"event": row.event, "ref": row.ref,
                                      "attempts": row.attempts, "error": row.last_error})
            else:
                row.state = "pending"
                delay = BACKOFF[min(row.attempts - 1, len(BACKOFF) - 1)]
                row.next_attempt_at = now + dt.timedelta(seconds=delay)
    return sent


class _SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


def message(config: SmtpConfig, n: Notice) -> EmailMessage:
    """UTF-8 body; Subject and the display name encoded per RFC 2047 by the e-mail package."""
    msg = EmailMessage()
    msg["From"] = config.sender
    local, _, domain = n.to.partition("@")
    msg["To"] = Address(display_name=nfc(n.name), username=local, domain=domain) if n.name \
        else n.to
    msg["Subject"] = nfc(n.subject)
    msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid("govca")
    msg.set_content(nfc(n.body), charset="utf-8")
    return msg


def run_outbox(db, clock, config: SmtpConfig | None = None) -> int:
    """The scheduler job `deliver_notices`: retry what is due."""
    return deliver_due(db, clock, config if config is not None else SmtpConfig.from_env())
