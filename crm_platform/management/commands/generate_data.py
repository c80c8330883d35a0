"""`manage.py generate_data`: volume for benchmarks, loaded quickly with PostgreSQL COPY in batches.

Rows are recognisable and the command tops up rather than adds: generated contacts carry the app
user id `gen-<n>`, generated activities the source `generated`, generated orders the id
`gen-order-<n>`, generated deals the name `gen-deal-<n>`. Row n is a function of (seed, n, --until)
alone: each batch of numbers draws from its own random.Random, so a top-up continues exactly where
a one-shot run would have gone. Rows are COPY text built with f-strings from small precomputed
pools (no Faker per row, no ORM objects); the server's work (indexes, foreign keys) is most of the
cost, so batches load on --jobs connections at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import secrets
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from itertools import accumulate, islice

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from compliance.crypto import encrypt
from contacts.lifecycle import Stage
from crm_platform.models import ApiKey

BATCH = 1000
CONTACT_BATCH = 10_000  # numbers per random stream: part of what makes row n reproducible
ACTIVITY_BATCH = 50_000
ORDER_BATCH = 10_000
DEAL_BATCH = 10_000
WRITE_EVERY = 2_000  # rows per COPY write: the server parses one chunk while we build the next
SPAN_DAYS = 730  # created/occurred timestamps cover the two years before --until
SPAN = SPAN_DAYS * 86_400
CONTACT_PREFIX = "gen-"
ORDER_PREFIX = "gen-order-"
DEAL_PREFIX = "gen-deal-"
ACTIVITY_SOURCE = "generated"
NULL = r"\N"

CONTACT_COLUMNS = (
    "email, external_id, first_name, last_name, phone, date_of_birth, address_line1, address_line2, city, region, "
    "postal_code, country, time_zone, language, source, lifecycle_stage, engagement_tier, lead_score, "
    "score_explanation, clv, churn_risk, is_paid, onboarding_status, last_login_at, last_active_at, tags, "
    "properties, group_timestamps, is_archived, created_at, updated_at, owner_id"
)
ACTIVITY_COLUMNS = "contact_id, type, occurred_at, source, properties, created_at"
ORDER_COLUMNS = "contact_id, external_id, amount, currency, status, paid_at, items, created_at"

HELP = f"""Generate volume for benchmarks quickly (COPY in batches, with progress), reproducible with --seed.

