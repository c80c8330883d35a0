"""Retention: one registry-driven beat job (compliance.tasks.retention_purge) purges what
settings.RETENTION_DAYS says has expired, in batches."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from compliance.models import AuditEvent
from compliance.retention import purge_expired, retention_rules
from compliance.tasks import retention_purge
from contacts.models import Activity
from contacts.tests.factories import ContactFactory
from crm_platform.models import IdempotencyRecord, OutboxMessage
from crm_platform.schedules import SCHEDULE
from integrations.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


def _ago(days: float):
    return timezone.now() - dt.timedelta(days=days)


def test_the_job_purges_each_registered_kind_past_its_retention(settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "contacts.activity": None}
    old_done = OutboxMessage.objects.create(
        topic="t", object_type="x", object_id="1", status="delivered", delivered_at=_ago(8)
    )
    OutboxMessage.objects.create(topic="t", object_type="x", object_id="2", status="delivered", delivered_at=_ago(1))
    OutboxMessage.objects.create(topic="t", object_type="x", object_id="3", status="dead", delivered_at=_ago(30))
    endpoint = WebhookEndpoint.objects.create(url="http://127.0.0.1:9/hook", secret="whsec_x")
    WebhookDelivery.objects.create(endpoint=endpoint, webhook_id="m1", event_type="t", at=_ago(31))
    WebhookDelivery.objects.create(endpoint=endpoint, webhook_id="m2", event_type="t", at=_ago(2))
    IdempotencyRecord.objects.create(owner="key:1", key="old", request_hash="h", created_at=_ago(8))
    IdempotencyRecord.objects.create(owner="key:1", key="new", request_hash="h")
    contact = ContactFactory()
    Activity.objects.create(contact=contact, type="old", occurred_at=_ago(4000))

    report = retention_purge.apply().get()

    assert report["crm_platform.outboxmessage"] == 1 and not OutboxMessage.objects.filter(pk=old_done.pk).exists()
    assert set(OutboxMessage.objects.values_list("object_id", flat=True)) == {"2", "3"}  # dead rows stay
    assert report["integrations.webhookdelivery"] == 1 and WebhookDelivery.objects.get().webhook_id == "m2"
    assert report["crm_platform.idempotencyrecord"] == 1 and IdempotencyRecord.objects.get().key == "new"
    assert "contacts.activity" not in report and Activity.objects.count() == 1  # kept unless configured
    audit = AuditEvent.objects.get(action="retention.purge")  # one row a run, counts only
    assert audit.changes["crm_platform.outboxmessage"]["new"] == 1 and audit.actor_kind == "system"
    assert retention_purge.apply().get() and AuditEvent.objects.filter(action="retention.purge").count() == 1


def test_old_activities_go_when_configured(settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "contacts.activity": 365}
    contact = ContactFactory()
    Activity.objects.create(contact=contact, type="old", occurred_at=_ago(400))
    Activity.objects.create(contact=contact, type="recent", occurred_at=_ago(10))
    assert retention_purge.apply().get()["contacts.activity"] == 1
    assert list(Activity.objects.values_list("type", flat=True)) == ["recent"]


def test_purge_works_in_batches():
    contact = ContactFactory()
    Activity.objects.bulk_create([Activity(contact=contact, type="x", occurred_at=_ago(50)) for _ in range(25)])
    rule = next(r for r in retention_rules() if r.name == "contacts.activity")
    assert purge_expired(rule, days=30, chunk=10) == 25 and not Activity.objects.exists()


def test_one_scheduled_purge_job_replaces_the_separate_ones():
    tasks = {spec["task"] for spec in SCHEDULE.values()}
    assert "compliance.tasks.retention_purge" in tasks
    assert "crm_platform.tasks.idempotency_purge" not in tasks and "integrations.tasks.outbox_purge" not in tasks
