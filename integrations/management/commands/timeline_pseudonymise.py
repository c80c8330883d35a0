"""`manage.py timeline_pseudonymise`: replace, in timeline entries written before the change,
the properties that name another person (a referral's friend's email) by their keyed hash, as
inbound events now are at the door (integrations.inbound.timeline_pseudonymise). Safe to run
again: it prints how many entries it rewrote, 0 once nothing is left."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from crm_platform.actor import Actor
from integrations.inbound import timeline_pseudonymise


class Command(BaseCommand):
    help = "Keep only keyed hashes of other people's emails in timeline entries written before events did so."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000, help="Entries per transaction (default 1000).")

    def handle(self, *args, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        started = time.monotonic()

        def progress(done: int) -> None:  # a long run is not silent until it ends
            elapsed = time.monotonic() - started
            self.stdout.write(f"{done:,} rewritten so far ({done / elapsed if elapsed else 0:,.0f}/s)")

        done = timeline_pseudonymise(
            actor=Actor.system("timeline_pseudonymise"), batch_size=batch_size, progress=progress
        )
        self.stdout.write(f"done: {done:,} timeline entr{'y' if done == 1 else 'ies'} rewritten.")
