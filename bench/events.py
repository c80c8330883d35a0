"""Inbound events at volume (issue 5, "Volume and speed"): how fast the API accepts them, each
figure beside its in-run ceiling (DESIGN.md, "Ceilings": single events >= 60% of the one-insert
view, batches >= 50% of the unnest view), and how fast they are then applied to the CRM.

    DJANGO_DEBUG=true .venv/bin/python -m bench.events [--duration 10] [--rounds 2] [--batches 20]

Through a real gunicorn (sync workers, loopback) and a real Celery worker (solo pool, on a broker
database of its own: the inbox applier `integrations.inbox_apply`, kicked by the accepting
requests, and the outbox relay its writes kick; there is no beat, so nothing sweeps), against the
contacts `manage.py generate_data` left in the dev database (events name users sampled from them).

A request only checks the event and writes one inbox row (integrations/inbox.py) before its 202;
the applier applies the rows just after, many at a time. So each part gives two figures:

- accepted: requests (events) per second answered 202 while the load ran, the figure the issue's
  HTTP targets are about, judged against the ceiling as before;
- applied end to end: the phase's inbox rows applied per second, from the start of each load
  slice until the last of the slice's rows was applied (its `applied_at`), summed over the slices,
  and how long that backlog took to drain after the load stopped. Timestamps, not a wall clock
  over the whole part: after every slice of ours the bench waits until the run's inbox holds no
  pending row and the worker has no task queued or running (polling the database and the broker
  every 0.2 s; not sooner than 2 s after the load, for the requests wrk leaves in flight) before
  the next slice. So the applier never runs during a ceiling slice (it neither slows the ceiling
  down nor gets the machine to itself there), and neither the ceiling slices nor the waits
  count in the applied rate. A row the applier failed counts against it (all applied, 0 failed).

0. Warm-up: one page view for each sampled user, in batches (each contact's first touch rewrites
   its row); the next part starts only once the applier has drained it.
a. POST /api/v1/events at 16 connections (wrk; a Lua script gives every request its own
   Idempotency-Key and a user, type and body of its own), interleaved with the ceiling: a DRF view
   doing one idempotent INSERT per request on the same server. Accepted vs that ceiling, and
   applied end to end (info).
b. POST /api/v1/events/batch, 1,000 events a request from 2 client threads, interleaved with the
   ceiling: a view doing json.loads and one INSERT ... SELECT FROM unnest of the 1,000 ids (vs
   what we accept); with a view writing, after json.loads, only the inbox rows (an empty copy of
   the inbox table and its indexes; info: what keeping the accepted events costs at the least);
   and with a view writing only the rows every event must leave (activity,
   audit, sync log, inbox row) into empty copies of their tables, no lookup and no logic: that is
   what applying costs at the least, so it is set beside the applied end-to-end rate.
Beside a. and b., the CPU a request (or 1,000 events) took, from /proc (bench/cpu.py): in the
gunicorn workers and the PostgreSQL backends serving them, ours and the ceiling's, and what the
worker applying our events spent meanwhile (info). Throughput here swings with the machine;
these costs move far less, and their ratio says how much dearer our request is than the
ceiling's whatever else runs.

c. A single-event run where 10% of requests are re-sent with the key (and body) of the one before
   and 10% name a user the CRM does not know yet (page_viewed creates them). Once the applier has
   drained it, the database is counted: every inbox row of the run applied must have exactly one
   activity (more: duplicates, must be 0; none, or a row failed or still pending: lost), and no
   new user may have two contacts.

The run's rows are removed afterwards (its activities, the contacts it created, its inbox rows),
so the volume stays what generate_data made; audit and sync log rows stay (append-only).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TypeVar

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

import redis  # noqa: E402
import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from bench.ceiling import EVENT_WRITE_TABLES, ensure_ceiling_table, ensure_event_write_tables  # noqa: E402
from bench.common import (  # noqa: E402
    ROOT,
    BenchError,
    Figure,
    Row,
    _lua,
    ensure_wrk,
    gunicorn,
    merge,
    parse_wrk,
    print_table,
)
from bench.cpu import Cost, Meter, children, listener  # noqa: E402
from crm_platform.actor import Actor  # noqa: E402
from crm_platform.management.commands.generate_data import CONTACT_PREFIX  # noqa: E402
from crm_platform.redis import get_redis  # noqa: E402
from crm_platform.services import api_key_create, api_key_revoke  # noqa: E402
from integrations.inbox import KICK_FLAG  # noqa: E402
from integrations.models import InboundEvent  # noqa: E402

THREADS = 2
WARMUP_SECONDS = 2
BATCH_SIZE = 1000
BATCH_CLIENTS = 2
SINGLE_PER_S = 1000  # the absolute targets
SINGLE_P99_MS = 100
BATCH_PER_S = 20_000
SINGLE_RATIO = 0.6  # DESIGN.md
BATCH_RATIO = 0.5
# The common types: timeline events for known users, plus logins (a contact field under the conflict policy).
TYPES = ["food_logged"] * 4 + ["goal_progress"] * 2 + ["page_viewed"] * 2 + ["custom", "user_logged_in"]
NEW_USER_PREFIX = "bench-evt-"
BROKER_DB = 15  # the Celery broker of this run: a Redis database nobody else's worker listens on
DRAIN_TIMEOUT = 300  # seconds the applier may take to empty the run's inbox before the run fails
DRAIN_POLL = 0.2
# wrk stops without waiting for the answers in flight; their rows commit moments later (gunicorn
# finishes each request), so the inbox is not called drained sooner than this after a load.
SETTLE_SECONDS = 2.0
# The worker's queues and the hash where the Redis transport keeps the message of the task running
# (acks_late) on the broker database of the run.
BROKER_KEYS = ("sync", "default", "unacked")
INBOX = InboundEvent._meta.db_table
T = TypeVar("T")


@dataclass
class Counts:
    accepted: int = 0
    replayed: int = 0
    other: int = 0
    resent: int = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of wrk load per single figure (10)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved slices per figure (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    parser.add_argument("--batches", type=int, default=20, help="batch requests of 1,000 events per figure (20)")
    parser.add_argument("--resend-seconds", type=float, default=10, help="seconds of the 10%% re-send run (10)")
    parser.add_argument("--users", type=int, default=5000, help="generated users the events name (5,000)")
    parser.add_argument("--keep", action="store_true", help="keep the run's activities, contacts and keys")
    parser.add_argument("--only", default="a,b,c", help="which parts to run, e.g. a,c (default a,b,c)")
    parser.add_argument("--server-log", help="write gunicorn's output to this file")
    parser.add_argument("--worker-log", help="write the Celery worker's output (level INFO) to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.connections < THREADS or args.batches < args.rounds:
        parser.error(f"need --rounds >= 1, --duration > 0, --connections >= {THREADS}, --batches >= --rounds")

    run = f"{int(time.time())}{os.getpid() % 1000:03d}"
    ensure_ceiling_table()
    users = sample_users(args.users)
    start_id = max_activity_id()
    actor = Actor.system("bench")
    key, raw = api_key_create(name="bench events", scopes=["events:write"], actor=actor)
    auth = f"Bearer {raw}"
    broker = f"{settings.REDIS_URL.rsplit('/', 1)[0]}/{BROKER_DB}"
    env = {**os.environ, "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker}
    broker_client = redis.Redis.from_url(broker)
    broker_client.delete(*BROKER_KEYS, "unacked_index")  # what an aborted run may have left
    # A kick flag left by a server whose worker is gone would hold our kicks back up to its TTL.
    get_redis().delete(KICK_FLAG)
    rows: list[Row] = []
    try:
        with (
            celery_worker(env, log_path=args.worker_log) as worker,
            gunicorn(workers=args.workers, env=env, log_path=args.server_log) as base,
        ):
            inbox = Inbox(f"key:{key.pk}", worker, broker_client)
            master = listener(int(base.rsplit(":", 1)[1]))
            meter = Meter({"web": children(master) if master else set(), "worker": {worker.proc.pid}})
            check_event(base, auth, users[0])
            print(f"warming up: one event for each of the {len(users):,} users, in batches ...", flush=True)
            rows += warm_rows(*inbox.run(f"event:{run}-warm-%", lambda: warm_users(base, auth, users, run)))
            if "a" in args.only:
                print("a. single events against the one-insert view ...", flush=True)
                rows += single_rows(*single_figures(base, auth, users, run, args, inbox, meter))
            if "b" in args.only:
                print("b. batches against the unnest view and the required writes ...", flush=True)
                rows += batch_rows(*batch_figures(base, auth, users, run, args, inbox, meter))
            if "c" in args.only:
                print("c. 10% re-sent with the same key ...", flush=True)
                resend_counts, resend_figure = resend_run(base, auth, users, run, args, inbox)
        if "c" in args.only:
            duplicates = count_duplicates(run, start_id, key.pk)
            rows += resend_rows(resend_counts, resend_figure, duplicates, args.connections)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        api_key_revoke(api_key=key, actor=actor)
        if not args.keep:
            cleanup(start_id, key.pk)

    print()
    print(
        f"{len(users):,} generated users sampled; gunicorn {args.workers} sync workers + 1 Celery worker (solo: "
        "inbox applier and outbox relay); "
        f"wrk -t{THREADS} -c{args.connections} {args.duration:g}s in {args.rounds} interleaved slice(s); "
        f"batches of {BATCH_SIZE:,} from {BATCH_CLIENTS} client threads; same 2-core machine"
    )
    print_table(rows)
    return 0


# -- setup ------------------------------------------------------------------------------------------


def sample_users(count: int) -> list[str]:
    """External ids of `count` generated contacts (not merged away), spread over the table."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'contacts_contact'")
        total = max(cursor.fetchone()[0], 1)
        percent = min(100.0, count * 300 / total)
        while True:  # sampled pages may hold mostly dead versions or other contacts: widen
            cursor.execute(
                f"SELECT external_id FROM contacts_contact TABLESAMPLE SYSTEM ({percent:f}) REPEATABLE (7) "  # noqa: S608
                "WHERE external_id LIKE %s AND merged_into_id IS NULL LIMIT %s",
                [CONTACT_PREFIX + "%", count],
            )
            users = [external_id for (external_id,) in cursor.fetchall()]
            if len(users) >= count or percent >= 100:
                break
            percent = min(100.0, percent * 4)
    if len(users) < min(count, 100):
        raise BenchError("too few generated contacts: run `manage.py generate_data` first")
    random.Random(7).shuffle(users)
    return users


