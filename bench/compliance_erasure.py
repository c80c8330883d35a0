"""GDPR erasure of one contact with a big timeline (issue 6, "Benchmark": target < 2 s).

    DJANGO_DEBUG=true .venv/bin/python -m bench.compliance_erasure [--activities 10000] [--runs 3]

Runs against the development database (the generated million contacts and their timelines are
there, so indexes and tables have their real size). Each run makes one fresh contact with
`--activities` timeline rows (plus a note, a ticket, an order, a lead and a consent, so every
registered handler has work), then times compliance.gdpr.contact_erase end to end: one
transaction, committed, including the suppression entries and the contact.deleted outbox row.
The contact and everything about it are gone afterwards (that is what is measured).

`run()` returns the figures; bench/compliance.py (issue 6's benchmark module) lists it as a section.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from decimal import Decimal  # noqa: E402

from django.utils import timezone  # noqa: E402

from compliance.consent import consent_grant  # noqa: E402
from compliance.gdpr import contact_erase  # noqa: E402
from contacts import services as contacts  # noqa: E402
from contacts.models import Activity, Contact  # noqa: E402
from crm_platform.actor import Actor  # noqa: E402

TARGET_SECONDS = 2.0
TITLE = "erasure of one contact with 10,000 activities"


def _person(activities: int, actor: Actor) -> Contact:
    tag = uuid.uuid4().hex[:12]
    contact = contacts.contact_create(
        actor=actor, email=f"bench-erase-{tag}@example.com", external_id=f"bench-erase-{tag}", first_name="Bench"
    )
    now = timezone.now()
    rows = [
        Activity(
            contact=contact,
            type="food_logged" if i % 3 else "page_viewed",
            occurred_at=now - timezone.timedelta(minutes=i),
            source="app",
            properties={"kcal": 300 + i % 500},
        )
        for i in range(activities)
    ]
    Activity.objects.bulk_create(rows, batch_size=2000)
    contacts.note_create(contact=contact, body="bench note", actor=actor)
    contacts.ticket_create(contact=contact, subject="bench ticket", actor=actor)
    contacts.order_record(contact=contact, amount=Decimal("10"), external_id=f"bench-{tag}", actor=actor)
    consent_grant(contact=contact, purpose="marketing_email", source="bench", actor=actor)
    from leads.services import lead_capture

    lead_capture(actor=actor, email=contact.email, source="website_form")
    return contact


def run(*, activities: int = 10_000, runs: int = 3) -> dict:
    """Erase `runs` fresh contacts of `activities` timeline rows each; returns the timings."""
    actor = Actor.system("bench.compliance_erasure")
    timings, rows = [], []
    for _ in range(runs):
        contact = _person(activities, actor)
        started = time.perf_counter()
        erasure, done_now = contact_erase(contact_id=contact.pk, actor=actor)
        timings.append(time.perf_counter() - started)
        assert done_now and erasure.counts.get("contacts.activity", 0) >= activities, erasure.counts
        assert not Activity.objects.filter(contact_id=contact.pk).exists()
        rows.append(sum(erasure.counts.values()))
    return {
        "title": TITLE if activities == 10_000 else f"erasure of one contact with {activities:,} activities",
        "activities": activities,
        "runs": runs,
        "seconds": timings,
        "median_s": statistics.median(timings),
        "max_s": max(timings),
        "rows_per_erasure": rows[0],
        "target_s": TARGET_SECONDS,
        "ok": max(timings) < TARGET_SECONDS,
    }


def report(result: dict) -> str:
    times = ", ".join(f"{s:.3f}" for s in result["seconds"])
    verdict = "OK" if result["ok"] else "OVER TARGET"
    return (
        f"{result['title']}: median {result['median_s']:.3f} s, max {result['max_s']:.3f} s over "
        f"{result['runs']} runs ({times}); {result['rows_per_erasure']:,} rows erased each; "
        f"target < {result['target_s']:.0f} s: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(activities=args.activities, runs=args.runs)
    print(report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
