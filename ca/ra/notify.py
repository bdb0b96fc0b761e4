"""E-mail notices in Vietnamese through an outbox (docs/notices.md).

The domain calls `request_event` / `certificate_revoked` in the transaction of the change
(request submitted, rejected, issued, done, failed; certificate revoked): the notices are
written to `notice_outbox` in that transaction, so every path (API, pages, CLI, scheduler)
notifies and nothing is announced that did not happen. After the commit a background thread
delivers them; the scheduler job `deliver_notices` retries what is still pending (SMTP down,
process crashed after commit) with back-off. A failing SMTP server never fails the change.

Who hears what:
- staff (the subscriber's e-mail): certificate issued (the approval of their request), request
  rejected, restore approved, certificate revoked (any path), expiry in 30 and 7 days;
- approvers of the request's domain (RaUser.email; central operators too when the profile needs
  central approval): a request awaits your approval; the domain's officers: a request awaits
  processing (not the person who prepared or submitted it);
- officers and approvers of the domain: a request failed.
Never in a mail: PINs, unblock codes, API tokens, passwords (the templates take none).
GOVCA_SMTP_HOST unset: no notice is written or sent.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ca import audit
from ca.ra.outbox import (Notice, SmtpConfig, deliver_due, enabled, enqueue, enqueue_rows,
                          nfc)
from ca.ra.workdays import VN_TZ
from ca.store.models import AuditEvent, Certificate, Subscriber
from ca.store.models_ra import RaRequest, RaUser

EXPIRY_DAYS = (30, 7)
TYPE_NAMES = {"issue": "cấp mới", "renew": "gia hạn", "change": "thay đổi thông tin",
              "revoke": "thu hồi", "restore": "khôi phục thiết bị lưu khóa"}
REASON_NAMES = {"keyCompromise": "lộ khóa bí mật", "cACompromise": "lộ khóa của CA",
                "affiliationChanged": "thay đổi đơn vị công tác", "superseded": "đã được thay thế",
                "cessationOfOperation": "ngừng sử dụng",
                "privilegeWithdrawn": "bị rút quyền sử dụng", "unspecified": "không nêu"}

# -- templates ----------------------------------------------------------------------------------
FOOTER = ("\n\nThư này được gửi tự động từ Hệ thống chứng thực chữ ký số chuyên dùng Chính phủ "
          "(GovCA). Vui lòng không trả lời thư này.\n")


def _local(t: dt.datetime) -> str:
    return t.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M")


def _to_staff(sub: Subscriber, subject: str, text: str) -> Notice:
    name = nfc(sub.full_name)
    return Notice(sub.email, nfc(subject), f"Kính gửi Ông/Bà {name},\n\n{nfc(text)}{FOOTER}",
                  name)


def _to_user(user: RaUser, subject: str, text: str) -> Notice:
    return Notice(user.email, nfc(subject),
                  f"Kính gửi {nfc(user.username)},\n\n{nfc(text)}{FOOTER}", None)


def _staff_notices(session: Session, req: RaRequest, sub: Subscriber, kind: str) -> list[Notice]:
    if not sub.email:
        return []
    if req.state == "rejected":
        text = (f"Yêu cầu {kind} số {req.id} của Ông/Bà đã bị từ chối."
                + (f"\nLý do: {req.decision_note}" if req.decision_note else ""))
        return [_to_staff(sub, f"[GovCA] Yêu cầu {kind} số {req.id} bị từ chối", text)]
    if req.state == "issued" and req.certificate_serial:
        cert = session.execute(select(Certificate).where(
            Certificate.serial == req.certificate_serial)).scalars().first()
        until = f" Chứng thư có hiệu lực đến {_local(cert.not_after)}." if cert else ""
        return [_to_staff(sub, f"[GovCA] Chứng thư số đã được cấp (yêu cầu số {req.id})",
                          f"Yêu cầu {kind} số {req.id} đã được phê duyệt và chứng thư số "
                          f"{req.certificate_serial} đã được cấp.{until}\nÔng/Bà có thể đăng "
                          "nhập cổng GovCA để tải chứng thư.")]
    if req.state == "done" and req.type == "restore":
        # The one-time code is handed over by the RA office, never by e-mail.
        return [_to_staff(sub, f"[GovCA] Yêu cầu {kind} số {req.id} đã được phê duyệt",
                          f"Yêu cầu {kind} số {req.id} đã được phê duyệt. Mã mở khóa dùng một "
                          "lần được cán bộ đăng ký trao trực tiếp cho Ông/Bà; GovCA không bao "
                          "giờ gửi mã hay mã PIN qua thư điện tử.")]
    return []


def _domain_users(session: Session, req: RaRequest, roles: tuple[str, ...],
                  central: bool = False) -> list[RaUser]:
    """Active users with an e-mail, of `roles` in the request's domain whose delegation covers
    the subscriber (an organisation-limited officer only hears of their subtree); central
    operators too when `central`."""
    from ca.ra.scope import subtree_ids
    cond = (RaUser.role.in_(roles)) & (RaUser.domain_id == req.domain_id)
    if central:
        cond = or_(cond, RaUser.role == "central_operator")
    users = session.execute(select(RaUser).where(
        cond, RaUser.active.is_(True), RaUser.email.is_not(None), RaUser.email != "")
        .order_by(RaUser.id)).scalars().all()
    sub = session.get(Subscriber, req.subscriber_id)
    out = []
    for u in users:
        if u.organization_id is not None and u.role != "central_operator":
            if sub is None or sub.organization_id not in subtree_ids(session, u.organization_id):
                continue
        out.append(u)
    return out


def request_notices(session: Session, request_id: int, event_name: str | None = None
                    ) -> list[Notice]:
    """What staff and officers should hear about the request in its current state."""
    req = session.get(RaRequest, request_id)
    if req is None:
        return []
    sub = session.get(Subscriber, req.subscriber_id)
    kind = TYPE_NAMES.get(req.type, req.type)
    who = nfc(sub.full_name) if sub else "?"
    state = event_name or req.state
    if state == "submitted":
        due = f" Hạn xử lý: {_local(req.due_at)}." if req.due_at else ""
        out = []
        for u in _domain_users(session, req, ("ra_approver", "ra_officer"),
                               central=bool(req.central_required)):
            if u.username in (req.created_by, req.submitted_by):
                continue
            if u.role == "ra_officer":  # e.g. a holder's own restore needs an identity check
                out.append(_to_user(u, f"[GovCA] Yêu cầu {kind} số {req.id} đang chờ xử lý",
                                    f"Yêu cầu {kind} số {req.id} của {who} đã được gửi và "
                                    f"đang chờ xử lý.{due}\nVui lòng đăng nhập cổng GovCA để "
                                    "xem xét."))
            else:
                out.append(_to_user(u, f"[GovCA] Yêu cầu {kind} số {req.id} đang chờ Ông/Bà "
                                    "phê duyệt", f"Yêu cầu {kind} số {req.id} của {who} đã "
                                    f"được gửi và đang chờ phê duyệt.{due}\nVui lòng đăng "
                                    "nhập cổng GovCA để xem xét."))
        return out
    if state == "failed":
        return [_to_user(u, f"[GovCA] Yêu cầu {kind} số {req.id} không thực hiện được",
                         f"Yêu cầu {kind} số {req.id} của {who} đã được phê duyệt nhưng không "
                         "thực hiện được. Vui lòng xem chi tiết trên cổng GovCA.")
                for u in _domain_users(session, req, ("ra_officer", "ra_approver"))]
    return _staff_notices(session, req, sub, kind) if sub else []


def revoked_notices(session: Session, cert: Certificate) -> list[Notice]:
    sub = session.get(Subscriber, cert.subscriber_id) if cert.subscriber_id else None
    if sub is None or not sub.email or cert.revoked_at is None:
        return []
    reason = REASON_NAMES.get(cert.revocation_reason or "", cert.revocation_reason or "")
    return [_to_staff(sub, f"[GovCA] Chứng thư số {cert.serial} đã bị thu hồi",
                      f"Chứng thư số {cert.serial} của Ông/Bà đã bị thu hồi lúc "
                      f"{_local(cert.revoked_at)} (lý do: {reason}). Chữ ký tạo sau thời điểm "
                      "thu hồi sẽ không còn hợp lệ.")]


def request_event(session: Session, clock, request_id: int, event_name: str) -> list[int]:
    """The domain's hook: the request moved to `event_name` in this transaction."""
    if not enabled():
        return []
    req = session.get(RaRequest, request_id)
    if req is None:
        return []
    return enqueue(session, clock, request_notices(session, request_id, event_name),
                   event_name=f"request.{event_name}", ref=f"request:{request_id}",
                   domain_id=req.domain_id)