def max_activity_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM contacts_activity")
        return cursor.fetchone()[0]


@dataclass
class Worker:
    proc: subprocess.Popen
    log: IO[bytes]

    def check(self) -> None:
        """BenchError (with the end of its output) when the worker is gone."""
        if self.proc.poll() is not None:
            self.log.seek(0)
            raise BenchError("the Celery worker exited:\n" + self.log.read().decode(errors="replace")[-3000:])


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log_path: str | None = None) -> Iterator[Worker]:
    """A real worker for the queues the inbox applier, the outbox kick and the relay use. Solo
    pool: one task at a time, so the applier and the relay take turns (each runs until it has
    nothing left, then the next queued kick runs; a relay turn takes milliseconds here). More
    processes would add no applying: the applier takes one batch at a time (an advisory lock)."""
    command = [sys.executable, "-m", "celery", "-A", "crm_platform", "worker", "-Q", "sync,default"]
    command += ["--pool", "solo", "-l", "INFO" if log_path else "WARNING"]
    worker_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.settings"}  # DEBUG off, as production
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=worker_env, stdout=log, stderr=log, start_new_session=True)
        worker = Worker(proc, log)
        try:
            time.sleep(2)
            worker.check()
            yield worker
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Applied:
    """What the applier made of one phase's inbox rows, end to end."""

    applied: int = 0
    failed: int = 0
    seconds: float = 0.0  # from each load slice's start to its last row's applied_at, summed
    tail: float = 0.0  # the longest a slice's last row waited after the slice's load stopped

    def __add__(self, other: Applied) -> Applied:
        return Applied(
            self.applied + other.applied,
            self.failed + other.failed,
            self.seconds + other.seconds,
            max(self.tail, other.tail),
        )

    @property
    def rate(self) -> float:
        return self.applied / self.seconds if self.seconds > 0 else 0.0

    def figure(self) -> str:
        return (
            f"{self.rate:,.0f} events/s ({self.applied:,} applied, {self.failed:,} failed); "
            f"backlog drained {self.tail:.1f} s after the load"
        )


