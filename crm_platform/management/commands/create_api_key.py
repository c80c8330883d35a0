from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from crm_platform.actor import Actor
from crm_platform.api.scopes import SCOPES
from crm_platform.services import api_key_create

MAX_EXPIRES_DAYS = 36_500  # a hundred years; beyond it the date overflows


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes",
            required=True,
            help="Comma-separated, e.g. contacts:read,events:write. Known: " + ", ".join(SCOPES),
        )
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help=f"Days until the key stops, 1 to {MAX_EXPIRES_DAYS} (default: never).",
        )
        parser.add_argument("--allowed-ips", default="", help="Comma-separated addresses or CIDR networks.")
        parser.add_argument("--description", default="")

    def handle(self, *args, name, scopes, expires_days, allowed_ips, description, **options):
        if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
            # 0 used to mean "never" and a negative number made a key that had already expired.
            raise CommandError(f"--expires-days must be between 1 and {MAX_EXPIRES_DAYS}; leave it out for no expiry.")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days is not None else None
        try:
            key, raw = api_key_create(
                name=name,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                allowed_ips=[ip.strip() for ip in allowed_ips.split(",") if ip.strip()],
                expires_at=expires_at,
                description=description,
                actor=Actor.system("manage.py create_api_key"),
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        self.stderr.write(f"Created API key {key.name!r} (prefix {key.prefix}) with scopes {', '.join(key.scopes)}.")
        self.stderr.write("The key is shown once; store it now:")
        self.stdout.write(raw)