--contacts, --activities, --orders and --deals each give the TOTAL of generated rows wanted: the
command counts the generated rows already there and adds only the missing ones, so running it
again with the same numbers adds nothing and never trips a unique constraint. Generated rows are
recognisable: contacts have external_id '{CONTACT_PREFIX}<n>' and an email ending in '.<n>@example.*',
activities have source '{ACTIVITY_SOURCE}', orders external_id '{ORDER_PREFIX}<n>', deals the name
'{DEAL_PREFIX}<n>' (with their stage history, in the default pipeline). Activities,
orders and deals go to generated contacts. The same --seed and --until give the same rows, whether
generated in one run or topped up in several. The loaded tables are ANALYZEd afterwards.
--api-keys N adds N filler API keys (it does not top up)."""


class Command(BaseCommand):
    help = HELP

    def add_arguments(self, parser):
        parser.add_argument("--api-keys", type=int, default=0, help="Revoked-looking filler API keys to add.")
        parser.add_argument("--contacts", type=int, default=0, help="Generated contacts wanted in all.")
        parser.add_argument("--activities", type=int, default=0, help="Generated timeline activities wanted in all.")
        parser.add_argument("--orders", type=int, default=0, help="Generated orders wanted in all.")
        parser.add_argument("--deals", type=int, default=0, help="Generated deals wanted in all (needs leads.Deal).")
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument(
            "--jobs", type=int, default=2, help="Batches loaded at once, each on its own connection (default 2)."
        )
        parser.add_argument(
            "--until",
            type=dt.date.fromisoformat,
            default=None,
            help="Timestamps fall in the two years before this date, midnight UTC (default today).",
        )

    def handle(self, *args, api_keys, contacts, activities, orders, deals, seed, until, jobs, **options):
        if min(api_keys, contacts, activities, orders, deals) < 0:
            raise CommandError("Counts cannot be negative.")
        if jobs < 1:
            raise CommandError("--jobs must be at least 1.")
        self.jobs = jobs
        if api_keys:
            self._api_keys(api_keys)
        until = until or dt.datetime.now(dt.UTC).date()
        clock = Clock(until)
        if contacts:
            self._contacts(contacts, seed=seed, clock=clock)
        if activities or orders or deals:
            started = time.monotonic()
            pool = ContactPool.load(clock)
            if not pool.ids:
                raise CommandError("No generated contacts yet: pass --contacts as well.")
            self.stdout.write(f"read {len(pool.ids):,} generated contacts in {time.monotonic() - started:.1f}s")
            if activities:
                self._activities(activities, seed=seed, clock=clock, pool=pool)
            if orders:
                self._orders(orders, seed=seed, clock=clock, pool=pool)
            if deals:
                self._deals(deals, seed=seed, clock=clock, pool=pool)

    # -- API keys -------------------------------------------------------------------------------

    def _api_keys(self, total: int) -> None:
        started = time.monotonic()
        done = 0
        while done < total:
            size = min(BATCH, total - done)
            rows = []
            for _ in range(size):
                raw = secrets.token_hex(24)
                rows.append(
                    ApiKey(
                        name="generated",
                        prefix="g" + secrets.token_hex(7),
                        hashed_key=hashlib.sha256(raw.encode()).hexdigest(),
                        scopes=["contacts:read"],
                    )
                )
            with transaction.atomic():
                ApiKey.objects.bulk_create(rows, ignore_conflicts=True)
            done += size
            self._progress("api keys", done, total, started)
        self.stdout.write("")

    # -- contacts -------------------------------------------------------------------------------

    def _contacts(self, wanted: int, *, seed: int, clock: Clock) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), coalesce(max(substr(external_id, %s)::bigint), 0) FROM contacts_contact "
                "WHERE external_id LIKE %s AND substr(external_id, %s) ~ '^[0-9]+$'",
                [len(CONTACT_PREFIX) + 1, CONTACT_PREFIX + "%", len(CONTACT_PREFIX) + 1],
            )
            existing, last = cursor.fetchone()
        missing = wanted - existing
        if missing <= 0:
            self.stdout.write(f"contacts: {existing:,} generated already, none to add")
            return
        owners = self._staff_ids()
        self._load(
            "contacts",
            "contacts_contact",
            CONTACT_COLUMNS,
            first=last + 1,
            total=missing,
            batch=CONTACT_BATCH,
            make=lambda number: contact_batch(seed, number, clock, owners),
        )

    # -- activities -----------------------------------------------------------------------------

    def _activities(self, wanted: int, *, seed: int, clock: Clock, pool: ContactPool) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM contacts_activity WHERE source = %s", [ACTIVITY_SOURCE])
            existing = cursor.fetchone()[0]
        missing = wanted - existing
        if missing <= 0:
            self.stdout.write(f"activities: {existing:,} generated already, none to add")
            return
        self._load(
            "activities",
            "contacts_activity",
            ACTIVITY_COLUMNS,
            first=existing + 1,
            total=missing,
            batch=ACTIVITY_BATCH,
            make=lambda number: activity_batch(seed, number, clock, pool),
        )

    # -- orders ---------------------------------------------------------------------------------

    def _orders(self, wanted: int, *, seed: int, clock: Clock, pool: ContactPool) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), coalesce(max(substr(external_id, %s)::bigint), 0) FROM contacts_order "
                "WHERE external_id LIKE %s AND substr(external_id, %s) ~ '^[0-9]+$'",
                [len(ORDER_PREFIX) + 1, ORDER_PREFIX + "%", len(ORDER_PREFIX) + 1],
            )
            existing, last = cursor.fetchone()
        missing = wanted - existing
        if missing <= 0:
            self.stdout.write(f"orders: {existing:,} generated already, none to add")
            return
        self._load(
            "orders",
            "contacts_order",
            ORDER_COLUMNS,
            first=last + 1,
            total=missing,
            batch=ORDER_BATCH,
            make=lambda number: order_batch(seed, number, clock, pool, settings.CRM_REPORTING_CURRENCY),
        )

    # -- deals (leads app) ----------------------------------------------------------------------

    def _deals(self, wanted: int, *, seed: int, clock: Clock, pool: ContactPool) -> None:
        if not leads_ready():
            raise CommandError("--deals needs leads.Deal and its tables (`manage.py migrate leads`).")
        from leads.models import Pipeline

        pipeline = Pipeline.objects.filter(is_default=True).first() or Pipeline.objects.order_by("id").first()
        if pipeline is None:
            raise CommandError("--deals needs a pipeline (the leads data migration creates the default one).")
        stages = list(pipeline.stages.order_by("order", "id"))
        if not any(s.is_won or s.is_lost for s in stages) or all(s.is_won or s.is_lost for s in stages):
            raise CommandError(f"Pipeline {pipeline} needs open and closed stages.")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), coalesce(max(substr(name, %s)::bigint), 0) FROM leads_deal "
                "WHERE name LIKE %s AND substr(name, %s) ~ '^[0-9]+$'",
                [len(DEAL_PREFIX) + 1, DEAL_PREFIX + "%", len(DEAL_PREFIX) + 1],
            )
            existing, last = cursor.fetchone()
        missing = wanted - existing
        if missing <= 0:
            self.stdout.write(f"deals: {existing:,} generated already, none to add")
            return
        plan = DealPlan(pipeline_id=pipeline.pk, currency=pipeline.currency, stages=stages, owners=self._staff_ids())
        self._load(
            "deals",
            "leads_deal",
            DEAL_COLUMNS,
            first=last + 1,
            total=missing,
            batch=DEAL_BATCH,
            make=lambda number: deal_batch(seed, number, clock, pool, plan),
        )
        self._deal_history(stages)

    def _deal_history(self, stages: list) -> None:
        """Each generated deal's way to its stage, set-based: created in the first open stage, then
        through the open stages in order (a won deal through all of them, a lost one through
        some), at even steps between its creation and its entering the current stage. What
        pipeline stats read for "days per stage"."""
        open_ids = [s.pk for s in stages if not (s.is_won or s.is_lost)]
        paths = []  # (stage id, its path as an SQL array, how many open stages a lost deal passed)
        for stage in stages:
            if stage.is_won:
                paths.append((stage.pk, [*open_ids, stage.pk], 0))
            elif stage.is_lost:
                paths.append((stage.pk, [stage.pk], len(open_ids)))
            else:
                paths.append((stage.pk, open_ids[: open_ids.index(stage.pk) + 1], 0))
        values = ", ".join(["(%s, %s::bigint[], %s)"] * len(paths))
        started = time.monotonic()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""
                WITH paths (stage_id, path, lost_after) AS (VALUES {values}),
                deals AS (
                    SELECT d.id, d.created_at, d.stage_entered_at,
                           CASE WHEN p.lost_after > 0
                                THEN (%s::bigint[])[1 : 1 + substr(d.name, %s)::bigint %% p.lost_after] || p.path
                                ELSE p.path END AS path
                      FROM leads_deal d JOIN paths p ON p.stage_id = d.stage_id
                     WHERE d.name LIKE %s
                       AND NOT EXISTS (SELECT 1 FROM leads_dealstagechange h WHERE h.deal_id = d.id)
                )
                INSERT INTO leads_dealstagechange ({HISTORY_COLUMNS})
                SELECT id, path[i - 1], path[i], 'system', 'generate_data',
                       created_at + (stage_entered_at - created_at) * (i - 1) / greatest(cardinality(path) - 1, 1),
                       CASE WHEN i > 1 THEN extract(epoch FROM stage_entered_at - created_at)
                                            / 86400 / greatest(cardinality(path) - 1, 1) END
                  FROM deals, generate_series(1, cardinality(path)) AS i
                """,  # noqa: S608 - only placeholders and the column constant
                [*(v for path in paths for v in path), open_ids, len(DEAL_PREFIX) + 1, DEAL_PREFIX + "%"],
            )
            added = cursor.rowcount
        self.stdout.write(f"deal history: added {added:,} rows in {time.monotonic() - started:.1f}s")
        self._analyze("leads_dealstagechange")

    def _staff_ids(self) -> list[int]:
        users = get_user_model().objects.filter(is_staff=True, is_active=True).order_by("id")
        return list(users.values_list("id", flat=True))

    # -- plumbing -------------------------------------------------------------------------------

    def _load(self, what: str, table: str, columns: str, *, first: int, total: int, batch: int, make) -> None:
        """COPY rows numbered first .. first+total-1 into `table`, one transaction per batch of
        numbers, --jobs batches at a time (each on its own connection: the server's work is most of
        the cost); then ANALYZE it, as the planner (and the next load's foreign-key checks) need
        statistics at that volume."""
        copy_sql = f"COPY {table} ({columns}) FROM STDIN"
        started = time.monotonic()
        work = []
        number, last = first, first + total - 1
        while number <= last:
            batch_first = (number - 1) // batch * batch + 1
            wanted = min(last, batch_first + batch - 1) - number + 1
            work.append((number, wanted, batch_first))
            number += wanted
        done = 0
        if self.jobs == 1:
            for number, wanted, batch_first in work:
                done += copy_batch(copy_sql, make, number=number, wanted=wanted, batch_first=batch_first)
                self._progress(what, done, total, started)
        else:
            executor = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="generate_data")
            try:
                futures = [
                    executor.submit(copy_batch_closing, copy_sql, make, number=n, wanted=w, batch_first=b)
                    for n, w, b in work
                ]
                for future in as_completed(futures):
                    done += future.result()
                    self._progress(what, done, total, started)
            finally:
                executor.shutdown(wait=True, cancel_futures=True)
        elapsed = time.monotonic() - started
        self.stdout.write("")
        self.stdout.write(f"{what}: added {total:,} in {elapsed:.1f}s ({total / max(elapsed, 1e-6):,.0f} rows/s)")
        self._analyze(table)

    def _analyze(self, table: str) -> None:
        """VACUUM as well when we may (not inside a transaction): it sets the visibility map, without
        which the covering indexes cannot serve index-only scans until autovacuum comes by."""
        started = time.monotonic()
        vacuum = not connection.in_atomic_block
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {table}" if vacuum else f"ANALYZE {table}")
        done = "vacuumed and analyzed" if vacuum else "analyzed"
        self.stdout.write(f"{done} {table} in {time.monotonic() - started:.1f}s")

    def _progress(self, what: str, done: int, total: int, started: float) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        self.stdout.write(f"\r{what}: {done:,}/{total:,} ({100 * done // total}%) {rate:,.0f} rows/s", ending="")
        self.stdout.flush()


