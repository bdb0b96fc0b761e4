"""E-mail notices to staff (request decided, certificate issued or revoked, expiry in 30/7
days) in Vietnamese, sent through SMTP; configured by GOVCA_SMTP_* variables."""
from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import audit
from ca.ra.workdays import VN_TZ
from ca.store.models import AuditEvent, Certificate, Subscriber
from ca.store.models_ra import RaRequest

log = logging.getLogger(__name__)
EXPIRY_DAYS = (30, 7)
TYPE_NAMES = {"issue": "cấp mới", "renew": "gia hạn", "change": "thay đổi thông tin",
              "revoke": "thu hồi", "restore": "khôi phục thiết bị lưu khóa"}


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
    def from_env(cls, env: dict[str, str]) -> "SmtpConfig | None":
        """None when GOVCA_SMTP_HOST is unset: notices are then not sent."""
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


def _greeting(sub: Subscriber) -> str:
    return f"Kính gửi Ông/Bà {sub.full_name},\n\n"


FOOTER = ("\n\nThư này được gửi tự động từ Hệ thống chứng thực chữ ký số chuyên dùng Chính phủ "
          "(GovCA). Vui lòng không trả lời thư này.\n")


def _local(t: dt.datetime) -> str:
    return t.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M")


def request_notices(session: Session, request_id: int) -> list[Notice]:
    """What the subscriber should hear about the request in its current state."""
    req = session.get(RaRequest, request_id)
    if req is None:
        return []
    sub = session.get(Subscriber, req.subscriber_id)
    if sub is None or not sub.email:
        return []
    kind = TYPE_NAMES.get(req.type, req.type)
    if req.state == "rejected":
        text = (f"Yêu cầu {kind} số {req.id} của Ông/Bà đã bị từ chối."
                + (f"\nLý do: {req.decision_note}" if req.decision_note else ""))
        return [Notice(sub.email, f"[GovCA] Yêu cầu {kind} số {req.id} bị từ chối",
                       _greeting(sub) + text + FOOTER)]
    if req.state == "issued" and req.certificate_serial:
        cert = session.execute(select(Certificate).where(
            Certificate.serial == req.certificate_serial)).scalars().first()
        until = f" Chứng thư có hiệu lực đến {_local(cert.not_after)}." if cert else ""
        return [Notice(sub.email, f"[GovCA] Chứng thư số đã được cấp (yêu cầu số {req.id})",
                       _greeting(sub) + f"Yêu cầu {kind} số {req.id} đã được phê duyệt và "
                       f"chứng thư số {req.certificate_serial} đã được cấp.{until}\n"
                       "Ông/Bà có thể đăng nhập cổng GovCA để tải chứng thư." + FOOTER)]
    if req.state == "done" and req.type == "revoke":
        return [Notice(sub.email, f"[GovCA] Chứng thư số {req.target_serial} đã bị thu hồi",
                       _greeting(sub) + f"Chứng thư số {req.target_serial} đã bị thu hồi "
                       f"(lý do: {req.reason}) theo yêu cầu số {req.id}. Chữ ký tạo sau thời "
                       "điểm thu hồi sẽ không còn hợp lệ." + FOOTER)]
    if req.state == "approved":
        return [Notice(sub.email, f"[GovCA] Yêu cầu {kind} số {req.id} đã được phê duyệt",
                       _greeting(sub) + f"Yêu cầu {kind} số {req.id} đã được phê duyệt."
                       + FOOTER)]
    return []


def expiry_notices(session: Session, now: dt.datetime, *, actor: str = "system:notify"
                   ) -> list[Notice]:
    """Reminders for certificates expiring within 30 and 7 days; each one once (recorded in
    the audit trail in the caller's transaction, so a reminder is not sent twice)."""
    out = []
    for days in EXPIRY_DAYS:
        action = f"notice.expiry.{days}"
        rows = session.execute(select(Certificate, Subscriber).join(
            Subscriber, Certificate.subscriber_id == Subscriber.id).where(
            Certificate.state == "issued", Certificate.revoked_at.is_(None),
            Certificate.not_after > now,
            Certificate.not_after <= now + dt.timedelta(days=days))).all()
        for cert, sub in rows:
            target = f"certificate:{cert.serial}"
            if not sub.email or session.execute(select(AuditEvent.id).where(
                    AuditEvent.action == action, AuditEvent.target == target)).first():
                continue
            if days == 30 and cert.not_after <= now + dt.timedelta(days=7):
                continue  # inside 7 days only the 7-day reminder is sent
            audit.record(session, action, actor=actor, at=now, target=target,
                         domain_id=sub.domain_id, details={"subscriber_id": sub.id})
            out.append(Notice(sub.email, f"[GovCA] Chứng thư số sắp hết hạn ({days} ngày)",
                              _greeting(sub) + f"Chứng thư số {cert.serial} của Ông/Bà sẽ hết "
                              f"hạn lúc {_local(cert.not_after)}. Vui lòng đề nghị gia hạn qua "
                              "đơn vị quản lý trực tiếp hoặc trên cổng GovCA." + FOOTER))
    return out


def send(config: SmtpConfig | None, notices: list[Notice]) -> int:
    """Send the notices (one SMTP session); failures are logged without addresses or secrets
    and never raised. Returns how many were accepted."""
    if config is None or not notices:
        return 0
    sent = 0
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.username and config.password_file:
                smtp.login(config.username, config.password_file.read_text("utf-8").strip())
            for n in notices:
                msg = EmailMessage()
                msg["From"], msg["To"], msg["Subject"] = config.sender, n.to, n.subject
                msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid("govca")
                msg.set_content(n.body, charset="utf-8")
                smtp.send_message(msg)
                sent += 1
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("e-mail notices not sent (%s after %d of %d)", type(exc).__name__, sent,
                    len(notices))
    return sent


def run_expiry_reminders(db, clock, config: SmtpConfig | None) -> int:
    """One pass of the 30/7-day reminders (for a scheduler job or a command)."""
    if config is None:
        return 0
    with db.transaction() as s:
        notices = expiry_notices(s, clock.now())
    return send(config, notices)
