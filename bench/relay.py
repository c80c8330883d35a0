"""The outbox relay to a loopback webhook receiver (issue 5, "Volume and speed"): deliveries/s
until 100,000 queued messages are drained, none lost or duplicated, beside an in-run ceiling.

    DJANGO_DEBUG=true .venv/bin/python -m bench.relay [--messages 100000] [--concurrency 2] [--ceiling-seconds 10]

1. A fast receiver process (tests/fakes/log_receiver.py: asyncio, keep-alive) logs the
   `webhook-id` of every request it gets, and checks one signature in 100 with the
   `standardwebhooks` package. One webhook endpoint (contact.updated only) points at it.
2. Ceiling: one Python process signing the same way and POSTing with one `requests.Session`
   in a loop, for --ceiling-seconds: what one process could send to this receiver.
3. Real Celery workers (`celery -A crm_platform worker -Q sync -c 2`, prefork) start; then the
   messages are queued with `outbox_publish_many` (one transaction; its on-commit kick starts the
   relay) while this process plays beat's sweep (the relay task every 5 s, expiring after 5 s).
   Timed from the commit to the moment no message of ours is left unrouted or undelivered.
4. The receiver's log: every expected `msg_<id>` present once (total vs distinct), none extra.
5. Clean-up: our outbox rows, their sync events, the endpoint and its delivery log.

Runs against the dev database (`manage.py migrate integrations` first if SyncEvent is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

import requests  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from bench.common import ROOT, BenchError, Row, free_port, print_table  # noqa: E402
from crm_platform.actor import Actor  # noqa: E402
from crm_platform.models import OutboxMessage  # noqa: E402
from crm_platform.outbox import outbox_publish_many  # noqa: E402
from integrations.models import SyncEvent, WebhookEndpoint  # noqa: E402
from integrations.services import webhook_endpoint_create  # noqa: E402
from integrations.tasks import outbox_relay  # noqa: E402
from integrations.webhooks import secret_generate, sign, webhook_body  # noqa: E402

TARGET_PER_S = 500  # the target
OBJECT_TYPE = "bench.relay"
QUEUE = "sync"
SWEEP_SECONDS = 5
STALL_SECONDS = 120  # no progress for this long: give up
PYTHON_BIN = Path(sys.executable).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="outbox messages to drain (default 100,000)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--ceiling-seconds", type=float, default=10, help="length of the ceiling loop (default 10)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.concurrency < 1:
        parser.error("need --messages >= 1 and --concurrency >= 1")
    if "integrations_syncevent" not in connection.introspection.table_names():
        print("run `manage.py migrate integrations` first (SyncEvent is missing)", file=sys.stderr)
        return 1

    actor = Actor.system("bench")
    secret = secret_generate()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    log_path = workdir / "received.log"
    endpoint = None
    first_id = last_id = None
    try:
        with receiver(port, log_path, secret):
            url = f"http://127.0.0.1:{port}/hook"
            ceiling = measure_ceiling(url, secret, args.ceiling_seconds)
            endpoint, _ = webhook_endpoint_create(
                url=url, secret=secret, event_types=["contact.updated"], description="bench.relay", actor=actor
            )
            with workers(args.concurrency, workdir):
                started, ids = enqueue(args.messages, actor)
                first_id, last_id = ids[0], ids[-1]
                with sweeping():
                    drained = wait_drained(endpoint, first_id, last_id)
            elapsed = drained - started
        outcome = check_log(log_path, endpoint, ids)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        if endpoint is not None or first_id is not None:
            clean_up(endpoint, first_id, last_id)
    report(args, elapsed=elapsed, ceiling=ceiling, outcome=outcome)
    return 0 if outcome["lost"] == outcome["duplicates"] == outcome["bad_signatures"] == 0 else 2


# ----------------------------------------------------------------------------- processes


@contextlib.contextmanager
def receiver(port: int, log_path: Path, secret: str):
    command = [sys.executable, "-m", "tests.fakes.log_receiver", "--port", str(port), "--log", str(log_path)]
    command += ["--secret", secret, "--verify-every", "100"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise BenchError(f"receiver did not start: {line!r}")
        yield proc
    finally:
        proc.terminate()  # SIGTERM: it flushes its log and exits
        proc.wait(timeout=30)


@contextlib.contextmanager
def workers(concurrency: int, workdir: Path):
    """Real Celery workers on the relay's queue, against the dev database and broker."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"}
    log_path = workdir / "worker.log"
    command = [str(PYTHON_BIN / "celery"), "-A", "crm_platform", "worker", "-Q", QUEUE, "-c", str(concurrency)]
    command += ["--pool", "prefork", "-l", "INFO", "-n", f"bench-relay-{os.getpid()}@%h", "--without-mingle"]
    command += ["--without-gossip", "--without-heartbeat"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the worker did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        errors = [line for line in log_path.read_text().splitlines() if " ERROR" in line or "Traceback" in line]
        if errors:
            print(f"worker log has {len(errors)} error line(s), e.g. {errors[0][:300]}", file=sys.stderr)


@contextlib.contextmanager
def sweeping():
    """What beat does: the relay task every SWEEP_SECONDS, dropped if not started within them."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            outbox_relay.apply_async(queue=QUEUE, expires=SWEEP_SECONDS)
            stop.wait(SWEEP_SECONDS)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ----------------------------------------------------------------------------- the measurement


def measure_ceiling(url: str, secret: str, seconds: float) -> float:
    """Signed POSTs from one process over one keep-alive session: requests/s."""
    session = requests.Session()
    session.trust_env = False
    from django.utils import timezone

    body = webhook_body(event_type="contact.updated", occurred_at=timezone.now(), data={"id": 1, "lead_score": 1})
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        webhook_id = f"ceiling_{sent}"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, webhook_id, timestamp, body),
        }
        response = session.post(url, data=body.encode(), headers=headers, timeout=10)
        if response.status_code != 200:
            raise BenchError(f"the receiver answered {response.status_code}")
        sent += 1
    return sent / (time.monotonic() - started)


def enqueue(n: int, actor: Actor) -> tuple[float, list[int]]:
    """Queue n messages (one object each) in one transaction; returns (commit time, their ids)."""
    rows = [(str(i), {"id": i, "lead_score": i % 100, "lifecycle_stage": "lead"}) for i in range(n)]
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Our rows get consecutive ids only if nobody else inserts meanwhile; bounds by type and range.
            cursor.execute("SELECT coalesce(max(id), 0) FROM crm_platform_outboxmessage")
            before = cursor.fetchone()[0]
        outbox_publish_many(topic="contact.updated", object_type=OBJECT_TYPE, rows=rows, actor=actor)
    started = time.monotonic()  # the commit: the on-commit kick has just gone out
    ours = OutboxMessage.objects.filter(object_type=OBJECT_TYPE, parent__isnull=True, id__gt=before)
    ids = sorted(ours.values_list("id", flat=True))
    if len(ids) != n:
        raise BenchError(f"queued {len(ids)} rows, not {n}")
    print(f"queued {n:,} messages (ids {ids[0]}..{ids[-1]})", flush=True)
    return started, ids


def wait_drained(endpoint: WebhookEndpoint, first_id: int, last_id: int) -> float:
    """Poll until none of our messages is unrouted or has an undelivered row; returns that moment."""
    destination = f"webhook:{endpoint.pk}"
    open_rows = OutboxMessage.objects.filter(status__in=["pending", "failed"])
    last_change, last_left = time.monotonic(), None
    while True:
        unrouted = open_rows.filter(destination="", id__gte=first_id, id__lte=last_id).count()
        undelivered = open_rows.filter(destination=destination).count()
        now = time.monotonic()
        if unrouted == 0 and undelivered == 0:
            return now
        left = unrouted + undelivered
        if left != last_left:
            last_change, last_left = now, left
            print(f"  {unrouted:>7,} unrouted, {undelivered:>7,} routed and not yet delivered", flush=True)
        elif now - last_change > STALL_SECONDS:
            raise BenchError(f"no progress for {STALL_SECONDS}s with {left} messages left")
        time.sleep(2)


def check_log(log_path: Path, endpoint: WebhookEndpoint, ids: list[int]) -> dict:
    """Counts from the receiver's log against the ids we queued (msg_<parent id>)."""
    lines = log_path.read_text().splitlines()
    bad = sum(line.startswith("BADSIG ") for line in lines)
    counts = Counter(line for line in lines if line.startswith("msg_"))
    expected = {f"msg_{pk}" for pk in ids}
    n = len(ids)
    ours = {k: v for k, v in counts.items() if k in expected}
    delivered = OutboxMessage.objects.filter(
        destination=f"webhook:{endpoint.pk}", status="delivered", parent_id__gte=ids[0], parent_id__lte=ids[-1]
    ).count()
    return {
        "received": sum(ours.values()),
        "distinct": len(ours),
        "lost": n - len(ours),
        "duplicates": sum(ours.values()) - len(ours),
        "others": sum(v for k, v in counts.items() if k not in expected),
        "bad_signatures": bad,
        "verified": len(lines) // 100,
        "delivered_rows": delivered,
    }


def clean_up(endpoint: WebhookEndpoint | None, first_id: int | None, last_id: int | None) -> None:
    """Delete what the run made: our outbox rows and their children, their sync events, and the
    endpoint (its delivery log goes with it). Audit rows stay: the trail is append-only."""
    with connection.cursor() as cursor:
        # Outbox rows first: the DELETE waits for any batch still holding them (another worker on
        # the same broker), whose sync events are then in place to be deleted next.
        if endpoint is not None:
            cursor.execute("DELETE FROM crm_platform_outboxmessage WHERE destination = %s", [f"webhook:{endpoint.pk}"])
        if first_id is not None:
            cursor.execute(
                "DELETE FROM crm_platform_outboxmessage WHERE object_type = %s AND id BETWEEN %s AND %s",
                [OBJECT_TYPE, first_id, last_id],
            )
        provider = f"webhook:{endpoint.pk}" if endpoint is not None else ""
        cursor.execute(
            "DELETE FROM integrations_syncevent WHERE provider = %s OR object_type = %s", [provider, OBJECT_TYPE]
        )
    if endpoint is not None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()
    left = (
        SyncEvent.objects.filter(object_type=OBJECT_TYPE).count()
        + OutboxMessage.objects.filter(object_type=OBJECT_TYPE).count()
    )
    print(f"cleaned up ({left} bench rows left)", flush=True)


def report(args, *, elapsed: float, ceiling: float, outcome: dict) -> None:
    rate = args.messages / elapsed
    print()
    print(
        f"relay: {args.messages:,} messages, celery -Q {QUEUE} -c {args.concurrency} (prefork) + sweep every "
        f"{SWEEP_SECONDS}s, loopback asyncio receiver; ceiling: one process, one requests.Session, same signing"
    )
    print(
        f"drained in {elapsed:.1f}s; receiver log: {outcome['received']:,} requests for our messages, "
        f"{outcome['distinct']:,} distinct, {outcome['lost']:,} lost, {outcome['duplicates']:,} duplicated, "
        f"{outcome['others']:,} for other messages; {outcome['bad_signatures']} bad of ~{outcome['verified']:,} "
        f"signatures checked (standardwebhooks); {outcome['delivered_rows']:,} rows delivered"
    )
    print_table(
        [
            Row(
                "deliveries/s",
                f"{rate:,.0f}",
                f">= {TARGET_PER_S}",
                rate >= TARGET_PER_S,
                ceiling=f"{ceiling:,.0f}",
                ratio=f"{rate / ceiling:.0%}",
            ),
            Row("lost", f"{outcome['lost']:,}", "0", outcome["lost"] == 0),
            Row("duplicated", f"{outcome['duplicates']:,}", "0", outcome["duplicates"] == 0),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