def copy_batch(copy_sql: str, make, *, number: int, wanted: int, batch_first: int) -> int:
    """COPY `wanted` rows from `number` on, in one transaction. `make(batch_first)` yields the lines
    of the whole batch (batches are aligned on multiples of their size, so a run that starts
    mid-batch draws, and drops, the rows before it). Lines go out in chunks as they are made: the
    server inserts one chunk while we build the next."""
    lines = islice(make(batch_first), number - batch_first, number - batch_first + wanted)
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
            while chunk := "".join(islice(lines, WRITE_EVERY)):
                copy.write(chunk)
    return wanted


def copy_batch_closing(copy_sql: str, make, **batch) -> int:
    """copy_batch on a worker thread, which then closes the connection it opened."""
    try:
        return copy_batch(copy_sql, make, **batch)
    finally:
        connection.close()


def leads_ready() -> bool:
    """leads.Deal exists and its tables have the columns generated deals and their history fill
    (whatever other leads migrations are still pending)."""
    try:
        from leads.models import Deal, DealStageChange  # noqa: F401
    except ImportError:
        return False
    needed = {"leads_deal": DEAL_COLUMNS, "leads_dealstagechange": HISTORY_COLUMNS}
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        for table, columns in needed.items():
            if table not in tables:
                return False
            present = {c.name for c in connection.introspection.get_table_description(cursor, table)}
            if not set(columns.split(", ")) <= present:
                return False
    return True