@dataclass
class Inbox:
    """The run's inbox rows (owner key:<the bench key's id>), the worker that applies them and
    its broker."""

    owner: str
    worker: Worker
    broker: redis.Redis

    def drain(self, stopped: float, timeout: float = DRAIN_TIMEOUT) -> float:
        """Wait until none of the run's rows is pending (the database polled every DRAIN_POLL
        seconds) and the worker has no task queued or running (kicks that will find nothing, the
        relay's turn: they would run into the next slice), twice in a row, and not before
        SETTLE_SECONDS after the load stopped at `stopped` (time.time()); the time.time() it saw
        so. BenchError after `timeout` seconds or when the worker is gone."""
        time.sleep(max(0.0, stopped + SETTLE_SECONDS - time.time()))
        deadline = time.monotonic() + timeout
        quiet = 0
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT count(*) FROM {INBOX} WHERE status = 'pending' AND owner = %s",  # noqa: S608
                    [self.owner],
                )
                pending = cursor.fetchone()[0]
            tasks = self.broker.llen("sync") + self.broker.llen("default") + self.broker.hlen("unacked")
            quiet = 0 if pending or tasks else quiet + 1
            if quiet >= 2:
                return time.time()
            self.worker.check()
            if time.monotonic() > deadline:
                raise BenchError(f"after {timeout:.0f} s, {pending:,} inbox rows of the run pending, {tasks} tasks")
            time.sleep(DRAIN_POLL)

    def tally(self, like: str, started: float, stopped: float) -> Applied:
        """How the rows whose key is LIKE `like` ended, for a load that ran from `started` to
        `stopped` (time.time(); the database runs on this machine, so its clock is ours)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE status = 'applied'), count(*) FILTER (WHERE status = 'failed'), "  # noqa: S608
                "count(*) FILTER (WHERE status = 'pending'), extract(epoch FROM max(applied_at)) "
                f"FROM {INBOX} WHERE owner = %s AND key LIKE %s",
                [self.owner, like],
            )
            applied, failed, pending, last = cursor.fetchone()
        if pending or last is None:
            raise BenchError(f"inbox rows {like!r}: {pending} pending, {applied + failed} applied or failed")
        return Applied(applied, failed, float(last) - started, max(0.0, float(last) - stopped))

    def run(self, like: str, load: Callable[[], T]) -> tuple[T, Applied]:
        """Run `load`, wait for the applier to drain the inbox, and tally the rows LIKE `like`."""
        started = time.time()
        result = load()
        stopped = time.time()
        self.drain(stopped)
        return result, self.tally(like, started, stopped)


def check_event(base: str, auth: str, user: str) -> None:
    body = {"type": "custom", "user": {"external_id": user}, "properties": {"bench_run": "check"}}
    headers = {"Authorization": auth, "Idempotency-Key": f"bench-check-{time.time()}"}
    response = requests.post(base + "/api/v1/events", json=body, headers=headers, timeout=10)
    if response.status_code != 202:
        raise BenchError(f"POST /api/v1/events answered {response.status_code}: {response.text[:300]}")


# -- warm-up -------------------------------------------------------------------------------------------


def warm_users(base: str, auth: str, users: list[str], run: str) -> float:
    """One page view per user, through the batch endpoint: the steady state of an active user base
    (each contact touched in the last few minutes, see inbound_timeline.TOUCH_EVERY; a first touch
    rewrites the contact row and its ~18 indexes). Returns the events per second of this cold pass."""
    bodies = []
    for start in range(0, len(users), BATCH_SIZE):
        chunk = users[start : start + BATCH_SIZE]
        events = [
            {
                "id": f"{run}-warm-{start + i}",
                "type": "page_viewed",
                "user": {"external_id": user},
                "properties": {"bench_run": run},
            }
            for i, user in enumerate(chunk)
        ]
        bodies.append(json.dumps({"events": events}))

    def check(response: requests.Response) -> None:
        if response.status_code != 202 or response.json().get("rejected"):
            raise BenchError(f"warm-up batch answered {response.status_code}: {response.text[:300]}")

    started = time.perf_counter()
    post_all(base + "/api/v1/events/batch", bodies, {"Authorization": auth}, check, size=None)
    return len(users) / (time.perf_counter() - started)


def warm_rows(rate: float, applied: Applied) -> list[Row]:
    figure = (
        f"accepted {rate:,.0f} events/s, applied {applied.rate:,.0f} events/s end to end "
        f"({applied.applied:,} users, batches; {applied.failed:,} failed)"
    )
    return [Row("0. warm-up: first touch of each user", figure, "info", None)]


# -- a. single events -----------------------------------------------------------------------------

_SCRIPT = """
local users = {%(users)s}
local types = {%(types)s}
local run, auth, resend, newusers = %(run)s, %(auth)s, %(resend)f, %(newusers)f
local threads = {}
local counter, last_key, last_body = 0, nil, nil
accepted, replayed, other, resent = 0, 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(tid * 7919 + os.time())
end

