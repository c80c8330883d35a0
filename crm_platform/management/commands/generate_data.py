import hashlib
import secrets
import time

from django.core.management.base import BaseCommand
from django.db import transaction

from crm_platform.models import ApiKey

BATCH = 1000


class Command(BaseCommand):
    help = "Generate volume for benchmarks quickly (bulk inserts in batches, with progress)."

    def add_arguments(self, parser):
        parser.add_argument("--api-keys", type=int, default=0, help="Revoked-looking filler API keys to add.")

    def handle(self, *args, api_keys, **options):
        if api_keys:
            self._api_keys(api_keys)

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

    def _progress(self, what: str, done: int, total: int, started: float) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        self.stdout.write(f"\r{what}: {done:,}/{total:,} ({100 * done // total}%) {rate:,.0f}/s", ending="")
        self.stdout.flush()