# -- what rows look like -------------------------------------------------------------------------


class Clock:
    """Timestamps as COPY text, from seconds since the window's start (two years before `until`)."""

    def __init__(self, until: dt.date):
        self.end = dt.datetime.combine(until, dt.time(), tzinfo=dt.UTC)
        self.start = self.end - dt.timedelta(days=SPAN_DAYS)
        self._days = [(self.start.date() + dt.timedelta(days=d)).isoformat() for d in range(SPAN_DAYS + 1)]
        self._times = [f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(86_400)]

    def text(self, second: int) -> str:
        return self._days[second // 86_400] + self._times[second % 86_400]


def weighted_pool(weights: dict, size: int = 4096) -> list:
    """`size` items laid out by weight, so that pool[int(random() * size)] draws by weight."""
    items = list(weights)
    cumulative = list(accumulate(weights.values()))
    total = cumulative[-1]
    return [items[min(bisect_left(cumulative, (i + 0.5) * total / size), len(items) - 1)] for i in range(size)]


def _names() -> tuple[list[str], list[str]]:
    from faker.providers.person.en_US import Provider

    return weighted_pool(Provider.first_names, 8192), weighted_pool(Provider.last_names, 8192)


FIRST_NAMES, LAST_NAMES = _names()

# stage: (weight, chance of being paid, lead score range, churn risk range)
STAGE_PROFILES = {
    Stage.VISITOR: (30, 0.0, (0, 15), (0.0, 0.4)),
    Stage.LEAD: (24, 0.0, (10, 45), (0.0, 0.5)),
    Stage.PROSPECT: (10, 0.0, (30, 65), (0.0, 0.5)),
    Stage.PATIENT: (7, 0.2, (45, 80), (0.0, 0.5)),
    Stage.ACTIVE_CUSTOMER: (10, 1.0, (50, 90), (0.0, 0.6)),
    Stage.SUBSCRIBER: (8, 1.0, (60, 100), (0.0, 0.5)),
    Stage.ADVOCATE: (2, 1.0, (70, 100), (0.0, 0.3)),
    Stage.AT_RISK: (4, 0.8, (20, 60), (0.7, 1.0)),
    Stage.CHURNED: (4, 0.5, (0, 30), (0.8, 1.0)),
    Stage.WON_BACK: (1, 1.0, (40, 80), (0.2, 0.6)),
}
STAGES = weighted_pool({str(stage): profile[0] for stage, profile in STAGE_PROFILES.items()}, 1000)
STAGE_PROFILE = {str(stage): profile for stage, profile in STAGE_PROFILES.items()}
TIERS_FREE = weighted_pool({"bronze": 75, "silver": 20, "gold": 4, "platinum": 1}, 100)
TIERS_PAID = weighted_pool({"bronze": 25, "silver": 40, "gold": 25, "platinum": 10}, 100)
SOURCES = weighted_pool(
    {"website_form": 30, "app": 25, "assessment": 15, "referral": 10, "import": 8, "api": 7, "event": 5}, 100
)
TAGS = ("newsletter", "vip", "webinar", "mobile", "trial", "partner", "spring-promo", "black-friday", "beta", "events")
TAG_COUNTS = weighted_pool({0: 55, 1: 30, 2: 12, 3: 3}, 100)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
STREETS = (
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset", "Highland",
    "River", "Church", "Mill", "Spring", "Ridge", "Forest", "Meadow", "Valley",
)  # fmt: skip
STREET_KINDS = ("St", "Ave", "Rd", "Blvd", "Ln", "Way", "Dr", "Ct")
# city, region, postal code prefix, country, time zone, language, phone prefix (E.164, before 7 digits)
PLACES = weighted_pool(
    {
        ("San Francisco", "CA", "941", "US", "America/Los_Angeles", "en", "+1415"): 6,
        ("Los Angeles", "CA", "900", "US", "America/Los_Angeles", "en", "+1213"): 8,
        ("San Diego", "CA", "921", "US", "America/Los_Angeles", "en", "+1619"): 4,
        ("Seattle", "WA", "981", "US", "America/Los_Angeles", "en", "+1206"): 4,
        ("Portland", "OR", "972", "US", "America/Los_Angeles", "en", "+1503"): 3,
        ("Denver", "CO", "802", "US", "America/Denver", "en", "+1303"): 3,
        ("Phoenix", "AZ", "850", "US", "America/Phoenix", "en", "+1602"): 4,
        ("Dallas", "TX", "752", "US", "America/Chicago", "en", "+1214"): 5,
        ("Austin", "TX", "787", "US", "America/Chicago", "en", "+1512"): 4,
        ("Houston", "TX", "770", "US", "America/Chicago", "en", "+1713"): 5,
        ("Chicago", "IL", "606", "US", "America/Chicago", "en", "+1312"): 7,
        ("Minneapolis", "MN", "554", "US", "America/Chicago", "en", "+1612"): 2,
        ("Atlanta", "GA", "303", "US", "America/New_York", "en", "+1404"): 4,
        ("Miami", "FL", "331", "US", "America/New_York", "es", "+1305"): 5,
        ("New York", "NY", "100", "US", "America/New_York", "en", "+1212"): 10,
        ("Boston", "MA", "021", "US", "America/New_York", "en", "+1617"): 4,
        ("Philadelphia", "PA", "191", "US", "America/New_York", "en", "+1215"): 3,
        ("Toronto", "ON", "M5V", "CA", "America/Toronto", "en", "+1416"): 3,
        ("Vancouver", "BC", "V6B", "CA", "America/Vancouver", "en", "+1604"): 2,
        ("London", "England", "EC1", "GB", "Europe/London", "en", "+44207"): 4,
        ("Manchester", "England", "M1", "GB", "Europe/London", "en", "+44161"): 2,
        ("Berlin", "Berlin", "101", "DE", "Europe/Berlin", "de", "+4930"): 2,
        ("Sydney", "NSW", "200", "AU", "Australia/Sydney", "en", "+61290"): 2,
    },
    1000,
)


def _span(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low))