function request()
  local key, body
  if resend > 0 and last_key ~= nil and math.random() < resend then
    key, body, last_key = last_key, last_body, nil
    resent = resent + 1
  else
    counter = counter + 1
    key = run .. "-" .. tid .. "-" .. counter
    local kind, user = types[math.random(#types)], users[math.random(#users)]
    if newusers > 0 and math.random() < newusers then
      kind, user = "page_viewed", "%(new_prefix)s" .. key
    end
    body = '{"type":"' .. kind .. '","user":{"external_id":"' .. user .. '"},"properties":{"bench_run":"'
      .. run .. '","k":"' .. key .. '","calories":420,"name":"Oat bowl"}}'
    last_key, last_body = key, body
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = auth,
    ["Idempotency-Key"] = key}, body)
end

%(response)s

function done(summary, latency, requests)
  io.write(string.format("p95: %%d us\\n", latency:percentile(95)))
  local a, r, o, s = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a, r, o, s = a + t:get("accepted"), r + t:get("replayed"), o + t:get("other"), s + t:get("resent")
  end
  io.write(string.format("counts: %%d %%d %%d %%d\\n", a, r, o, s))
end
"""

_COUNTING = """
function response(status, headers, body)
  if status == 202 then
    if headers["Idempotent-Replayed"] then replayed = replayed + 1 else accepted = accepted + 1 end
  else
    other = other + 1
  end
