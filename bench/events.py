"""Inbound events at volume (issue 5, "Volume and speed"), each figure beside its in-run ceiling
(DESIGN.md, "Ceilings": single events >= 60% of the one-insert view, batches >= 50% of the unnest view).

    DJANGO_DEBUG=true .venv/bin/python -m bench.events [--duration 10] [--rounds 2] [--batches 20]

Through a real gunicorn (sync workers, loopback) and a real Celery worker (the outbox relay the
events' writes kick, on a broker database of its own), against the contacts `manage.py
generate_data` left in the dev database (events name users sampled from them):

a. POST /api/v1/events at 16 connections (wrk; a Lua script gives every request its own
   Idempotency-Key and a user, type and body of its own), interleaved with the ceiling: a DRF view
   doing one idempotent INSERT per request on the same server.
b. POST /api/v1/events/batch, 1,000 events a request from 2 client threads, interleaved with the
   ceiling: a view doing json.loads and one INSERT ... SELECT FROM unnest of the 1,000 ids; and,
   for information, with a view writing only the rows every event must leave (activity, audit,
   sync log, stored key) into empty copies of their tables, no lookup and no logic.
c. A single-event run where 10% of requests are re-sent with the key (and body) of the one before
   and 10% name a user the CRM does not know yet (page_viewed creates them). Afterwards the
   activities and contacts it made are counted: duplicates (must be 0) and lost events.

The run's rows are removed afterwards (its activities, the contacts it created, its idempotency
records), so the volume stays what generate_data made; audit rows stay (append-only).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

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
from crm_platform.actor import Actor  # noqa: E402
from crm_platform.management.commands.generate_data import CONTACT_PREFIX  # noqa: E402
from crm_platform.services import api_key_create, api_key_revoke  # noqa: E402

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
    rows: list[Row] = []
    try:
        with celery_worker(env), gunicorn(workers=args.workers, env=env, log_path=args.server_log) as base:
            check_event(base, auth, users[0])
            print(f"warming up: one event for each of the {len(users):,} users, in batches ...", flush=True)
            rows += warm_rows(warm_users(base, auth, users, run), len(users))
            if "a" in args.only:
                print("a. single events against the one-insert view ...", flush=True)
                rows += single_rows(*single_figures(base, auth, users, run, args))
            if "b" in args.only:
                print("b. batches against the unnest view ...", flush=True)
                rows += batch_rows(*batch_figures(base, auth, users, run, args))
            if "c" in args.only:
                print("c. 10% re-sent with the same key ...", flush=True)
                resend_counts, resend_figure = resend_run(base, auth, users, run, args)
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
        f"{len(users):,} generated users sampled; gunicorn {args.workers} sync workers + 1 Celery worker (solo); "
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
        cursor.execute(
            f"SELECT external_id FROM contacts_contact TABLESAMPLE SYSTEM ({percent:f}) REPEATABLE (7) "  # noqa: S608
            "WHERE external_id LIKE %s AND merged_into_id IS NULL LIMIT %s",
            [CONTACT_PREFIX + "%", count],
        )
        users = [external_id for (external_id,) in cursor.fetchall()]
    if len(users) < min(count, 100):
        raise BenchError("too few generated contacts: run `manage.py generate_data` first")
    random.Random(7).shuffle(users)
    return users


def max_activity_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM contacts_activity")
        return cursor.fetchone()[0]


@contextlib.contextmanager
def celery_worker(env: dict[str, str]) -> Iterator[None]:
    """A real worker (solo pool) for the queues the outbox kick and the relay use."""
    command = [sys.executable, "-m", "celery", "-A", "crm_platform", "worker", "-Q", "sync,default"]
    command += ["--pool", "solo", "-l", "WARNING"]
    worker_env = {**env, "DJANGO_SETTINGS_MODULE": "crm_platform.settings"}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=worker_env, stdout=log, stderr=log, start_new_session=True)
        try:
            time.sleep(2)
            if proc.poll() is not None:
                log.seek(0)
                raise BenchError("the Celery worker exited:\n" + log.read().decode(errors="replace")[-3000:])
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def warm_rows(rate: float, users: int) -> list[Row]:
    figure = f"{rate:,.0f} events/s ({users:,} users, batches)"
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


def single_figures(base: str, auth: str, users: list[str], run: str, args) -> tuple[Figure, Figure]:
    load = {"connections": args.connections}
    ours_url, ceiling_url = base + "/api/v1/events", base + "/bench/ceiling/insert"
    wrk_events(ours_url, auth, users, f"{run}w", duration=WARMUP_SECONDS, **load)
    wrk_ceiling(ceiling_url, duration=WARMUP_SECONDS, **load)
    slices: dict[str, list[Figure]] = {"ours": [], "ceiling": []}
    for n in range(args.rounds):
        slices["ours"].append(
            wrk_events(ours_url, auth, users, f"{run}s{n}", duration=args.duration / args.rounds, **load)[0]
        )
        slices["ceiling"].append(wrk_ceiling(ceiling_url, duration=args.duration / args.rounds, **load))
    ours, ceiling = merge(slices["ours"]), merge(slices["ceiling"])
    for name, figure in (("/api/v1/events", ours), ("the one-insert view", ceiling)):
        if figure.non_2xx or figure.socket_errors:
            raise BenchError(f"{name}: {figure.non_2xx} non-2xx, {figure.socket_errors} socket errors")
    return ours, ceiling


def single_rows(ours: Figure, ceiling: Figure) -> list[Row]:
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
        )
    ]


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


def batch_figures(base: str, auth: str, users: list[str], run: str, args) -> tuple[float, float, float]:
    """Ours, the unnest ceiling (DESIGN.md) and the required-writes ceiling, interleaved."""
    ensure_event_write_tables()
    urls = {
        "ours": base + "/api/v1/events/batch",
        "unnest": base + "/bench/ceiling/events-unnest",
        "writes": base + "/bench/ceiling/event-writes",
    }
    headers = {"ours": {"Authorization": auth}, "unnest": {}, "writes": {}}
    checks = {"ours": check_batch, "unnest": check_ceiling, "writes": check_ceiling}
    rates: dict[str, list[float]] = {name: [] for name in urls}
    per_round = args.batches // args.rounds
    for n in range(-1, args.rounds):  # round -1 warms every view up
        for name, url in urls.items():
            bodies = batch_bodies(users, run, BATCH_CLIENTS if n < 0 else per_round, f"{name}{n}-")
            rate = post_all(url, bodies, headers[name], checks[name])
            if n >= 0:
                rates[name].append(rate)
    return tuple(sum(r) / len(r) for r in rates.values())


def batch_rows(ours: float, ceiling: float, writes: float) -> list[Row]:
    ratio = ours / ceiling
    return [
        Row(
            f"b. batch of {BATCH_SIZE:,}",
            f"{ours:,.0f} events/s",
            f">= {BATCH_PER_S:,}/s, or >= {BATCH_RATIO:.0%} of ceiling",
            ours >= BATCH_PER_S or ratio >= BATCH_RATIO,
            ceiling=f"{ceiling:,.0f} events/s (json.loads + unnest insert)",
            ratio=f"{ratio:.0%}",
        ),
        Row(
            "   vs the rows an event must write",
            f"{ours:,.0f} events/s",
            "info",
            None,
            ceiling=f"{writes:,.0f} events/s (activity, audit, sync, key rows; no logic)",
            ratio=f"{ours / writes:.0%}",
        ),
    ]


# -- c. re-sends --------------------------------------------------------------------------------------


def resend_run(base: str, auth: str, users: list[str], run: str, args) -> tuple[Counts, Figure]:
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
    return counts, figure


@dataclass
class Duplicates:
    activities: int  # accepted events (stored keys) with more than one activity
    lost: int  # accepted events (stored keys) with no activity
    stored: int  # keys stored as accepted
    contacts_created: int
    contacts_duplicated: int  # identities held by more than one contact
    new_users_sent: int  # distinct new users among the accepted events


def count_duplicates(run: str, start_id: int, key_id: int) -> Duplicates:
    """From the database alone: every key stored as accepted must have exactly one activity (wrk
    does not count the answers still in flight when it stops, so its own counts cannot say)."""
    marker = f"{run}r"
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH acts AS (SELECT properties->>'k' AS k, count(*) AS n FROM contacts_activity "
            "  WHERE id > %s AND properties->>'bench_run' = %s GROUP BY 1), "
            "keys AS (SELECT key FROM crm_platform_idempotencyrecord WHERE owner = %s AND key LIKE %s) "
            "SELECT count(*) FILTER (WHERE acts.n > 1), count(*) FILTER (WHERE acts.n IS NULL), count(*) "
            "FROM keys LEFT JOIN acts ON acts.k = keys.key",
            [start_id, marker, f"key:{key_id}", f"{marker}-%"],
        )
        activities, lost, stored = cursor.fetchone()
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
    return Duplicates(activities, lost, stored, created, duplicated, new_users)


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
            f"stored keys; {dup.contacts_created:,} contacts created for {dup.new_users_sent:,} new users",
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
        cursor.execute("DELETE FROM crm_platform_idempotencyrecord WHERE owner = %s", [f"key:{key_id}"])
        for copy in EVENT_WRITE_TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS {copy}")
    print(f"removed the run's {activities:,} activities and {contacts:,} contacts in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
