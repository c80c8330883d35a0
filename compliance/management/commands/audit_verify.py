"""manage.py audit_verify: seal what is pending, then walk the audit hash chain."""

import sys
import time

from django.core.management.base import BaseCommand

from compliance.chain import audit_seal, audit_verify


class Command(BaseCommand):
    help = "Seal pending audit rows, then verify the whole hash chain; exit 1 naming the first broken link."

    def add_arguments(self, parser):
        parser.add_argument("--no-seal", action="store_true", help="Verify only; do not seal pending rows first.")

    def handle(self, *args, **options):
        started = time.perf_counter()
        if not options["no_seal"]:
            sealed = audit_seal()
            self.stdout.write(f"sealed {sealed} pending rows in {time.perf_counter() - started:.1f}s")
        result = audit_verify()
        elapsed = time.perf_counter() - started
        if result.ok:
            self.stdout.write(
                f"audit chain intact: {result.checked} rows checked, head seq {result.head_seq} "
                f"hash {result.head_hash} ({elapsed:.1f}s)"
            )
            return
        self.stderr.write(str(result.broken))
        sys.exit(1)
