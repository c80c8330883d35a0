"""integrations: selectors. Webhook endpoint lists and delivery statistics."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Aggregate, Count, FloatField, Q, QuerySet
from django.utils import timezone

from crm_platform.models import ApiKey
from integrations.models import WebhookDelivery, WebhookEndpoint

STATS_WINDOW = timedelta(days=7)


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


def webhook_endpoint_list(*, owner: ApiKey | None) -> QuerySet[WebhookEndpoint]:
    """Endpoints an API key owns; every endpoint for staff (owner None)."""
    queryset = WebhookEndpoint.objects.all()
    return queryset.filter(owner=owner) if owner is not None else queryset


def webhook_endpoints_rotated_since(pks: list[int], since) -> set[int]:
    """Of these endpoints, those whose signing secret was rotated at or after `since` (the
    audit log says when)."""
    from compliance.models import AuditEvent

    rotated = AuditEvent.objects.filter(
        object_type=WebhookEndpoint._meta.label_lower,
        object_id__in=[str(pk) for pk in pks],
        action="webhook_endpoint.rotate_secret",
        occurred_at__gte=since,
    ).values_list("object_id", flat=True)
    return {int(pk) for pk in rotated}


def _since(window: timedelta | None):
    return timezone.now() - (window or STATS_WINDOW)


# Statistics describe what an endpoint's owner lives with: deliveries of real messages (an
# outbox row). A test send (POST .../test, the admin's action, message_id empty) is a probe
# someone fires at will, often at a receiver being set up or known to be down, so it would skew
# the success rate and the p95; it is counted apart.
def webhook_endpoints_with_stats(queryset: QuerySet[WebhookEndpoint], *, window: timedelta | None = None):
    """Annotate endpoints with `stat_total`, `stat_succeeded`, `stat_failed` and `stat_p95_ms`
    over the real deliveries in the window (default 7 days), and `stat_test_sends`, in the same
    query as the endpoints themselves."""
    recent = Q(deliveries__at__gte=_since(window))
    real = recent & Q(deliveries__message_id__isnull=False)
    return queryset.annotate(
        stat_total=Count("deliveries", filter=real),
        stat_succeeded=Count("deliveries", filter=real & Q(deliveries__succeeded=True)),
        stat_failed=Count("deliveries", filter=real & Q(deliveries__succeeded=False)),
        stat_p95_ms=Percentile("deliveries__latency_ms", 0.95, filter=real),
        stat_test_sends=Count("deliveries", filter=recent & Q(deliveries__message_id__isnull=True)),
    )


def webhook_stats(*, endpoints: QuerySet[WebhookEndpoint], window: timedelta | None = None) -> dict:
    """Totals over several endpoints' real deliveries: counts, success rate (0..1, None without
    deliveries), p95 latency; and how many test sends there were."""
    real = Q(message_id__isnull=False)
    row = WebhookDelivery.objects.filter(endpoint__in=endpoints, at__gte=_since(window)).aggregate(
        total=Count("id", filter=real),
        succeeded=Count("id", filter=real & Q(succeeded=True)),
        p95=Percentile("latency_ms", 0.95, filter=real),
        test_sends=Count("id", filter=~real),
    )
    return stats_shape(row["total"], row["succeeded"], row["p95"], row["test_sends"])


def stats_shape(total: int, succeeded: int, p95, test_sends: int) -> dict:
    return {
        "total": total,
        "succeeded": succeeded,
        "failed": total - succeeded,
        "success_rate": round(succeeded / total, 4) if total else None,
        "p95_latency_ms": round(p95, 1) if p95 is not None else None,
        "test_sends": test_sends,
    }