def contact_batch(seed: int, first: int, clock: Clock, owners: list[int]) -> Iterator[str]:
    """COPY lines (CONTACT_COLUMNS) for contacts numbered first .. first+CONTACT_BATCH-1."""
    rng = random.Random(f"{seed}:contacts:{first}")
    rand = rng.random
    text = clock.text
    n_owners = len(owners)
    dob_base = dt.date(1945, 1, 1).toordinal()
    dob_days = dt.date(2006, 12, 31).toordinal() - dob_base
    for number in range(first, first + CONTACT_BATCH):
        first_name = FIRST_NAMES[int(rand() * 8192)]
        last_name = LAST_NAMES[int(rand() * 8192)]
        domain = EMAIL_DOMAINS[int(rand() * 3)]
        # A few app users never gave an email; the app user id identifies them.
        email = NULL if rand() < 0.03 else f"{first_name}.{last_name}.{number}@{domain}".lower()
        city, region, postal, country, tz, language, dial = PLACES[int(rand() * 1000)]
        # E.164; the exchange (first digit 2-9) and line come from the number: unique per city below 8M.
        phone = "" if rand() < 0.1 else f"{dial}{200 + number // 10_000 % 800}{number % 10_000:04d}"
        stage = STAGES[int(rand() * 1000)]
        _, paid_chance, (score_low, score_high), (churn_low, churn_high) = STAGE_PROFILE[stage]
        paid = rand() < paid_chance
        tier = (TIERS_PAID if paid else TIERS_FREE)[int(rand() * 100)]
        created = int(rand() * SPAN)
        updated = created + int(rand() * (SPAN - created))
        if stage == "visitor" and rand() < 0.5:
            last_active = last_login = NULL
        else:
            active_at = created + int(rand() * (SPAN - created))
            last_active = text(active_at)
            last_login = NULL if stage in ("visitor", "lead") else text(created + int(rand() * (active_at - created)))
        dob = NULL if rand() < 0.15 else dt.date.fromordinal(dob_base + int(rand() * dob_days)).isoformat()
        tag_count = TAG_COUNTS[int(rand() * 100)]
        tags = "{" + ",".join(sorted({TAGS[int(rand() * 10)] for _ in range(tag_count)})) + "}"
        owner = owners[int(rand() * n_owners)] if n_owners and stage != "visitor" and rand() < 0.6 else NULL
        line2 = f"Apt {_span(rng, 1, 400)}" if rand() < 0.12 else ""
        source = SOURCES[int(rand() * 100)]
        yield (
            f"{email}\t{CONTACT_PREFIX}{number}\t{first_name}\t{last_name}\t{phone}\t{dob}\t"
            f"{_span(rng, 100, 9999)} {STREETS[int(rand() * 20)]} {STREET_KINDS[int(rand() * 8)]}\t{line2}\t"
            f"{city}\t{region}\t{postal}{_span(rng, 10, 99)}\t{country}\t{tz}\t{language}\t{source}\t"
            f"{stage}\t{tier}\t{_span(rng, score_low, score_high + 1)}\t[]\t0\t"
            f"{churn_low + rand() * (churn_high - churn_low):.3f}\t{'t' if paid else 'f'}\t"
            f"{'onboarding_done' if paid or rand() < 0.2 else 'created'}\t{last_login}\t{last_active}\t{tags}\t"
            f"{{}}\t{{}}\tf\t{text(created)}\t{text(updated)}\t{owner}\n"
        )


