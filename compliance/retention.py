"""Retention: how long each kind of row is kept, and the one job that purges what expired.

Apps register what they keep in their AppConfig.ready():

    register_retention("integrations.webhookdelivery", date_field="at")             # generic purge
    register_retention("crm_platform.outboxmessage", purge=outbox_purge_callable)   # their own

and settings.RETENTION_DAYS (one dict, env-driven where .env.example says so) gives the days
per registered name; a name set to None is kept forever (old activities, by default). The
beat job `compliance.retention_purge` runs `retention_purge()`: each entry deletes in batches
of `chunk` rows, so no statement holds a long lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)

CHUNK = 10_000


@dataclass(frozen=True)
class RetentionRule:
    name: str
    date_field: str = "created_at"
    filter: Q | None = None
    # purge(*, older_than_days, chunk) -> rows deleted; None: the generic batched delete.
    purge: Callable[..., int] | None = None


_rules: dict[str, RetentionRule] = {}


def register_retention(
    name: str, *, date_field: str = "created_at", filter: Q | None = None, purge: Callable[..., int] | None = None
) -> None:
    """Declare a retention rule. `name` is the model label ("app_label.modelname") for the
    generic purge, and the key of settings.RETENTION_DAYS either way."""
    _rules[name.lower()] = RetentionRule(name.lower(), date_field, filter, purge)


def retention_rules() -> list[RetentionRule]:
    return list(_rules.values())


def retention_days(name: str) -> int | None:
    return settings.RETENTION_DAYS.get(name.lower())


def purge_expired(rule: RetentionRule, *, days: int, chunk: int = CHUNK, now: dt.datetime | None = None) -> int:
    """Delete the rule's rows older than `days`, `chunk` ids at a time; returns how many went."""
    if rule.purge is not None:
        return rule.purge(older_than_days=days, chunk=chunk)
    model = apps.get_model(rule.name)
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    expired = model._base_manager.filter(**{f"{rule.date_field}__lt": cutoff})
    if rule.filter is not None:
        expired = expired.filter(rule.filter)
    total = 0
    while True:
        ids = list(expired.order_by().values_list("pk", flat=True)[:chunk])
        if not ids:
            return total
        total += model._base_manager.filter(pk__in=ids).delete()[0]


def retention_purge(*, chunk: int = CHUNK) -> dict[str, int]:
    """Purge every registered kind of row past its retention; returns rows deleted per name
    (names whose retention is None are skipped). A run that deleted anything writes one audit
    row with the counts (the rows themselves may hold personal or medical data)."""
    from compliance.services import audit_record
    from crm_platform.actor import Actor

    report = {}
    for rule in retention_rules():
        days = retention_days(rule.name)
        if days is None:
            continue
        report[rule.name] = purge_expired(rule, days=days, chunk=chunk)
        if report[rule.name]:
            logger.info("retention purged %s rows of %s (older than %s days)", report[rule.name], rule.name, days)
    deleted = {name: count for name, count in report.items() if count}
    if deleted:
        audit_record(
            actor=Actor.system("compliance.retention_purge"),
            action="retention.purge",
            object_type="compliance.retention",
            changes=deleted,
        )
    return report
