"""Compliance figures (issue 6, "Benchmark"), each beside its target.

    DJANGO_DEBUG=true .venv/bin/python -m bench.compliance [--upserts 2000] [--audit-rows 1000000]
    DJANGO_DEBUG=true .venv/bin/python -m bench.compliance --only chain   (one section; see SECTIONS)

1. Audit write overhead on the contact upsert path. `contacts.services.contact_upsert` of existing
   contacts (each call its own transaction, changing one field: one audit row each) is timed in
   rounds; interleaved with it, the same number of audit rows (same actor, same kind of changes)
   is written with `compliance.services.audit_record` inside one transaction, which is what the
   audit write adds to an upsert that already commits. Upserts/s without audit is then
   N / (upsert time - audit time): no switch turns auditing off anywhere, in the product or here.
   Ratio = with / without (target >= 0.8).
2. Sealing + `audit_verify` over 1,000,000 audit rows (target < 60 s together). Sealed audit rows
   can never be deleted (the database refuses; compliance/README.md), so this section runs in a
   database of its own, `<dev database>_auditbench`, created for the run (migrated like any
   other), filled set-based with INSERT ... SELECT generate_series, and dropped at the end (a
   dropped database takes its rows with it; nothing in the dev database is touched). It runs in a
   child process whose DATABASE_URL names that database, and prints its figures as JSON.
3. Erasure of one contact with 10,000 activities (target < 2 s): bench.compliance_erasure.run()
   (section "erasure"): three fresh contacts, each with 10,000 activities plus a note, ticket,
   order, lead and consent, erased by compliance.gdpr.contact_erase; median and max judged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from bench.common import ROOT, BenchError, Row, print_table  # noqa: E402

UPSERT_RATIO = 0.8
CHAIN_SECONDS = 60
ERASURE_SECONDS = 2
BENCH_PREFIX = "bench-compliance-"


# ----------------------------------------------------------------------------- 1. audit overhead


def bench_audit_overhead(args) -> list[Row]:
    from compliance.models import AuditEvent
    from compliance.services import audit_record
    from contacts.services import contact_upsert
    from crm_platform.actor import Actor

    actor = Actor.system("bench.compliance")
    emails = [f"{BENCH_PREFIX}{i}@example.com" for i in range(args.upserts)]
    for email in emails:  # the contacts exist: every timed call is an update with one audit row
        contact_upsert(actor=actor, email=email, first_name="Bench")
    rounds = max(1, args.rounds)
    per_round = max(1, len(emails) // rounds)
    upsert_s = audit_s = 0.0
    audit_rows = 0
    value = 0
    for r in range(rounds):
        batch = emails[r * per_round : (r + 1) * per_round]
        value += 1
        before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        started = time.perf_counter()
        for email in batch:
            contact_upsert(actor=actor, email=email, first_name=f"Bench{value}")
        upsert_s += time.perf_counter() - started
        written = AuditEvent.objects.filter(id__gt=before, actor_id=actor.id).count()
        audit_rows += written
        started = time.perf_counter()
        with transaction.atomic():
            for i in range(written):
                audit_record(
                    actor=actor,
                    action="contact.update",
                    object_type="contacts.contact",
                    object_id=i,
                    changes={"first_name": ("Bench", f"Bench{value}")},
                )
        audit_s += time.perf_counter() - started
    calls = per_round * rounds
    with_audit = calls / upsert_s
    without_audit = calls / max(upsert_s - audit_s, 1e-9)
    ratio = with_audit / without_audit
    print(
        f"audit overhead: {calls} upserts in {upsert_s:.2f}s, {audit_rows} audit rows, "
        f"those rows alone {audit_s:.2f}s ({audit_rows / calls:.2f} per upsert)"
    )
    return [
        Row(
            "contact upsert with audit (upserts/s)",
            f"{with_audit:,.0f}/s",
            f">= {UPSERT_RATIO:.0%} of without",
            ratio >= UPSERT_RATIO,
            ceiling=f"{without_audit:,.0f}/s without",
            ratio=f"{ratio:.2f}",
        )
    ]


def cleanup_audit_overhead() -> None:
    """The bench contacts go (their audit rows stay: the audit log is append-only)."""
    from contacts.models import Contact

    Contact.objects.filter(email__startswith=BENCH_PREFIX).delete()


# ----------------------------------------------------------------------------- 2. sealing and verify


def bench_chain(args) -> list[Row]:
    name = f"{settings.DATABASES['default']['NAME']}_auditbench"
    url = _database_url(name)
    _drop_database(name)
    _create_database(name)
    try:
        env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "bench.settings"}
        started = time.perf_counter()
        subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        print(f"bench database {name} migrated in {time.perf_counter() - started:.1f}s")
        child = subprocess.run(
            [sys.executable, "-m", "bench.compliance", "--chain-worker", "--audit-rows", str(args.audit_rows)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise BenchError(f"chain worker failed:\n{child.stdout[-2000:]}\n{child.stderr[-4000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        _drop_database(name)
    total = result["seal_s"] + result["verify_s"]
    print(
        f"chain: generated {result['rows']:,} rows in {result['generate_s']:.1f}s, sealed in {result['seal_s']:.1f}s "
        f"({result['rows'] / result['seal_s']:,.0f} rows/s), verified in {result['verify_s']:.1f}s "
        f"({result['rows'] / result['verify_s']:,.0f} rows/s), chain intact: {result['ok']}"
    )
    return [
        Row(f"seal {result['rows']:,} audit rows", f"{result['seal_s']:.1f} s", "", None),
        Row(f"audit_verify {result['rows']:,} rows", f"{result['verify_s']:.1f} s", "", None),
        Row(
            "seal + verify",
            f"{total:.1f} s",
            f"< {CHAIN_SECONDS} s",
            total < CHAIN_SECONDS and result["ok"] and result["checked"] == result["rows"],
        ),
    ]


def chain_worker(rows: int) -> dict:
    """In the bench database: generate `rows` unsealed audit rows set-based, seal, verify."""
    from compliance.chain import audit_seal, audit_verify

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO compliance_auditevent (occurred_at, actor_kind, actor_id, action, object_type, object_id, "
            "subject_id, changes, request_id, ip) "
            "SELECT now() - make_interval(secs => %s - g), "
            "(ARRAY['user','api_key','system','provider'])[1 + g %% 4], (g %% 50)::text, "
            "(ARRAY['contact.update','phi.read','note.create','deal.move'])[1 + g %% 4], 'contacts.contact', "
            "(g %% 100000)::text, g %% 100000, "
            "jsonb_build_object('first_name', jsonb_build_object('changed', true), "
            "'lead_score', jsonb_build_object('old', g %% 90, 'new', g %% 90 + 5)), md5(g::text), "
            "CASE WHEN g %% 3 = 0 THEN '10.0.0.1'::inet END "
            "FROM generate_series(1, %s) AS g",
            [rows, rows],
        )
        cursor.execute("VACUUM ANALYZE compliance_auditevent")
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    sealed = audit_seal()
    seal_s = time.perf_counter() - started
    started = time.perf_counter()
    result = audit_verify()
    verify_s = time.perf_counter() - started
    return {
        "rows": sealed,
        "generate_s": generate_s,
        "seal_s": seal_s,
        "verify_s": verify_s,
        "ok": result.ok,
        "checked": result.checked,
    }


def _database_url(name: str) -> str:
    parts = urlsplit(os.environ.get("DATABASE_URL") or _env_database_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


def _env_database_url() -> str:
    import environ

    env = environ.Env()
    for path in (os.environ.get("DJANGO_ENV_FILE", str(ROOT / ".env")), str(ROOT / ".data" / "services.env")):
        if path and os.path.exists(path):
            environ.Env.read_env(path, overwrite=False)
    return env("DATABASE_URL")


def _create_database(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')


def _drop_database(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ----------------------------------------------------------------------------- 3. erasure (GDPR)


def bench_erasure(args) -> list[Row]:
    """Erasure of one contact with 10,000 activities (< 2 s): bench.compliance_erasure, three
    fresh contacts in the development database, each erased by compliance.gdpr.contact_erase."""
    from bench.compliance_erasure import run

    result = run(activities=10_000, runs=3)
    figure = f"median {result['median_s']:.3f} s, max {result['max_s']:.3f} s ({result['rows_per_erasure']:,} rows)"
    return [Row("erase one contact with 10,000 activities", figure, f"< {ERASURE_SECONDS} s", result["ok"])]


# Each section: name -> function(args) -> rows. `--only NAME` runs one.
SECTIONS = {
    "audit_overhead": bench_audit_overhead,
    "chain": bench_chain,
    "erasure": bench_erasure,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upserts", type=int, default=2000, help="contact upserts timed (default 2,000)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds for the overhead (default 4)")
    parser.add_argument("--audit-rows", type=int, default=1_000_000, help="audit rows sealed (default 1,000,000)")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    parser.add_argument("--chain-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.chain_worker:
        print(json.dumps(chain_worker(args.audit_rows)))
        return 0
    rows: list[Row] = []
    try:
        for name, section in SECTIONS.items():
            if args.only and name != args.only:
                continue
            started = time.monotonic()
            rows += section(args)
            print(f"[{name}] {time.monotonic() - started:.1f}s")
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    finally:
        if not args.only or args.only == "audit_overhead":
            cleanup_audit_overhead()
    print()
    print_table(rows)
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
