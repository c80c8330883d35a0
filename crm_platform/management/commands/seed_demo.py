import importlib
import random

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from crm_platform.actor import Actor

# Our own apps, in INSTALLED_APPS order; each may have a `demo` module with `seed(...)`.
OUR_APPS = ("crm_platform", "compliance", "contacts", "leads", "campaigns", "scheduling", "coaching", "integrations")


class Command(BaseCommand):
    help = "Load demo data that makes every admin page show something real. Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42, help="Random seed, for the same data every time.")

    def handle(self, *args, seed, **options):
        actor = Actor.system("manage.py seed_demo")
        rng = random.Random(seed)
        for config in apps.get_app_configs():
            if config.name not in OUR_APPS:
                continue
            try:
                module = importlib.import_module(f"{config.name}.demo")
            except ModuleNotFoundError as exc:
                if exc.name != f"{config.name}.demo":
                    raise
                continue
            with transaction.atomic():
                summary = module.seed(actor=actor, rng=rng, stdout=self.stdout)
            self.stdout.write(f"{config.label:>14}: {summary}")
        self.stdout.write(self.style.SUCCESS("Demo data loaded."))
