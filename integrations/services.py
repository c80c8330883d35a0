"""integrations: services. Webhook endpoint management; the relay's own functions live in
integrations.relay (outbox_route_batch, outbox_deliver_batch, outbox_replay, outbox_purge)."""

from __future__ import annotations

import datetime as dt
import secrets as pysecrets
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from compliance.guard import phi_field_names
from compliance.models import AdminNotice
from compliance.services import audit_record
from crm_platform.actor import Actor
from crm_platform.locking import locked_row
from crm_platform.models import ApiKey, OutboxMessage
from integrations.events import TEST_EVENT, normalize_event_type
from integrations.models import WebhookDelivery, WebhookEndpoint
from integrations.webhooks import (
    disabled_notice_title,
    endpoint_disable,
    secret_generate,
    secret_normalize,
    url_audited,
    url_check,
    url_resolve,
    webhook_body,
    webhook_send,
)

EDITABLE = ("url", "description", "event_types", "rate_limit_per_minute", "may_receive_phi", "phi_fields")


def _event_types(names: Iterable[str]) -> list[str]:
    normalized, unknown = [], []
    for name in names:
        event_type = normalize_event_type(name)
        if event_type is None:
            unknown.append(name)
        elif event_type not in normalized:
            normalized.append(event_type)
    if unknown:
        raise ValidationError({"event_types": [f"Unknown event type: {', '.join(unknown)}."]})
    return normalized


def check_phi_fields(names: Iterable[str]) -> list[str]:
    """Medical field names an endpoint may receive; raises ValidationError for any other name."""
    names = list(dict.fromkeys(names))
    other = sorted(set(names) - phi_field_names())
    if other:
        raise ValidationError({"phi_fields": [f"Not medical fields: {', '.join(other)}."]})
    return names