class ContactPool:
    """The generated contacts activities, orders and deals point at: ids, when each was created
    (seconds into the window), and which of them pay."""

    def __init__(self, ids: array, created: array, paid: array):
        self.ids, self.created, self.paid = ids, created, paid

    @classmethod
    def load(cls, clock: Clock) -> ContactPool:
        ids, created, paid = array("q"), array("q"), array("q")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, greatest(0, extract(epoch FROM created_at - %s))::bigint, is_paid FROM contacts_contact "
                "WHERE external_id LIKE %s AND substr(external_id, %s) ~ '^[0-9]+$' "
                "ORDER BY substr(external_id, %s)::bigint",
                [clock.start, CONTACT_PREFIX + "%", len(CONTACT_PREFIX) + 1, len(CONTACT_PREFIX) + 1],
            )
            for index, (contact_id, second, is_paid) in enumerate(cursor.fetchall()):
                ids.append(contact_id)
                created.append(min(second, SPAN - 1))
                if is_paid:
                    paid.append(index)
        return cls(ids, created, paid)


# type: (weight, properties as COPY text (JSON without tabs or backslashes))
ACTIVITY_TYPES = {
    "page_viewed": (30, [f'{{"path": "{p}"}}' for p in ("/", "/pricing", "/plans", "/blog", "/faq", "/about")]),
    "user_logged_in": (18, ['{"platform": "ios"}', '{"platform": "android"}', '{"platform": "web"}']),
    "food_logged": (16, [f'{{"meal": "{m}", "items": {i}}}' for m in ("breakfast", "lunch", "dinner") for i in (1, 3)]),
    "email_opened": (10, [f'{{"campaign": "{c}"}}' for c in ("welcome-1", "welcome-2", "weekly-tips", "promo")]),
    "email_clicked": (4, [f'{{"campaign": "{c}"}}' for c in ("welcome-1", "weekly-tips", "promo")]),
    "activity_logged": (6, [f'{{"kind": "{k}", "minutes": {m}}}' for k in ("walk", "run", "yoga") for m in (20, 45)]),
    "goal_updated": (4, ['{"progress_pct": 25}', '{"progress_pct": 50}', '{"progress_pct": 75}']),
    "session_tracked": (4, ['{"utm_source": "google"}', '{"utm_source": "facebook"}', '{"utm_source": "direct"}']),
    "assessment_completed": (2, ['{"assessment": "intake"}', '{"assessment": "follow-up"}']),
    "consultation_requested": (1, ['{"channel": "web"}', '{"channel": "phone"}']),
    "order_placed": (2, ['{"amount": 49.0}', '{"amount": 99.0}', '{"amount": 149.0}']),
    "subscription_started": (1, ['{"plan": "monthly"}', '{"plan": "annual"}']),
}
ACTIVITY_POOL = weighted_pool({name: weight for name, (weight, _) in ACTIVITY_TYPES.items()}, 1000)
ACTIVITY_PROPERTIES = {name: props for name, (_, props) in ACTIVITY_TYPES.items()}