def certificate_revoked(session: Session, clock, cert: Certificate) -> list[int]:
    """The revocation hook (ca.revocation.revoke), whatever path revoked it."""
    if not enabled():
        return []
    sub = session.get(Subscriber, cert.subscriber_id) if cert.subscriber_id else None
    return enqueue(session, clock, revoked_notices(session, cert),
                   event_name="certificate.revoked", ref=f"certificate:{cert.serial}",
                   domain_id=sub.domain_id if sub else None)


# -- expiry reminders ---------------------------------------------------------------------------
def expiry_notices(session: Session, now: dt.datetime, *, actor: str = "system:notify"
                   ) -> list[tuple[Notice, int | None, str]]:
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
            out.append((_to_staff(sub, f"[GovCA] Chứng thư số sắp hết hạn ({days} ngày)",
                                  f"Chứng thư số {cert.serial} của Ông/Bà sẽ hết hạn lúc "
                                  f"{_local(cert.not_after)}. Vui lòng đề nghị gia hạn qua đơn "
                                  "vị quản lý trực tiếp hoặc trên cổng GovCA."),
                        sub.domain_id, f"expiry.{days}:{target}"))
    return out


def run_expiry_reminders(db, clock, config: SmtpConfig | None) -> int:
    """One pass of the 30/7-day reminders (a scheduler job): written to the outbox with their
    audit record, then delivered. Returns how many were accepted by the SMTP server now."""
    if config is None:
        return 0
    ids: list[int] = []
    with db.transaction() as s:
        for notice, domain_id, ref in expiry_notices(s, clock.now()):
            ids += enqueue_rows(s, clock, [notice], event_name=ref.split(":")[0],
                                ref=ref.split(":", 1)[1], domain_id=domain_id)
    return deliver_due(db, clock, config, ids=ids) if ids else 0
