"""A slow, hanging or unreachable webhook endpoint must not jam the relay: a batch ends within its
budget, a target that does not answer costs one timeout a batch, and a task stopped mid-batch
keeps what it sent (nothing goes out twice, nothing is lost)."""

import contextlib
import json
import signal
import time
from collections import Counter

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from bench.common import free_port
from crm_platform.models import OutboxMessage
from integrations import relay, tasks
from integrations.models import SyncEvent, WebhookDelivery, WebhookEndpoint
from integrations.tests.conftest import verified
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def hanging():
    """A receiver that holds every request far longer than any test's send timeout."""
    with WebhookReceiver(default="timeout", timeout_seconds=30) as fake:
        yield fake


def _rows(endpoint):
    return OutboxMessage.objects.filter(destination=f"webhook:{endpoint.pk}").order_by("id")


def _make_due():
    OutboxMessage.objects.filter(status__in=relay.OPEN).update(next_attempt_at=timezone.now())


def _ids(receiver):
    return Counter(request.headers["webhook-id"] for request in receiver.requests)


def _publish_many(publish, n):
    return [publish(object_id=i) for i in range(1, n + 1)]


def test_a_hanging_endpoint_costs_one_timeout_a_run_and_the_healthy_one_gets_each_message_once(
    make_endpoint, publish, receiver, hanging, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    _, secret = make_endpoint()
    stuck, _ = make_endpoint(url=hanging.url)  # newer: its row comes first for each message
    parents = _publish_many(publish, 20)

    runs = []
    for _ in range(3):
        started = time.monotonic()
        runs.append(tasks.outbox_relay.apply().get())
        # 20 timeouts (6 s) a run before; now one, plus the healthy sends.
        assert time.monotonic() - started < 2.5
        _make_due()

    assert _ids(receiver) == Counter({f"msg_{parent.pk}": 1 for parent in parents})
    verified(secret, receiver.requests[0])
    assert len(hanging.requests) == 3  # one probe a run
    assert [run["postponed"] for run in runs] == [19, 19, 19]
    stuck.refresh_from_db()
    assert stuck.failing_since is not None and stuck.enabled
    log = WebhookDelivery.objects.filter(endpoint=stuck)
    assert sorted(log.values_list("error", flat=True)) == ["timeout"] * 3
    # The same row probed each time; the others never spent an attempt.
    assert list(_rows(stuck).values_list("attempts", flat=True)) == [3] + [0] * 19
    assert not _rows(stuck).exclude(status__in=relay.OPEN).exists()  # none lost, none dead


def test_rows_behind_an_unanswering_endpoint_are_postponed_until_its_probe_is_retried(
    make_endpoint, publish, receiver, hanging, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    stuck, _ = make_endpoint(url=hanging.url)
    _publish_many(publish, 5)

    result = relay.outbox_relay(budget_seconds=10)

    assert (result["attempted"], result["postponed"]) == (1, 4)
    probe, *others = _rows(stuck)
    assert (probe.status, probe.attempts, probe.last_error) == (OutboxMessage.Status.FAILED, 1, "timeout")
    assert probe.next_attempt_at > timezone.now()
    for row in others:
        assert (row.status, row.attempts, row.next_attempt_at) == (
            OutboxMessage.Status.PENDING,
            0,
            probe.next_attempt_at,
        )
    # Never attempted, so no sync event yet (one is written on a row's first attempt).
    assert set(SyncEvent.objects.values_list("outbox_message_id", flat=True)) == {probe.pk}
    assert relay.outbox_relay(budget_seconds=10)["attempted"] == 0  # nothing due until then


def test_a_refused_connection_also_holds_back_the_endpoints_other_rows(make_endpoint, publish):
    closed, _ = make_endpoint(url=f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there
    _publish_many(publish, 4)

    assert relay.outbox_relay(budget_seconds=10) == {"routed": 4, "attempted": 1, "postponed": 3}

    assert list(_rows(closed).values_list("attempts", "last_error")) == [
        (1, "connection failed"),
        (0, ""),
        (0, ""),
        (0, ""),
    ]


def test_an_endpoint_that_answers_again_gets_its_postponed_rows_once_each_and_in_order(
    make_endpoint, publish, hanging, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    _, secret = make_endpoint(url=hanging.url)
    publish("contact.updated", 1, {"id": 1, "lead_score": 1})
    publish("contact.updated", 2, {"id": 2, "lead_score": 1})
    publish("contact.updated", 1, {"id": 1, "lead_score": 2})
    relay.outbox_relay(budget_seconds=10)
    assert len(hanging.requests) == 1

    hanging.default = 200
    _make_due()
    relay.outbox_relay(budget_seconds=10)

    answered = [json.loads(request.body)["data"] for request in hanging.requests[1:]]
    assert answered == [{"id": 1, "lead_score": 1}, {"id": 2, "lead_score": 1}, {"id": 1, "lead_score": 2}]
    verified(secret, hanging.requests[-1])
    assert not OutboxMessage.objects.exclude(destination="").exclude(status=OutboxMessage.Status.DELIVERED).exists()


def test_a_run_stops_sending_at_its_budget_and_the_next_run_sends_the_rest(make_endpoint, publish, receiver):
    make_endpoint()
    receiver.default, receiver.timeout_seconds = "timeout", 0.2  # each answer (200) takes 0.2 s
    parents = _publish_many(publish, 20)
    relay.outbox_route_batch()
    before = {row.pk: row for row in OutboxMessage.objects.exclude(destination="")}

    started = time.monotonic()
    first = relay.outbox_relay(budget_seconds=0.5)
    elapsed = time.monotonic() - started

    # The budget plus at most one send's timeout (WEBHOOK_TIMEOUT_SECONDS, 2 s in tests); all
    # 20 sends would take 4 s.
    assert elapsed < 0.5 + 2
    assert 0 < first["attempted"] < 20
    untouched = OutboxMessage.objects.exclude(destination="").exclude(status=OutboxMessage.Status.DELIVERED)
    assert untouched.count() == 20 - first["attempted"]
    for row in untouched:
        was = before[row.pk]
        assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == (
            was.status,
            was.attempts,
            was.next_attempt_at,
            was.last_error,
        )
    untouched_ids = [row.pk for row in untouched]
    assert not WebhookDelivery.objects.filter(message_id__in=untouched_ids).exists()
    assert not SyncEvent.objects.filter(outbox_message_id__in=untouched_ids).exists()

    receiver.default = 200
    second = relay.outbox_relay(budget_seconds=10)

    assert first["attempted"] + second["attempted"] == 20
    assert _ids(receiver) == Counter({f"msg_{parent.pk}": 1 for parent in parents})


class _Killed(BaseException):
    """The hard time limit, played in-process: the worker kills the task's process, so the
    batch's transaction rolls back (here: the exception leaves transaction.atomic)."""


@contextlib.contextmanager
def _time_limits(*, soft: float, hard: float):
    """The task's time limits as a prefork pool applies them: at `soft` a signal whose handler
    raises SoftTimeLimitExceeded wherever the task's thread is (billiard: SIGUSR1), at `hard`
    the kill. Signals reach the main thread only, where the test runs the task."""
    fired = []

    def on_alarm(signum, frame):
        fired.append(signum)
        raise SoftTimeLimitExceeded() if len(fired) == 1 else _Killed()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, soft, hard - soft)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_soft_time_limit_mid_send_keeps_what_was_sent_so_nothing_goes_out_twice(
    make_endpoint, publish, receiver, hanging, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 5  # the send to `hanging` outlasts the soft limit
    stuck, _ = make_endpoint(url=hanging.url)
    _, secret = make_endpoint()  # newer: its row comes first for each message
    parents = _publish_many(publish, 3)

    started = time.monotonic()
    with _time_limits(soft=1.0, hard=3.0):
        try:
            ended = tasks.outbox_relay.apply()
        except _Killed as killed:
            ended = killed
    elapsed = time.monotonic() - started

    # Committed: the healthy row sent before the stop, and the interrupted attempt, logged.
    assert _ids(receiver) == Counter({f"msg_{parents[0].pk}": 1})
    healthy_rows = OutboxMessage.objects.exclude(destination="").exclude(destination=f"webhook:{stuck.pk}")
    assert list(healthy_rows.order_by("id").values_list("status", flat=True)) == ["delivered", "pending", "pending"]
    assert list(_rows(stuck).values_list("status", "attempts", "last_error")) == [
        ("failed", 1, "interrupted: SoftTimeLimitExceeded"),
        ("pending", 0, ""),
        ("pending", 0, ""),
    ]
    assert list(WebhookDelivery.objects.filter(endpoint=stuck).values_list("error", flat=True)) == ["interrupted"]
    assert WebhookEndpoint.objects.get(pk=stuck.pk).failing_since is not None
    # The task ended at the soft limit, with it, not at the kill.
    assert not isinstance(ended, _Killed), "the hard limit killed the task"
    assert ended.failed() and isinstance(ended.result, SoftTimeLimitExceeded)
    assert elapsed < 3.0

    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    for _ in range(2):
        _make_due()
        tasks.outbox_relay.apply().get()
    assert _ids(receiver) == Counter({f"msg_{parent.pk}": 1 for parent in parents})
    verified(secret, receiver.requests[-1])


def test_a_host_name_lookup_that_hangs_costs_one_dns_timeout_a_run(make_endpoint, publish, receiver, settings):
    """getaddrinfo has no timeout: a name server that does not answer held the relay (and an
    API request checking a URL) for as long as the system resolver kept retrying."""
    from tests.fakes.dns import FakeDns

    settings.WEBHOOK_DNS_TIMEOUT_SECONDS = 0.2
    with FakeDns({"hooks.partner.test": ["127.0.0.1"]}, slow={"hooks.partner.test": 3}):
        stuck, _ = make_endpoint(url=f"http://hooks.partner.test:{receiver.port}/hook")
        _publish_many(publish, 5)
        started = time.monotonic()
        run = tasks.outbox_relay.apply().get()
        assert time.monotonic() - started < 1.5
    assert run["postponed"] == 4 and not receiver.requests
    stuck.refresh_from_db()
    assert stuck.failing_since is not None and stuck.enabled
    row = _rows(stuck).first()
    assert (row.attempts, row.last_error) == (1, "host name lookup timed out")
    assert list(_rows(stuck).values_list("attempts", flat=True)) == [1, 0, 0, 0, 0]


def test_registering_a_url_whose_lookup_hangs_is_a_prompt_400(key_client, settings):
    from tests.fakes.dns import FakeDns

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    settings.WEBHOOK_DNS_TIMEOUT_SECONDS = 0.2
    client = key_client(["webhooks:write"])
    with FakeDns({}, slow={"hooks.partner.test": 3}):
        started = time.monotonic()
        response = client.post(
            "/api/v1/webhook-endpoints",
            {"url": "https://hooks.partner.test/hook"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="dns-1",
        )
        assert time.monotonic() - started < 1.5
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["url"] == ["The host name lookup timed out; try again later."]
    assert not WebhookEndpoint.objects.exists()


def test_an_answer_dripped_a_byte_at_a_time_is_cut_off_at_the_send_timeout(make_endpoint, publish, settings):
    """urllib3's read timeout bounds each read: a receiver sending its answer a byte every
    0.1 s (80 bytes: 8 s) never tripped it. The send now ends at WEBHOOK_TIMEOUT_SECONDS in all,
    and counts as an unanswered target."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    with WebhookReceiver(default="drip", drip_seconds=0.1) as dripping:
        stuck, _ = make_endpoint(url=dripping.url)
        _publish_many(publish, 3)
        started = time.monotonic()
        run = tasks.outbox_relay.apply().get()
        assert time.monotonic() - started < 2.5
    assert run["postponed"] == 2 and len(dripping.requests) == 1
    delivery = WebhookDelivery.objects.get(endpoint=stuck)
    assert (delivery.error, delivery.status_code, delivery.succeeded) == ("timeout", None, False)
    assert 400 <= delivery.latency_ms < 1500


def test_a_body_dripping_after_a_timely_status_is_cut_off_and_the_status_stands(make_endpoint, publish, settings):
    """The deadline also ends the read of a body dripping after a timely 200: the receiver has
    answered, so the message is delivered (and not sent again)."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    with WebhookReceiver(default="drip_body", drip_seconds=0.1) as dripping:
        endpoint, _ = make_endpoint(url=dripping.url)
        publish()
        started = time.monotonic()
        tasks.outbox_relay.apply().get()
        assert time.monotonic() - started < 2.5
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status_code, delivery.succeeded, delivery.error) == (200, True, "")
    assert _rows(endpoint).get().status == OutboxMessage.Status.DELIVERED


def test_an_https_send_whose_deadline_passes_during_the_handshake_goes_no_further(make_endpoint, publish, settings):
    """https connects and shakes hands before the request goes out. A handshake finishing after
    the deadline (inside its own connect budget) left the watchdog nothing to shut down, and the
    dripped answer after it was waited for byte by byte (8 s here); now the send stops there."""
    from tests.fakes.dns import FakeDns
    from tests.fakes.tls_receiver import TlsListener

    settings.WEBHOOK_TIMEOUT_SECONDS = 0.2  # the connect budget is at least 0.5 s
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    tls = TlsListener(names=["hooks.partner.test"], handshake_delay=0.35, reply=reply, drip_seconds=0.1)
    with tls, FakeDns({"hooks.partner.test": ["127.0.0.1"]}):
        settings.WEBHOOK_CA_BUNDLE = tls.ca_path
        stuck, _ = make_endpoint(url=f"https://hooks.partner.test:{tls.port}/hook")
        publish()
        started = time.monotonic()
        tasks.outbox_relay.apply().get()
        assert time.monotonic() - started < 2
    assert tls.server_names == ["hooks.partner.test"]
    delivery = WebhookDelivery.objects.get(endpoint=stuck)
    assert (delivery.error, delivery.succeeded) == ("timeout", False)


def test_an_https_answer_in_time_is_delivered_with_the_bundle_trusted(make_endpoint, publish, settings):
    from tests.fakes.dns import FakeDns
    from tests.fakes.tls_receiver import TlsListener

    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    tls = TlsListener(names=["hooks.partner.test"], reply=reply)
    with tls, FakeDns({"hooks.partner.test": ["127.0.0.1"]}):
        settings.WEBHOOK_CA_BUNDLE = tls.ca_path
        endpoint, _ = make_endpoint(url=f"https://hooks.partner.test:{tls.port}/hook")
        publish()
        tasks.outbox_relay.apply().get()
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status_code, delivery.succeeded) == (200, True), delivery.error


def test_names_whose_lookups_hang_do_not_hold_up_other_names_or_start_more_lookups(settings):
    """A lookup that overruns keeps its thread until the resolver gives up. On a pool of four,
    four such names made every other name time out too; and each caller started another."""
    import threading

    from integrations.webhooks import url_resolve
    from tests.fakes.dns import FakeDns

    settings.WEBHOOK_DNS_TIMEOUT_SECONDS = 0.2
    slow = [f"slow{n}.partner.test" for n in range(6)]
    with FakeDns({"fast.partner.test": ["127.0.0.1"]}, slow=dict.fromkeys(slow, 2)) as dns:
        callers = [threading.Thread(target=_refused_lookup, args=(name,)) for name in slow + slow[:2]]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        started = time.monotonic()
        assert url_resolve("http://fast.partner.test/hook").address == "127.0.0.1"
        assert time.monotonic() - started < 0.15
    assert sorted(dns.lookups) == sorted([*slow, "fast.partner.test"])  # one lookup a name


def _refused_lookup(name: str) -> None:
    from django.core.exceptions import ValidationError

    from integrations.webhooks import url_resolve

    with pytest.raises(ValidationError):
        url_resolve(f"http://{name}/hook")


def test_past_a_cap_of_hanging_lookups_a_new_name_is_refused_at_once_without_a_thread(settings):
    """Each name whose lookup hangs holds a thread until the resolver gives up: an API client
    registering many such names could otherwise start threads without end."""
    import threading

    from django.core.exceptions import ValidationError

    from integrations import webhooks
    from integrations.webhooks import MAX_LOOKUPS_IN_FLIGHT, url_resolve
    from tests.fakes.dns import FakeDns
    from tests.support import wait_until

    # Hanging lookups an earlier test left would hold places now and free them mid-test (the
    # last call would then start a thread and wait): start with none in flight.
    wait_until(lambda: not webhooks._lookups, timeout=25)
    # A timeout well above what a loaded machine may take to answer a refusal (the check below
    # tells "refused at once" from "waited for the timeout"; at 0.3 s, CI's load once blurred it).
    settings.WEBHOOK_DNS_TIMEOUT_SECONDS = 2
    slow = [f"hang{n}.partner.test" for n in range(MAX_LOOKUPS_IN_FLIGHT + 1)]
    # The lookups hang far longer than the callers take on a loaded machine: one that ended before
    # the last call would free its place, and that call would start a thread and time out.
    with FakeDns({}, slow=dict.fromkeys(slow, 12)) as dns:
        callers = [threading.Thread(target=_refused_lookup, args=(name,)) for name in slow[:-1]]
        for caller in callers:
            caller.start()
        for caller in callers:  # each gives up after the timeout; its lookup hangs on
            caller.join()
        assert 0 < len(dns.lookups) <= MAX_LOOKUPS_IN_FLIGHT
        started = time.monotonic()
        with pytest.raises(ValidationError, match="timed out"):
            url_resolve(f"http://{slow[-1]}/hook")
        assert time.monotonic() - started < 1
        assert url_resolve("http://127.0.0.1:9/hook").address == "127.0.0.1"  # an address needs no lookup
    assert slow[-1] not in dns.lookups
    wait_until(lambda: not webhooks._lookups, timeout=25)  # the hanging ones end: later tests start clean
