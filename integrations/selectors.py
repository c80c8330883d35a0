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


def webhook_endpoints_with_stats(queryset: QuerySet[WebhookEndpoint], *, window: timedelta | None = None):
    """Annotate endpoints with `stat_total`, `stat_succeeded`, `stat_failed` and `stat_p95_ms`
    over the window (default 7 days), in the same query as the endpoints themselves."""
    recent = Q(deliveries__at__gte=_since(window))
    return queryset.annotate(
        stat_total=Count("deliveries", filter=recent),
        stat_succeeded=Count("deliveries", filter=recent & Q(deliveries__succeeded=True)),
        stat_failed=Count("deliveries", filter=recent & Q(deliveries__succeeded=False)),
        stat_p95_ms=Percentile("deliveries__latency_ms", 0.95, filter=recent),
    )


def webhook_stats(*, endpoints: QuerySet[WebhookEndpoint], window: timedelta | None = None) -> dict:
    """Totals over several endpoints: counts, success rate (0..1, None without deliveries), p95 latency."""
    row = WebhookDelivery.objects.filter(endpoint__in=endpoints, at__gte=_since(window)).aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(succeeded=True)),
        p95=Percentile("latency_ms", 0.95),
    )
    return stats_shape(row["total"], row["succeeded"], row["p95"])


def stats_shape(total: int, succeeded: int, p95) -> dict:
    return {
        "total": total,
        "succeeded": succeeded,
        "failed": total - succeeded,
        "success_rate": round(succeeded / total, 4) if total else None,
        "p95_latency_ms": round(p95, 1) if p95 is not None else None,
    }
