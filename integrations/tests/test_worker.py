"""Integration: a real Celery worker drains the outbox, and nothing is lost while the broker is down."""

import uuid

import pytest
from django.db import transaction

from crm_platform.actor import Actor
from crm_platform.celery import app as celery_app
from crm_platform.models import ApiKey, OutboxMessage
from crm_platform.outbox import outbox_publish
from integrations.tasks import outbox_relay
from integrations.tests.conftest import verified
from tests.support import OwnRedis, celery_worker, wait_until

pytestmark = pytest.mark.integration


def _worker(broker_url: str):
    """A real worker on a queue of its own, against the test database and the given broker."""
    return celery_worker(broker_url=broker_url, WEBHOOK_ALLOW_PRIVATE_TARGETS="true")


def _use_broker(url: str) -> None:
    """Point this process's Celery producer at `url`. Pools stay open in kombu's registry (keyed
    by URL), so switching back finds the old one as it was."""
    celery_app.conf.broker_url = url
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def own_broker(tmp_path):
    redis = OwnRedis(tmp_path).start()
    previous = celery_app.conf.broker_url
    _use_broker(redis.url)
    try:
        yield redis
    finally:
        redis.stop()
        _use_broker(previous)


def _publish(n_objects: int, per_object: int) -> None:
    key = ApiKey.objects.create(name="obj", prefix=uuid.uuid4().hex[:12], hashed_key="x")
    actor = Actor.system("tests")
    for version in range(per_object):
        for obj in range(n_objects):
            with transaction.atomic():
                key.pk = obj + 1000  # the object the change is about (only its id and type matter)
                outbox_publish(
                    topic="contact.updated", obj=key, payload={"id": obj, "lead_score": version}, actor=actor
                )


def _delivered(n: int) -> bool:
    rows = OutboxMessage.objects.exclude(destination="")
    return rows.count() == n and not rows.exclude(status=OutboxMessage.Status.DELIVERED).exists()


def test_a_real_worker_drains_the_outbox_in_order_without_loss_or_duplicates(transactional_db, make_endpoint, receiver):
    _, secret = make_endpoint()
    _publish(n_objects=5, per_object=4)
    with _worker(celery_app.conf.broker_url) as queue:
        outbox_relay.apply_async(queue=queue)
        wait_until(lambda: _delivered(20), timeout=60)
    bodies = [verified(secret, request) for request in receiver.requests]
    ids = [request.headers["webhook-id"] for request in receiver.requests]
    assert len(ids) == len(set(ids)) == 20
    for obj in range(5):
        assert [b["data"]["lead_score"] for b in bodies if b["data"]["id"] == obj] == [0, 1, 2, 3]


def test_writes_succeed_with_the_broker_down_and_the_sweep_drains_them_once_it_is_back(
    transactional_db, make_endpoint, receiver, own_broker, caplog
):
    _, secret = make_endpoint()
    own_broker.stop()

    _publish(n_objects=3, per_object=1)  # the on-commit kicks fail quietly; the writes stand

    assert "outbox relay kick not sent" in caplog.text
    assert OutboxMessage.objects.filter(destination="", status=OutboxMessage.Status.PENDING).count() == 3
    assert receiver.requests == []

    own_broker.start()
    with _worker(own_broker.url) as queue:
        # What beat does every few seconds: send the sweep through the (now working) broker.
        outbox_relay.apply_async(queue=queue, expires=30)
        wait_until(lambda: _delivered(3), timeout=60)
    assert sorted(verified(secret, r)["data"]["id"] for r in receiver.requests) == [0, 1, 2]


def test_relay_runs_leave_no_result_behind_in_redis(transactional_db, make_endpoint, receiver, own_broker):
    """Every commit that writes outbox rows kicks a relay run, and beat sweeps every 5 s: each
    run's return value was kept in Redis (the broker's own server) for an hour, a key per
    write, so Redis grew with the write rate. Nobody reads them."""
    import redis

    make_endpoint()
    broker = redis.Redis.from_url(own_broker.url)
    with celery_worker(broker_url=own_broker.url, queues="sync", WEBHOOK_ALLOW_PRIVATE_TARGETS="true"):
        _publish(n_objects=5, per_object=1)  # five commits: five kicks on the sync queue
        wait_until(lambda: _delivered(5), timeout=60)
        wait_until(lambda: broker.llen("sync") == 0 and broker.hlen("unacked") == 0, timeout=60)
    assert broker.keys("celery-task-meta-*") == []