end
"""


def wrk_events(
    url: str, auth: str, users: list[str], run: str, *, duration: float, connections: int, resend=0.0, newusers=0.0
) -> tuple[Figure, Counts]:
    """wrk POSTing one event per request, each with its own Idempotency-Key (or, with `resend`,
    that share of requests re-sending the key and body of the request before)."""
    script = _SCRIPT % {
        "users": ",".join(_lua(u) for u in users),
        "types": ",".join(_lua(t) for t in TYPES),
        "run": _lua(run),
        "auth": _lua(auth),
        "resend": resend,
        "newusers": newusers,
        "new_prefix": f"{NEW_USER_PREFIX}",
        "response": _COUNTING if resend or newusers else "",
    }
    command = [ensure_wrk(), f"-t{THREADS}", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        result = subprocess.run([*command, "-s", file.name, url], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    figure = parse_wrk(result.stdout)
    counts = Counts()
    found = re.search(r"^counts: (\d+) (\d+) (\d+) (\d+)$", result.stdout, re.MULTILINE)
    if found:
        counts = Counts(*(int(n) for n in found.groups()))
    return figure, counts


_P95 = 'done = function(s, latency, r) io.write(string.format("p95: %d us\\n", latency:percentile(95))) end\n'


def wrk_ceiling(url: str, *, duration: float, connections: int) -> Figure:
    command = [ensure_wrk(), f"-t{THREADS}", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write('wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n')
        file.write(_P95)
        file.flush()
        result = subprocess.run([*command, "-s", file.name, url], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return parse_wrk(result.stdout)


def single_figures(
    base: str, auth: str, users: list[str], run: str, args, inbox: Inbox, meter: Meter
) -> tuple[Figure, Figure, Applied, dict[str, Cost]]:
    """Ours (accepted), the one-insert ceiling, interleaved, what the applier made of our
    slices' rows (each slice drained before the ceiling's, see the module docstring), and the
    CPU each took per request (bench/cpu.py; ours until its slice was drained)."""
    load = {"connections": args.connections}
    ours_url, ceiling_url = base + "/api/v1/events", base + "/bench/ceiling/insert"
    inbox.run(f"{run}w-%", lambda: wrk_events(ours_url, auth, users, f"{run}w", duration=WARMUP_SECONDS, **load))
    wrk_ceiling(ceiling_url, duration=WARMUP_SECONDS, **load)
    slices: dict[str, list[Figure]] = {"ours": [], "ceiling": []}
    costs = {"ours": Cost(), "ceiling": Cost()}
    applied = Applied()
    for n in range(args.rounds):
        duration = args.duration / args.rounds
        meter.start()
        (figure, _), slice_applied = inbox.run(
            f"{run}s{n}-%", lambda n=n, d=duration: wrk_events(ours_url, auth, users, f"{run}s{n}", duration=d, **load)
        )
        costs["ours"].add(meter.stop(), figure.requests)
        slices["ours"].append(figure)
        applied += slice_applied
        meter.start()
        slices["ceiling"].append(wrk_ceiling(ceiling_url, duration=duration, **load))
        costs["ceiling"].add(meter.stop(), slices["ceiling"][-1].requests)
    ours, ceiling = merge(slices["ours"]), merge(slices["ceiling"])
    for name, figure in (("/api/v1/events", ours), ("the one-insert view", ceiling)):
        if figure.non_2xx or figure.socket_errors:
            raise BenchError(f"{name}: {figure.non_2xx} non-2xx, {figure.socket_errors} socket errors")
    return ours, ceiling, applied, costs


def single_rows(ours: Figure, ceiling: Figure, applied: Applied, costs: dict[str, Cost]) -> list[Row]:
    ratio = ours.rps / ceiling.rps
    absolute = ours.rps >= SINGLE_PER_S and ours.p99_ms < SINGLE_P99_MS
    return [
        Row(
            "a. single events, c16",
            f"{ours.rps:,.0f} events/s, p50 {ours.p50_ms:.1f} ms, p99 {ours.p99_ms:.1f} ms",
            f">= {SINGLE_PER_S:,}/s & p99 < {SINGLE_P99_MS} ms, or >= {SINGLE_RATIO:.0%} of ceiling",
            absolute or ratio >= SINGLE_RATIO,
            ceiling=f"{ceiling.rps:,.0f} req/s, p99 {ceiling.p99_ms:.1f} ms (one-insert view)",
            ratio=f"{ratio:.0%}",
        ),
        Row("   applied end to end", applied.figure(), "info; all applied, 0 failed", applied.failed == 0),
        cpu_row("   CPU per request", costs["ours"], costs["ceiling"], 1, "one-insert view"),
    ]


def cpu_row(name: str, ours: Cost, ceiling: Cost, unit: int, ceiling_name: str) -> Row:
    """What a request (or `unit` events) cost in CPU: ours in the web workers and the database
    backends serving them, plus the worker applying them meanwhile; the ceiling's in the web
    workers and their backends. The ratio compares the requests' own costs (info)."""
    digits = 2 if unit == 1 else 0

    def per(cost: Cost, *groups: str) -> float:
        return sum(cost.per(group, unit) for group in groups)

    def ms(cost: Cost, *groups: str) -> str:
        return f"{per(cost, *groups):.{digits}f}"

    ours_request, ceiling_request = per(ours, "web", "web db"), per(ceiling, "web", "web db")
    return Row(
        name,
        f"{ms(ours, 'web', 'web db')} ms (web {ms(ours, 'web')} + database {ms(ours, 'web db')}); "
        f"applying {ms(ours, 'worker', 'worker db')} ms",
        "info",
        None,
        ceiling=f"{ms(ceiling, 'web', 'web db')} ms (web {ms(ceiling, 'web')} + database "
        f"{ms(ceiling, 'web db')}, {ceiling_name})",
        ratio=f"{ceiling_request / ours_request:.0%}" if ours_request else "",
    )