def activity_batch(seed: int, first: int, clock: Clock, pool: ContactPool) -> Iterator[str]:
    """COPY lines (ACTIVITY_COLUMNS) for activities numbered first .. first+ACTIVITY_BATCH-1.
    Half of them go to the busiest tenth of the contacts, the rest to anyone."""
    rng = random.Random(f"{seed}:activities:{first}")
    rand = rng.random
    text = clock.text
    ids, created = pool.ids, pool.created
    count = len(ids)
    busy = max(count // 10, 1)
    for _ in range(ACTIVITY_BATCH):
        index = int(rand() * busy) * 10 % count if rand() < 0.5 else int(rand() * count)
        start = created[index]
        at = text(start + int(rand() * (SPAN - start)))
        kind = ACTIVITY_POOL[int(rand() * 1000)]
        props = ACTIVITY_PROPERTIES[kind]
        yield (f"{ids[index]}\t{kind}\t{at}\t{ACTIVITY_SOURCE}\t{props[int(rand() * len(props))]}\t{at}\n")


PRICES = ("49.00", "79.00", "99.00", "149.00", "199.00", "299.00")
ORDER_STATUSES = weighted_pool({"paid": 90, "refunded": 6, "cancelled": 4}, 100)
SKUS = ("plan-monthly", "plan-quarterly", "plan-annual", "starter-kit", "consultation")


def order_batch(seed: int, first: int, clock: Clock, pool: ContactPool, currency: str) -> Iterator[str]:
    """COPY lines (ORDER_COLUMNS) for orders numbered first .. first+ORDER_BATCH-1, for paying
    contacts, in `currency` (the reporting one: CLV counts no other)."""
    rng = random.Random(f"{seed}:orders:{first}")
    rand = rng.random
    text = clock.text
    buyers = pool.paid or array("q", range(len(pool.ids)))
    for number in range(first, first + ORDER_BATCH):
        index = buyers[int(rand() * len(buyers))]
        start = pool.created[index]
        at = text(start + int(rand() * (SPAN - start)))
        price = PRICES[int(rand() * len(PRICES))]
        status = ORDER_STATUSES[int(rand() * 100)]
        # Order.items is encrypted at rest (compliance/fields.py): COPY writes the token.
        items = encrypt(f'[{{"sku": "{SKUS[int(rand() * len(SKUS))]}", "quantity": 1, "price": {price}}}]')
        paid_at = NULL if status == "cancelled" else at
        yield (f"{pool.ids[index]}\t{ORDER_PREFIX}{number}\t{price}\t{currency}\t{status}\t{paid_at}\t{items}\t{at}\n")


DEAL_COLUMNS = (
    "name, pipeline_id, stage_id, amount, currency, close_date, owner_id, contact_id, company_id, plan, "
    "created_at, updated_at, stage_entered_at"
)
HISTORY_COLUMNS = "deal_id, from_stage_id, to_stage_id, actor_kind, actor_id, at, days_in_previous_stage"
DEAL_PLANS = weighted_pool({"": 50, "monthly": 25, "quarterly": 10, "annual": 15}, 100)


class DealPlan:
    """What deals are generated into: the pipeline and its currency (as deal_create gives a deal
    named without one), its stages (open ones weighted towards the start, closed ones a third of
    all), and the staff who own them."""

    def __init__(self, *, pipeline_id: int, currency: str, stages: list, owners: list[int]):
        self.pipeline_id, self.currency, self.owners = pipeline_id, currency, owners
        open_stages = [s for s in stages if not (s.is_won or s.is_lost)]
        weights = {s.pk: 2.0 * (len(open_stages) - i) for i, s in enumerate(open_stages)}
        closed = [s for s in stages if s.is_won or s.is_lost]
        open_total = sum(weights.values()) or 1
        for s in closed:
            weights[s.pk] = open_total / 2 / len(closed) * (1.2 if s.is_won else 0.8)
        self.stages = weighted_pool(weights, 1000)
        self.closed = {s.pk for s in closed}


def deal_batch(seed: int, first: int, clock: Clock, pool: ContactPool, plan: DealPlan) -> Iterator[str]:
    """COPY lines (DEAL_COLUMNS) for deals numbered first .. first+DEAL_BATCH-1."""
    rng = random.Random(f"{seed}:deals:{first}")
    rand = rng.random
    text = clock.text
    count = len(pool.ids)
    n_owners = len(plan.owners)
    for number in range(first, first + DEAL_BATCH):
        index = int(rand() * count)
        start = pool.created[index]
        created = start + int(rand() * (SPAN - start))
        entered = created + int(rand() * (SPAN - created))
        stage = plan.stages[int(rand() * 1000)]
        deal_plan = encrypt(DEAL_PLANS[int(rand() * 100)])  # Deal.plan is encrypted at rest
        close_day = min(entered // 86_400 + (0 if stage in plan.closed else _span(rng, 7, 90)), SPAN_DAYS + 180)
        close_date = (clock.start.date() + dt.timedelta(days=close_day)).isoformat()
        owner = plan.owners[int(rand() * n_owners)] if n_owners else NULL
        yield (
            f"{DEAL_PREFIX}{number}\t{plan.pipeline_id}\t{stage}\t{PRICES[int(rand() * len(PRICES))]}\t"
            f"{plan.currency}\t{close_date}\t{owner}\t{pool.ids[index]}\t{NULL}\t{deal_plan}\t{text(created)}\t"
            f"{text(entered)}\t{text(entered)}\n"
        )
