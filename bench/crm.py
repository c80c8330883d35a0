"""The core CRM at volume (issue 4, "Volume and speed"), each figure beside its in-run ceiling where
one applies (DESIGN.md: reads >= 50% of the plain DRF view, batch ingest >= 50% of the unnest view).

    DJANGO_DEBUG=true .venv/bin/python -m bench.crm [--contacts 1000000] [--activities 5000000] [--deals 200000]

1. Volume: `manage.py generate_data` tops the generated rows up to the numbers asked (nothing to do
   when they are there; pass smaller numbers for a quick run). Contacts are timed on their own.
   Freshly loaded tables are VACUUM ANALYZEd, as autovacuum would have done long since in production.
2. Through a real gunicorn (2 sync workers, loopback, wrk on the same 2 cores), with API keys:
   GET /api/v1/contacts?stage=lead (first page), GET /api/v1/contacts?email=<one of 1,000 existing
   emails, in turn>, and the plain DRF ceiling view, interleaved, for req/s and the ratio. The p95
   judged is a one-client Python loop's (N sequential keep-alive requests: the request's own
   latency); wrk's p95 under its closed-loop load (a Lua `done` hook printing
   latency:percentile(95)) is shown beside it: there each request also waits for about
   connections / workers others. Then POST /api/v1/contacts/bulk-upsert (1,000 new contacts a
   request, then the same 1,000 again as updates) from 2 client threads, against the unnest ceiling
   view doing the same into an empty copy of the contacts table; the contacts it made are deleted
   afterwards.
3. In-process (django.test.Client, a superuser): the admin contact changelist, plain, filtered
   and searched by email and by name: server time p50/p95 and the queries one request makes.
4. In-process: leads.selectors.pipeline_stats over the generated deals.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

import requests  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import CharField  # noqa: E402
from django.db.models.functions import Cast  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402

from bench.api_baseline import check_ok, measure  # noqa: E402
from bench.ceiling import ensure_ceiling_table, ensure_upsert_ceiling_table  # noqa: E402
from bench.common import BenchError, Figure, Row, gunicorn, percentile, print_table, timed  # noqa: E402
from contacts.models import Contact  # noqa: E402
from crm_platform.actor import Actor  # noqa: E402
from crm_platform.management.commands.generate_data import (  # noqa: E402
    ACTIVITY_SOURCE,
    CONTACT_PREFIX,
    DEAL_PREFIX,
    leads_ready,
)
from crm_platform.models import OutboxMessage  # noqa: E402
from crm_platform.services import api_key_create, api_key_revoke  # noqa: E402

WORKERS = 2
THREADS = 2
BULK_ROWS = 1000
BULK_CLIENTS = 2
LIST_P95_MS = 50  # the issue's targets
EMAIL_P95_MS = 20
ADMIN_MS = 500
PIPELINE_MS = 200
BULK_PER_S = 5000
GENERATE_1M_S = 180
READ_RATIO = 0.5  # DESIGN.md
BATCH_RATIO = 0.5
TABLES = ("contacts_contact", "contacts_activity", "contacts_order", "leads_deal", "leads_dealstagechange")


@dataclass
class Volume:
    contacts: int
    activities: int
    deals: int
    contacts_added: int = 0
    contacts_seconds: float = 0.0
    rest_seconds: float = 0.0
    vacuum_seconds: float = 0.0


@dataclass
class Timing:
    """In-process figures: milliseconds per call, and the queries one call made."""

    p50_ms: float
    p95_ms: float
    queries: int
    full_counts: int = 0  # COUNTs of contacts without a LIMIT
    counts: int = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000, help="generated contacts (default 1,000,000)")
    parser.add_argument("--activities", type=int, default=5_000_000, help="generated activities (default 5,000,000)")
    parser.add_argument("--orders", type=int, default=100_000, help="generated orders (default 100,000)")
    parser.add_argument("--deals", type=int, default=200_000, help="generated deals, if leads has them (200,000)")
    parser.add_argument("--seed", type=int, default=1, help="generate_data's seed (default 1)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of wrk load per figure (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved slices per figure (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--samples", type=int, default=200, help="one-client requests per read figure (200)")
    parser.add_argument("--repeat", type=int, default=20, help="in-process calls per admin/pipeline figure (20)")
    parser.add_argument("--bulk-requests", type=int, default=20, help="bulk upsert requests per figure (20)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.connections < THREADS or args.bulk_requests < 1:
        parser.error(f"need --rounds >= 1, --duration > 0, --connections >= {THREADS}, --bulk-requests >= 1")

    steps: dict[str, float] = {}
    try:
        started = time.monotonic()
        volume = ensure_volume(args)
        steps["volume (generate_data, vacuum)"] = time.monotonic() - started
        emails, name = samples(args.seed)

        started = time.monotonic()
        reads, bulk = api_rows(args, emails)
        steps["API through gunicorn (reads, bulk upsert)"] = time.monotonic() - started

        started = time.monotonic()
        admin = admin_rows(args, emails[0], name)
        steps["admin changelist (in-process)"] = time.monotonic() - started

        started = time.monotonic()
        pipeline = pipeline_rows(args)
        steps["pipeline stats (in-process)"] = time.monotonic() - started
    except (BenchError, CommandError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    rows = reads + admin + pipeline + bulk + generate_rows(volume)

    print()
    print(
        f"volume: {volume.contacts:,} generated contacts, {volume.activities:,} activities, {volume.deals:,} deals; "
        f"gunicorn {WORKERS} sync workers, wrk -t{THREADS} -c{args.connections} {args.duration:g}s "
        f"in {args.rounds} interleaved slice(s), same 2-core machine"
    )
    print_table(rows)
    print()
    for step, seconds in steps.items():
        print(f"step: {step}: {seconds:.1f}s")
    return 0


# -- 1. volume ------------------------------------------------------------------------------------


def generated_counts() -> tuple[int, int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM contacts_contact WHERE external_id LIKE %s", [CONTACT_PREFIX + "%"])
        contacts = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM contacts_activity WHERE source = %s", [ACTIVITY_SOURCE])
        activities = cursor.fetchone()[0]
        deals = 0
        if leads_ready():
            cursor.execute("SELECT count(*) FROM leads_deal WHERE name LIKE %s", [DEAL_PREFIX + "%"])
            deals = cursor.fetchone()[0]
    return contacts, activities, deals


def ensure_volume(args) -> Volume:
    contacts, activities, deals = generated_counts()
    want_deals = args.deals if leads_ready() else 0
    volume = Volume(contacts, activities, deals)
    if contacts < args.contacts:
        print(f"generating contacts: {contacts:,} there, {args.contacts:,} wanted", flush=True)
        started = time.monotonic()
        call_command("generate_data", contacts=args.contacts, seed=args.seed, stdout=sys.stdout)
        volume.contacts_seconds = time.monotonic() - started
        volume.contacts_added = args.contacts - contacts
    if activities < args.activities or deals < want_deals or volume.contacts_added:
        started = time.monotonic()
        call_command(
            "generate_data",
            activities=args.activities,
            orders=args.orders,
            deals=want_deals,
            seed=args.seed,
            stdout=sys.stdout,
        )
        volume.rest_seconds = time.monotonic() - started
    volume.vacuum_seconds = vacuum_fresh_tables()
    volume.contacts, volume.activities, volume.deals = generated_counts()
    return volume


def vacuum_fresh_tables() -> float:
    """VACUUM ANALYZE the tables that took many rows since their last vacuum: after a bulk load
    their visibility map is empty (no index-only scans) and every first read sets hint bits."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s) "
            "AND n_ins_since_vacuum > greatest(10000, n_live_tup / 10)",
            [list(TABLES)],
        )
        fresh = [name for (name,) in cursor.fetchall()]
        for table in fresh:
            print(f"VACUUM (ANALYZE) {table} ...", flush=True)
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    return time.monotonic() - started


