import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from compliance.services import audit_record
from crm_platform.actor import Actor
from crm_platform.roles import ADMINISTRATOR


class Command(BaseCommand):
    help = (
        "Create (or reset) the superuser `admin` and print its login. The password is ADMIN_PASSWORD, "
        "else the one generated on the first run and kept in .data/admin_password."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@example.com")

    def handle(self, *args, username, email, **options):
        password = os.environ.get("ADMIN_PASSWORD") or self._stored_password()
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=username, defaults={"email": email})
            try:  # the policy staff passwords meet in the admin (AUTH_PASSWORD_VALIDATORS)
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(f"ADMIN_PASSWORD is refused: {' '.join(exc.messages)}") from None
            user.is_staff = user.is_superuser = user.is_active = True
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get(name=ADMINISTRATOR))
            audit_record(
                actor=Actor.system("manage.py ensure_admin"),
                action="staff.create" if created else "staff.password_reset",
                obj=user,
            )
        self.stdout.write(f"Admin login: {username} / {password}")

    def _stored_password(self) -> str:
        path = Path(settings.BASE_DIR) / ".data" / "admin_password"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password
