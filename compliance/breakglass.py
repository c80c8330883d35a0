"""Break-glass: time-limited access to one contact's medical fields for staff without
compliance.view_phi, granted at once with a written reason, audited, and notified to the
compliance officers (email through Django's mail backend and an admin notice)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from compliance.models import AdminNotice, BreakGlassGrant
from compliance.notices import admin_notice_post
from compliance.services import audit_record
from crm_platform.actor import Actor

logger = logging.getLogger(__name__)

COMPLIANCE_OFFICER_GROUP = "Compliance officer"
MIN_REASON_LENGTH = 10


def break_glass_active(*, user, contact_id: int) -> bool:
    """Whether `user` holds an unexpired, unrevoked grant for this contact."""
    if not getattr(user, "is_authenticated", False):
        return False
    return BreakGlassGrant.objects.filter(
        user_id=user.pk, contact_id=contact_id, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).exists()


@transaction.atomic
def break_glass_request(*, user, contact, reason: str, actor: Actor) -> BreakGlassGrant:
    """Grant `user` access to `contact`'s medical fields for BREAK_GLASS_MINUTES, at once.

    Raises ValidationError for a reason shorter than MIN_REASON_LENGTH characters and
    PermissionDenied for inactive or non-staff users and for those who already hold
    compliance.view_phi (they need no grant). Writes the `break_glass.granted` audit row (the
    reason is kept on the grant, never in the audit row) and, after commit, emails the
    compliance officers and posts an admin notice for them."""
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise ValidationError({"reason": [f"Say why, in at least {MIN_REASON_LENGTH} characters."]})
    if not (user.is_active and user.is_staff):
        raise PermissionDenied("Only active staff may request break-glass access.")
    if user.has_perm("compliance.view_phi"):
        raise PermissionDenied("You can already see medical fields.")
    now = timezone.now()
    grant = BreakGlassGrant.objects.create(
        user=user,
        contact=contact,
        reason=reason,
        granted_at=now,
        expires_at=now + timedelta(minutes=settings.BREAK_GLASS_MINUTES),
    )
    audit_record(
        actor=actor,
        action="break_glass.granted",
        obj=grant,
        subject_id=contact.pk,
        changes={"user": user.pk, "contact": contact.pk, "minutes": settings.BREAK_GLASS_MINUTES},
    )
    transaction.on_commit(lambda: _notify(grant))
    return grant


@transaction.atomic
def break_glass_revoke(*, grant_ids, actor: Actor) -> int:
    """End these grants now (a compliance officer's call on a grant that looks wrong); those
    already expired or revoked are left as they are. One `break_glass.revoked` audit row each,
    about the contact. Returns how many were revoked."""
    now = timezone.now()
    grants = list(
        BreakGlassGrant.objects.select_for_update()
        .filter(pk__in=list(grant_ids), revoked_at__isnull=True, expires_at__gt=now)
        .order_by("pk")
    )
    for grant in grants:
        grant.revoked_at = now
        grant.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action="break_glass.revoked",
            obj=grant,
            subject_id=grant.contact_id,
            changes={"user": grant.user_id, "contact": grant.contact_id},
        )
    return len(grants)


def _notify(grant: BreakGlassGrant) -> None:
    # Ids and times only: the reason may describe the patient, and email is not a PHI channel.
    title = f"Break-glass access: staff user {grant.user_id} to contact {grant.contact_id}"
    body = (
        f"Staff user {grant.user_id} ({grant.user.get_username()}) opened contact {grant.contact_id}'s medical "
        f"fields at {grant.granted_at:%Y-%m-%d %H:%M} UTC until {grant.expires_at:%H:%M} UTC. "
        f"Review the reason on break-glass grant {grant.pk} in the admin."
    )
    admin_notice_post(
        source="break_glass",
        title=title,
        body=body,
        level=AdminNotice.Level.WARNING,
        permission="compliance.view_breakglassgrant",
    )
    recipients = list(
        get_user_model()
        .objects.filter(groups__name=COMPLIANCE_OFFICER_GROUP, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
        .distinct()
    )
    if recipients:
        try:
            send_mail(title, body, None, recipients)
        except OSError:
            # The grant stands and the admin notice is up; a mail outage must not undo either.
            logger.exception("break-glass notification email failed", extra={"grant": grant.pk})