def samples(seed: int) -> tuple[list[str], str]:
    """1,000 emails of existing generated contacts, and a first and last name to search for."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'contacts_contact'")
        total = max(cursor.fetchone()[0], 1)
        percent = min(100.0, 300_000 / total)
        cursor.execute(
            f"SELECT email, first_name, last_name FROM contacts_contact TABLESAMPLE SYSTEM ({percent:f}) "  # noqa: S608
            "REPEATABLE (%s) WHERE email IS NOT NULL AND NOT is_archived AND external_id LIKE %s LIMIT 1000",
            [seed, CONTACT_PREFIX + "%"],
        )
        found = cursor.fetchall()
    if not found:
        raise BenchError("no generated contacts to sample: run generate_data first")
    first, last = found[0][1], found[0][2]
    return [email for email, _, _ in found], f"{first} {last}".lower()


def generate_rows(volume: Volume) -> list[Row]:
    if not volume.contacts_added:
        return [Row("f. generate_data 1M contacts", "not generated in this run", f"< {GENERATE_1M_S} s", None)]
    rate = volume.contacts_added / volume.contacts_seconds
    figure = f"{volume.contacts_added:,} in {volume.contacts_seconds:.1f} s ({rate:,.0f}/s)"
    judged = volume.contacts_added >= 1_000_000
    rows = [
        Row(
            "f. generate_data contacts",
            figure,
            f"1M < {GENERATE_1M_S} s",
            volume.contacts_seconds < GENERATE_1M_S if judged else None,
        )
    ]
    rows.append(Row("   then activities, orders, deals", f"{volume.rest_seconds:.1f} s", "info", None))
    rows.append(Row("   then VACUUM ANALYZE", f"{volume.vacuum_seconds:.1f} s", "info", None))
    return rows


# -- 2. through gunicorn ----------------------------------------------------------------------------


def api_rows(args, emails: list[str]) -> tuple[list[Row], list[Row]]:
    """The read figures and the bulk upsert figures."""
    ensure_ceiling_table()
    ensure_upsert_ceiling_table()
    actor = Actor.system("bench")
    read_key, read_raw = api_key_create(name="bench crm read", scopes=["contacts:read"], actor=actor)
    write_key, write_raw = api_key_create(name="bench crm write", scopes=["contacts:write"], actor=actor)
    read_auth = {"Authorization": f"Bearer {read_raw}"}
    list_path = "/api/v1/contacts?stage=lead"
    email_paths = [f"/api/v1/contacts?email={quote(email)}" for email in emails]
    try:
        with gunicorn(workers=WORKERS) as base:
            check_ok(base + list_path, read_auth)
            check_found(base + email_paths[0], read_auth, emails[0])
            print("measuring the contact list and email search against the plain DRF view ...", flush=True)
            figures = measure(
                {
                    "list": {"url": base + list_path, "headers": read_auth},
                    "email": {"url": base + "/api/v1/contacts", "headers": read_auth, "paths": email_paths},
                    "drf": {"url": base + "/bench/ceiling/drf"},
                },
                rounds=args.rounds,
                duration=args.duration,
                connections=args.connections,
                threads=THREADS,
            )
            one_client = {
                "list": one_client_ms(base, [list_path], read_auth, args.samples),
                "email": one_client_ms(base, email_paths, read_auth, args.samples),
            }
            print("measuring bulk upsert against the unnest ceiling ...", flush=True)
            bulk = bulk_figures(base, {"Authorization": f"Bearer {write_raw}"}, args.bulk_requests)
    finally:
        api_key_revoke(api_key=read_key, actor=actor)
        api_key_revoke(api_key=write_key, actor=actor)
    return read_rows(figures, one_client), bulk


def check_found(url: str, headers: dict[str, str], email: str) -> None:
    response = requests.get(url, headers=headers, timeout=5)
    results = response.json().get("results", []) if response.status_code == 200 else []
    if [r.get("email") for r in results] != [email]:
        raise BenchError(f"GET {url} did not find exactly {email}: {response.status_code} {response.text[:300]}")


def one_client_ms(base: str, paths: list[str], headers: dict[str, str], count: int) -> list[float]:
    """Milliseconds per request of one client in a loop (keep-alive), the server otherwise idle."""
    session = requests.Session()
    session.headers.update(headers)
    position = iter(range(10**9))

    def call():
        path = paths[next(position) % len(paths)]
        response = session.get(base + path, timeout=5)
        if response.status_code != 200:
            raise BenchError(f"GET {path} answered {response.status_code}")

    return timed(call, repeat=count, warmup=5)


def read_rows(figures: dict[str, Figure], one_client: dict[str, list[float]]) -> list[Row]:
    """p95 is judged on one client's loop (the request's own latency); under wrk's closed-loop load
    every request also queues behind the others (about connections / workers of them), so that
    p95 is shown for information beside the throughput it came with."""
    drf = figures["drf"]
    rows = []
    for label, key, target in (
        ("a. contact list ?stage=lead", "list", LIST_P95_MS),
        ("b. exact email ?email=", "email", EMAIL_P95_MS),
    ):
        ours = figures[key]
        ratio = ours.rps / drf.rps
        p95 = percentile(one_client[key], 95)
        rows += [
            Row(
                f"{label}: p95, one client",
                f"{p95:.1f} ms (p50 {statistics.median(one_client[key]):.1f})",
                f"< {target} ms",
                p95 < target,
            ),
            Row(
                f"{label}: throughput",
                f"{ours.rps:,.0f} req/s",
                f">= {READ_RATIO:.0%} of ceiling",
                ratio >= READ_RATIO,
                ceiling=f"{drf.rps:,.0f} req/s (plain DRF view)",
                ratio=f"{ratio:.0%}",
            ),
            Row(
                f"{label}: p95 under that load",
                f"{ours.p95_ms:.1f} ms (p50 {ours.p50_ms:.1f}, p99 {ours.p99_ms:.1f})",
                "info",
                None,
            ),
        ]
    return rows


def bulk_figures(base: str, headers: dict[str, str], count: int) -> list[Row]:
    """Contacts per second through the bulk upsert, new contacts then the same ones again, from
    BULK_CLIENTS threads; the ceiling view gets the same bodies."""
    run = f"{int(time.time())}-{os.getpid()}"
    bodies = [
        [{"email": f"bench-bulk-{run}-{b}-{i}@example.com", "first_name": "Bulk"} for i in range(BULK_ROWS)]
        for b in range(count)
    ]
    warmup = [{"email": f"bench-bulk-{run}-warmup-{i}@example.com", "first_name": "Warm"} for i in range(BULK_ROWS)]
    product = base + "/api/v1/contacts/bulk-upsert"
    ceiling = base + "/bench/ceiling/bulk-upsert"
    try:
        return _bulk_rows(product, ceiling, headers, bodies, warmup)
    finally:
        remove_bulk_contacts()


def remove_bulk_contacts() -> None:
    """Delete the contacts the bulk figures created (this run's and any a failed run left), so the
    volume stays what generate_data made: thousands of new Visitors on top of the id order would
    change what the next run's list queries have to skip. Their undelivered outbox events go too:
    a relay would otherwise announce people who never existed. (Audit rows stay: append-only.)"""
    started = time.monotonic()
    contacts = Contact.objects.filter(email__startswith="bench-bulk-")
    ids = contacts.annotate(text_id=Cast("id", CharField())).values("text_id")
    OutboxMessage.objects.filter(object_type="contacts.contact", object_id__in=ids).exclude(
        status=OutboxMessage.Status.DELIVERED
    ).delete()
    deleted, _ = contacts.delete()
    if deleted:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) contacts_contact")
        print(f"removed the bulk upsert's {deleted:,} rows and vacuumed in {time.monotonic() - started:.1f}s")


def _bulk_rows(product: str, ceiling: str, headers: dict[str, str], bodies: list, warmup: list) -> list[Row]:
    probe = requests.post(product, json={"contacts": warmup}, headers=headers, timeout=120)
    if probe.status_code == 404:
        missing = "not measurable yet: no /api/v1/contacts/bulk-upsert"
        return [Row("e. bulk upsert", missing, f">= {BULK_PER_S}/s", None)]
    check_bulk(probe, "created")
    requests.post(ceiling, json={"contacts": warmup}, timeout=120).raise_for_status()

    rows = []
    for phase, expected in (("new contacts", "created"), ("same again (updates)", "updated")):
        renamed = [[{**row, "first_name": f"Bulk {expected}"} for row in body] for body in bodies]
        ours = post_all(product, renamed, headers, expected)
        best = post_all(ceiling, renamed, {}, None)
        ratio = ours / best
        rows += [
            Row(f"e. bulk upsert, {phase}", f"{ours:,.0f} contacts/s", f">= {BULK_PER_S:,}/s", ours >= BULK_PER_S),
            Row(
                f"e. bulk upsert, {phase}: vs ceiling",
                f"{ours:,.0f} contacts/s",
                f">= {BATCH_RATIO:.0%} of ceiling",
                ratio >= BATCH_RATIO,
                ceiling=f"{best:,.0f}/s (json.loads + unnest upsert)",
                ratio=f"{ratio:.0%}",
            ),
        ]
    return rows


def check_bulk(response: requests.Response, expected: str | None) -> None:
    if response.status_code != 200:
        raise BenchError(f"bulk upsert answered {response.status_code}: {response.text[:300]}")
    if expected is not None and response.json().get(expected) != BULK_ROWS:
        counts = {k: response.json().get(k) for k in ("created", "updated", "error")}
        raise BenchError(f"bulk upsert: expected {BULK_ROWS} {expected}, got {counts}")


def post_all(url: str, bodies: list[list[dict]], headers: dict[str, str], expected: str | None) -> float:
    """POST every body from BULK_CLIENTS threads (a session each); contacts per second overall."""
    local = threading.local()
    payloads = [json.dumps({"contacts": body}) for body in bodies]

    def post(payload: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers.update({**headers, "Content-Type": "application/json"})
        check_bulk(local.session.post(url, data=payload, timeout=120), expected)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(BULK_CLIENTS) as pool:
        list(pool.map(post, payloads))
    return sum(len(body) for body in bodies) / (time.perf_counter() - started)


# -- 3. admin ---------------------------------------------------------------------------------------

_COUNT = re.compile(r'SELECT COUNT\(\*\).* FROM "contacts_contact"', re.IGNORECASE | re.DOTALL)


def admin_rows(args, email: str, name: str) -> list[Row]:
    try:
        url = reverse("admin:contacts_contact_changelist")
    except NoReverseMatch:
        return [Row("c. admin changelist", "not measurable yet: no contacts admin", f"< {ADMIN_MS} ms", None)]
    client = Client(HTTP_HOST="localhost")  # an allowed host whatever .env says ("testserver" may not be)
    client.force_login(superuser())
    cases = {
        "plain": url,
        "filter stage=lead": f"{url}?lifecycle_stage__exact=lead",
        f"search email ({email})": f"{url}?q={quote(email)}",
        f"search name ({name})": f"{url}?q={quote(name)}",
    }
    print("measuring the admin contact changelist in-process ...", flush=True)
    rows = []
    for label, path in cases.items():
        timing = admin_timing(client, path, args.repeat)
        bounded = timing.full_counts == 0
        counts = "no COUNT" if not timing.counts else f"{timing.counts} COUNT ({timing.full_counts} unbounded)"
        rows.append(
            Row(
                f"c. admin changelist, {label}",
                f"p95 {timing.p95_ms:.0f} ms (p50 {timing.p50_ms:.0f}), {timing.queries} queries, {counts}",
                f"< {ADMIN_MS} ms, no unbounded COUNT",
                timing.p95_ms < ADMIN_MS and bounded,
            )
        )
    return rows


def superuser():
    User = get_user_model()
    user = User.objects.filter(is_superuser=True, is_active=True).order_by("id").first()
    if user is None:
        user = User.objects.create_superuser(username="bench-admin", email="bench-admin@example.com", password=None)
    return user


def admin_timing(client: Client, path: str, repeat: int) -> Timing:
    def call():
        response = client.get(path)
        if response.status_code != 200:
            raise BenchError(f"GET {path} answered {response.status_code}")

    times = timed(call, repeat=repeat)
    with CaptureQueriesContext(connection) as queries:
        call()
    sql = [q["sql"] for q in queries.captured_queries]
    return Timing(
        p50_ms=statistics.median(times),
        p95_ms=percentile(times, 95),
        queries=len(sql),
        counts=sum(1 for s in sql if _COUNT.search(s)),
        # A COUNT without a LIMIT counts every match: all million rows of an unfiltered list.
        full_counts=sum(1 for s in sql if _COUNT.search(s) and " LIMIT " not in s.upper()),
    )


# -- 4. pipeline stats ------------------------------------------------------------------------------


def pipeline_rows(args) -> list[Row]:
    target = f"< {PIPELINE_MS} ms"
    try:
        from leads.models import Pipeline
        from leads.selectors import pipeline_stats
    except ImportError:
        return [Row("d. pipeline stats", "not measurable yet: no leads.selectors.pipeline_stats", target, None)]
    if not leads_ready():
        return [Row("d. pipeline stats", "not measurable yet: leads migrations not applied", target, None)]
    pipeline = Pipeline.objects.filter(is_default=True).first()
    if pipeline is None:
        return [Row("d. pipeline stats", "not measurable: no default pipeline", target, None)]
    print("measuring pipeline stats in-process ...", flush=True)
    times = timed(lambda: pipeline_stats(pipeline=pipeline), repeat=args.repeat)
    with CaptureQueriesContext(connection) as queries:
        stats = pipeline_stats(pipeline=pipeline)
    deals = stats["totals"]["count"]
    p95 = percentile(times, 95)
    return [
        Row(
            f"d. pipeline stats ({deals:,} deals)",
            f"p95 {p95:.0f} ms (p50 {statistics.median(times):.0f}), {len(queries)} queries",
            target,
            p95 < PIPELINE_MS,
        )
    ]


if __name__ == "__main__":
    sys.exit(main())
