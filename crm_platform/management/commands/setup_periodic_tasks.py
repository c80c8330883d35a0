from django.core.management.base import BaseCommand

from crm_platform.actor import Actor
from crm_platform.services import periodic_tasks_sync


class Command(BaseCommand):
    help = "Write the periodic jobs declared in crm_platform/schedules.py to the beat schedule (idempotent)."

    def handle(self, *args, **options):
        report = periodic_tasks_sync(actor=Actor.system("manage.py setup_periodic_tasks"))
        for outcome in ("created", "updated", "deleted", "unchanged"):
            for name in report[outcome]:
                self.stdout.write(f"{outcome:>9}  {name}")
        self.stdout.write(self.style.SUCCESS(f"{sum(len(v) for v in report.values())} periodic job(s) in sync."))
