"""Relay workers running side by side (Celery runs several): what one endpoint's promises
(its rate limit) become when two batches deliver to it at the same time."""

import pytest

from integrations import relay
from tests.support import InThread

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_workers_delivering_at_once_keep_an_endpoints_rate_limit_between_them(make_endpoint, publish, receiver):
    """Each batch counts the endpoint's deliveries of the last minute from the delivery log, which
    a batch writes when it commits: two batches under way at once each see none of the other's
    sends, and each sends up to the limit. With Celery's usual concurrency the receiver got the
    limit times the number of workers. The count is now a window in Redis shared by the workers."""
    make_endpoint(rate_limit_per_minute=3)
    receiver.default, receiver.timeout_seconds = "timeout", 0.3  # each answer takes 0.3 s
    for n in range(12):
        publish(object_id=n + 1)
    assert relay.outbox_route_batch() == 12
    workers = [InThread(lambda: relay.outbox_deliver_batch(limit=6)) for _ in range(2)]
    for worker in workers:
        worker.outcome()
    assert len(receiver.requests) <= 3, f"{len(receiver.requests)} deliveries within a minute, limit 3"