# -- b. batches -------------------------------------------------------------------------------------


def batch_bodies(users: list[str], run: str, count: int, tag: str) -> list[str]:
    rng = random.Random(f"{run}{tag}")
    bodies = []
    for b in range(count):
        events = []
        for i in range(BATCH_SIZE):
            event_id = f"{run}-{tag}{b}-{i}"
            events.append(
                {
                    "id": event_id,
                    "type": rng.choice(TYPES),
                    "user": {"external_id": rng.choice(users)},
                    "properties": {"bench_run": run, "k": event_id, "calories": 420, "name": "Oat bowl"},
                }
            )
        bodies.append(json.dumps({"events": events}))
    return bodies


def post_all(url: str, bodies: list[str], headers: dict[str, str], check, size: int | None = BATCH_SIZE) -> float:
    """POST every body from BATCH_CLIENTS threads (a session each); events per second overall
    (`size` events a body; None: the caller counts)."""
    local = threading.local()

    def post(body: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers.update({**headers, "Content-Type": "application/json"})
        check(local.session.post(url, data=body, timeout=120))

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(BATCH_CLIENTS) as pool:
        list(pool.map(post, bodies))
    return len(bodies) * (size or 1) / (time.perf_counter() - started)


def check_batch(response: requests.Response) -> None:
    if response.status_code != 202:
        raise BenchError(f"batch answered {response.status_code}: {response.text[:300]}")
    body = response.json()
    if body.get("accepted") != BATCH_SIZE:
        rejected = [r for r in body.get("results", []) if r.get("status") != "accepted"][:3]
        raise BenchError(f"batch: {body.get('accepted')} of {BATCH_SIZE} accepted, e.g. {rejected}")


def check_ceiling(response: requests.Response) -> None:
    if response.status_code != 200:
        raise BenchError(f"ceiling view answered {response.status_code}: {response.text[:300]}")


def batch_figures(
    base: str, auth: str, users: list[str], run: str, args, inbox: Inbox, meter: Meter
) -> tuple[float, float, float, float, Applied, dict[str, Cost]]:
    """Ours (accepted), the unnest ceiling (DESIGN.md), the inbox-row ceiling and the
    required-writes ceiling, interleaved, what the applier made of our rounds' rows (each
    round's drained before the ceilings run), and the CPU ours and the unnest view took."""
    ensure_event_write_tables()
    urls = {
        "ours": base + "/api/v1/events/batch",
        "unnest": base + "/bench/ceiling/events-unnest",
        "inbox": base + "/bench/ceiling/inbox-writes",
        "writes": base + "/bench/ceiling/event-writes",
    }
    headers = {"ours": {"Authorization": auth}, "unnest": {}, "inbox": {}, "writes": {}}
    checks = {"ours": check_batch, "unnest": check_ceiling, "inbox": check_ceiling, "writes": check_ceiling}
    rates: dict[str, list[float]] = {name: [] for name in urls}
    costs = {"ours": Cost(), "unnest": Cost()}
    applied = Applied()
    per_round = args.batches // args.rounds
    for n in range(-1, args.rounds):  # round -1 warms every view up
        for name, url in urls.items():
            bodies = batch_bodies(users, run, BATCH_CLIENTS if n < 0 else per_round, f"{name}{n}-")
            post = functools.partial(post_all, url, bodies, headers[name], checks[name])
            meter.start()
            if name == "ours":
                rate, round_applied = inbox.run(f"event:{run}-{name}{n}-%", post)
                if n >= 0:
                    applied += round_applied
            else:
                rate = post()
            if n >= 0:
                rates[name].append(rate)
                if name in costs:
                    costs[name].add(meter.stop(), len(bodies) * BATCH_SIZE)
    ours, unnest, inbox_rows, writes = (sum(r) / len(r) for r in rates.values())
    return ours, unnest, inbox_rows, writes, applied, costs


def batch_rows(
    ours: float, ceiling: float, inbox_rows: float, writes: float, applied: Applied, costs: dict[str, Cost]
) -> list[Row]:
    ratio = ours / ceiling
    return [
        Row(
            f"b. batch of {BATCH_SIZE:,}, accepted",
            f"{ours:,.0f} events/s",
            f">= {BATCH_PER_S:,}/s, or >= {BATCH_RATIO:.0%} of ceiling",
            ours >= BATCH_PER_S or ratio >= BATCH_RATIO,
            ceiling=f"{ceiling:,.0f} events/s (json.loads + unnest insert)",
            ratio=f"{ratio:.0%}",
        ),
        Row(
            "   vs the row accepting must write",
            f"{ours:,.0f} events/s",
            "info",
            None,
            ceiling=f"{inbox_rows:,.0f} events/s (json.loads + the inbox rows, same table and indexes; no checks)",
            ratio=f"{ours / inbox_rows:.0%}",
        ),
        Row(
            "   applied end to end",
            applied.figure(),
            "info; all applied, 0 failed",
            applied.failed == 0,
            ceiling=f"{writes:,.0f} events/s (rows an event must write: activity, audit, sync, inbox; no logic)",
            ratio=f"{applied.rate / writes:.0%}",
        ),
        cpu_row("   CPU per 1,000 events", costs["ours"], costs["unnest"], BATCH_SIZE, "unnest view"),
    ]


# -- c. re-sends --------------------------------------------------------------------------------------


def resend_run(base: str, auth: str, users: list[str], run: str, args, inbox: Inbox) -> tuple[Counts, Figure]:
    """The run, then the applier's drain (what it left is counted afterwards, count_duplicates)."""
    figure, counts = wrk_events(
        base + "/api/v1/events",
        auth,
        users,
        f"{run}r",
        duration=args.resend_seconds,
        connections=args.connections,
        resend=0.1,
        newusers=0.1,
    )
    inbox.drain(time.time())
    return counts, figure


@dataclass
class Duplicates:
    activities: int  # applied inbox rows with more than one activity
    lost: int  # applied inbox rows with no activity, plus rows failed or still pending
    stored: int  # inbox rows (events accepted, each once)
    failed: int  # of which the applier failed
    pending: int  # of which still pending (none once drained)
    contacts_created: int
    contacts_duplicated: int  # identities held by more than one contact
    new_users_sent: int  # distinct new users among the applied events


def count_duplicates(run: str, start_id: int, key_id: int) -> Duplicates:
    """From the database alone, once the applier drained the run: every inbox row of the run
    applied must have exactly one activity (its properties' k is the row's key); a row failed or
    still pending is an event lost (wrk does not count the answers still in flight when it stops,
    so its own counts cannot say)."""
    marker = f"{run}r"
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH acts AS (SELECT properties->>'k' AS k, count(*) AS n FROM contacts_activity "  # noqa: S608
            "  WHERE id > %s AND properties->>'bench_run' = %s GROUP BY 1) "
            "SELECT count(*) FILTER (WHERE e.status = 'applied' AND acts.n > 1), "
            "count(*) FILTER (WHERE e.status = 'applied' AND acts.n IS NULL), count(*), "
            "count(*) FILTER (WHERE e.status = 'failed'), count(*) FILTER (WHERE e.status = 'pending') "
            f"FROM {INBOX} e LEFT JOIN acts ON acts.k = e.key WHERE e.owner = %s AND e.key LIKE %s",
            [start_id, marker, f"key:{key_id}", f"{marker}-%"],
        )
        activities, unapplied, stored, failed, pending = cursor.fetchone()
        cursor.execute(
            "SELECT count(*), count(*) - count(DISTINCT external_id) - count(*) FILTER (WHERE external_id IS NULL) "
            "+ count(email) - count(DISTINCT email) FROM contacts_contact WHERE external_id LIKE %s",
            [f"{NEW_USER_PREFIX}{marker}%"],
        )
        created, duplicated = cursor.fetchone()
        cursor.execute(
            "SELECT count(DISTINCT c.external_id) FROM contacts_activity a "
            "JOIN contacts_contact c ON c.id = a.contact_id "
            "WHERE a.id > %s AND a.properties->>'bench_run' = %s AND c.external_id LIKE %s",
            [start_id, marker, f"{NEW_USER_PREFIX}{marker}%"],
        )
        new_users = cursor.fetchone()[0]
    lost = unapplied + failed + pending
    return Duplicates(activities, lost, stored, failed, pending, created, duplicated, new_users)


def resend_rows(counts: Counts, figure: Figure, dup: Duplicates, connections: int) -> list[Row]:
    clean = dup.activities == 0 and dup.contacts_duplicated == 0 and dup.lost == 0 and counts.other == 0
    return [
        Row(
            "c. 10% re-sent, same key",
            f"{figure.requests:,} requests ({counts.resent:,} re-sent): {counts.accepted:,} accepted, "
            f"{counts.replayed:,} replayed, {counts.other:,} other; {figure.rps:,.0f} req/s",
            "re-sends replayed, no other answer",
            # wrk counts a re-send when it sends it; the few still in flight when it stops go unanswered.
            counts.other == 0 and counts.resent - counts.replayed <= connections,
        ),
        Row(
            "   duplicates afterwards",
            f"activities {dup.activities}, contacts {dup.contacts_duplicated}; lost {dup.lost} of {dup.stored:,} "
            f"queued events ({dup.failed} failed, {dup.pending} pending); {dup.contacts_created:,} contacts "
            f"created for {dup.new_users_sent:,} new users",
            "0 duplicates, 0 lost",
            clean and dup.contacts_created == dup.new_users_sent,
        ),
    ]


def cleanup(start_id: int, key_id: int) -> None:
    """Remove what the run wrote (not the audit trail), so the volume stays what generate_data made."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM contacts_activity WHERE id > %s AND properties ? 'bench_run'", [start_id])
        activities = cursor.rowcount
        new_contacts = "SELECT id FROM contacts_contact WHERE external_id LIKE %s"
        for table in ("contacts_activity", "contacts_lifecycletransition"):
            cursor.execute(f"DELETE FROM {table} WHERE contact_id IN ({new_contacts})", [NEW_USER_PREFIX + "%"])  # noqa: S608
        cursor.execute("DELETE FROM contacts_contact WHERE external_id LIKE %s", [NEW_USER_PREFIX + "%"])
        contacts = cursor.rowcount
        cursor.execute(f"DELETE FROM {INBOX} WHERE owner = %s", [f"key:{key_id}"])  # noqa: S608
        inbox_rows = cursor.rowcount
        for copy in EVENT_WRITE_TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS {copy}")
    print(
        f"removed the run's {activities:,} activities, {contacts:,} contacts and {inbox_rows:,} inbox rows "
        f"in {time.monotonic() - started:.1f}s"
    )


if __name__ == "__main__":
    sys.exit(main())