def webhook_endpoint_create(
    *,
    url: str,
    actor: Actor,
    description: str = "",
    event_types: Iterable[str] = (),
    secret: str | None = None,
    rate_limit_per_minute: int | None = None,
    may_receive_phi: bool = False,
    phi_fields: Iterable[str] = (),
    owner: ApiKey | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its secret (the only time the secret is given out).
    Raises ValidationError for a refused URL, unknown event types or a weak supplied secret."""
    url_check(url)
    endpoint = WebhookEndpoint(
        url=url,
        description=description,
        event_types=_event_types(event_types),
        secret=secret_normalize(secret) if secret else secret_generate(),
        rate_limit_per_minute=rate_limit_per_minute,
        may_receive_phi=may_receive_phi,
        phi_fields=check_phi_fields(phi_fields),
        owner=owner,
    )
    endpoint.full_clean(exclude=["secret"])
    with transaction.atomic():
        endpoint.save(force_insert=True)
        audit_record(
            actor=actor,
            action="webhook_endpoint.create",
            obj=endpoint,
            changes={
                "url": url_audited(endpoint.url),
                "event_types": endpoint.event_types,
                "may_receive_phi": may_receive_phi,
            },
        )
    return endpoint, endpoint.secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    data: dict[str, Any],
    actor: Actor,
    authorize: Callable[[WebhookEndpoint, dict[str, Any]], dict[str, Any]] | None = None,
) -> WebhookEndpoint:
    """Change the editable fields named in `data` (never the secret) and return the endpoint as
    stored. The values are checked first (a new URL's host is looked up: seconds, at worst,
    with no lock held); then the row is locked, and `authorize(locked, data)`, when given,
    judges the change against the endpoint as it now is: it raises to refuse, or returns what
    may be applied. Raises ValidationError."""
    if "url" in data:
        url_check(data["url"])
    if "event_types" in data:
        data = {**data, "event_types": _event_types(data["event_types"])}
    if "phi_fields" in data:
        data = {**data, "phi_fields": check_phi_fields(data["phi_fields"])}
    with transaction.atomic():
        locked = locked_row(WebhookEndpoint.objects.select_for_update(), endpoint.pk)
        if authorize is not None:
            data = authorize(locked, data)
        changes = {}
        for name in EDITABLE:
            if name in data and getattr(locked, name) != data[name]:
                changes[name] = (getattr(locked, name), data[name])
                setattr(locked, name, data[name])
        if changes:
            locked.full_clean(exclude=["secret"])
            locked.save(update_fields=[*changes, "updated_at"])
            if "url" in changes:
                changes["url"] = tuple(map(url_audited, changes["url"]))
            audit_record(actor=actor, action="webhook_endpoint.update", obj=locked, changes=changes)
    return locked


def webhook_endpoint_rotate_secret(
    *, endpoint: WebhookEndpoint, actor: Actor, secret: str | None = None, overlap_hours: int | None = None
) -> tuple[str, dt.datetime | None]:
    """Give the endpoint a new signing secret (generated, or the caller's) and return it (the
    only time it is given out) with when the old one stops signing: until then every delivery
    carries both signatures, so the receiver can switch at its own pace. `overlap_hours` 0 ends
    the old secret at once (a leaked one). Two signatures at most: rotating again during an
    overlap drops the oldest secret at once. The nightly retention job forgets a secret once
    its overlap is over. Raises ValidationError for a weak supplied secret."""
    hours = settings.WEBHOOK_SECRET_OVERLAP_HOURS if overlap_hours is None else overlap_hours
    new_secret = secret_normalize(secret) if secret else secret_generate()
    until = timezone.now() + dt.timedelta(hours=hours) if hours > 0 else None
    with transaction.atomic():
        locked = locked_row(WebhookEndpoint.objects.select_for_update(), endpoint.pk)
        locked.previous_secret = locked.secret if until is not None else None
        locked.previous_secret_until = until
        locked.secret = new_secret
        locked.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
        audit_record(
            actor=actor,
            action="webhook_endpoint.rotate_secret",
            obj=locked,
            changes={"previous_secret_until": until.isoformat() if until else None},
        )
    endpoint.secret, endpoint.previous_secret = locked.secret, locked.previous_secret
    endpoint.previous_secret_until = until
    return new_secret, until


def previous_secrets_forget(*, older_than_days: int = 0, chunk: int = 0) -> int:
    """Forget the old signing secrets whose rotation overlap ended more than `older_than_days`
    ago (the nightly retention job; settings.RETENTION_DAYS): a secret that no longer signs is
    not kept. Returns how many endpoints had one. (Few rows: one UPDATE, `chunk` unused.)"""
    cutoff = timezone.now() - dt.timedelta(days=older_than_days)
    return WebhookEndpoint.objects.filter(previous_secret_until__lt=cutoff).update(
        previous_secret=None, previous_secret_until=None
    )


STAFF_DISABLED_REASON = "disabled by staff"


def webhook_endpoint_disable(*, endpoint: WebhookEndpoint, actor: Actor, reason: str = STAFF_DISABLED_REASON) -> None:
    """Stop sending to an endpoint; its queued messages go dead (replayable once it is enabled)."""
    with transaction.atomic():
        endpoint_disable(endpoint=endpoint, reason=reason, actor=actor, by_system=False)


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, actor: Actor, phi_allowed: bool = True) -> bool:
    """Switch the endpoint on; whether it was. With `phi_allowed` False (a caller who may not
    route medical fields) one that receives them, as it is when the UPDATE lands, stays off."""
    with transaction.atomic():
        rows = WebhookEndpoint.objects.filter(pk=endpoint.pk)
        if not phi_allowed:
            rows = rows.filter(may_receive_phi=False)
        if not rows.update(
            enabled=True, disabled_at=None, disabled_reason="", needs_attention=False, failing_since=None
        ):
            return False
        endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = True, None, ""
        endpoint.needs_attention, endpoint.failing_since = False, None
        audit_record(actor=actor, action="webhook_endpoint.enable", obj=endpoint)
        # Its "was disabled" notice is over (and a later disable must post a new one).
        AdminNotice.objects.filter(
            source="webhooks", title=disabled_notice_title(endpoint), resolved_at__isnull=True
        ).update(resolved_at=timezone.now())
    return True


def webhook_endpoint_recover(*, endpoint: WebhookEndpoint, actor: Actor, phi_allowed: bool = True) -> int | None:
    """Enable the endpoint and, in the same transaction, queue its failed and dead messages
    again; how many, or None when it stayed off (webhook_endpoint_enable). They keep their
    places (ids), and nothing is routed to the endpoint before this commits, so a message for the
    same object routed later waits behind them: the receiver hears the older state first.
    Enabling, then replaying, let such a message go out in between."""
    from integrations.relay import outbox_replay

    with transaction.atomic():
        if not webhook_endpoint_enable(endpoint=endpoint, actor=actor, phi_allowed=phi_allowed):
            return None
        return outbox_replay(ids=webhook_endpoint_failed_ids(endpoint), actor=actor)


def webhook_endpoint_failed_ids(endpoint: WebhookEndpoint) -> list[int]:
    """The endpoint's outbox rows that failed or died, in id order."""
    return list(
        OutboxMessage.objects.filter(
            destination=f"webhook:{endpoint.pk}",
            status__in=[OutboxMessage.Status.FAILED, OutboxMessage.Status.DEAD],
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def webhook_endpoint_test(*, endpoint: WebhookEndpoint, actor: Actor) -> WebhookDelivery:
    """Send a signed `webhook.test` event now and return its delivery row. Does not count
    towards the endpoint's failure run. Raises ValidationError when the URL is refused."""
    target = url_resolve(endpoint.url)
    now = timezone.now()
    body = webhook_body(
        event_type=TEST_EVENT,
        occurred_at=now,
        data={"endpoint_id": endpoint.pk, "message": "This is a test event from crm_platform."},
    )
    delivery, _ = webhook_send(
        endpoint=endpoint,
        target=target,
        webhook_id=f"msg_test_{pysecrets.token_hex(8)}",
        event_type=TEST_EVENT,
        body=body,
        message_id=None,
        attempt=1,
    )
    audit_record(actor=actor, action="webhook_endpoint.test", obj=endpoint, changes={"succeeded": delivery.succeeded})
    return delivery
