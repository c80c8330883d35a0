"""Admin notices: what staff must see on the admin index until someone resolves it."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from compliance.models import AdminNotice


def admin_notice_post(
    *, source: str, title: str, body: str = "", level: str = AdminNotice.Level.WARNING, permission: str = ""
) -> AdminNotice:
    """Post a notice (titles and bodies hold no personal values: ids and reasons only). An open
    notice with the same source and title is not repeated, so a nightly alarm stays one row."""
    existing = AdminNotice.objects.filter(source=source, title=title[:200], resolved_at__isnull=True).first()
    if existing:
        return existing
    return AdminNotice.objects.create(source=source, title=title[:200], body=body, level=level, permission=permission)


def admin_notices_open(*, user) -> list[AdminNotice]:
    """The unresolved notices this staff user may see, newest first."""
    if not getattr(user, "is_staff", False):
        return []
    notices = AdminNotice.objects.filter(resolved_at__isnull=True).order_by("-id")[:20]
    return [n for n in notices if not n.permission or user.has_perm(n.permission)]


def admin_notice_resolve(*, notice: AdminNotice, user) -> None:
    AdminNotice.objects.filter(Q(pk=notice.pk), resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolved_by=user
    )
