import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from compliance.services import audit_record
from crm_platform.actor import Actor
from crm_platform.roles import ADMINISTRATOR


class Command(BaseCommand):
    help = (
        "Create the superuser `admin` and print its login. A new admin's password is ADMIN_PASSWORD, else the "
        "one generated on the first run and kept in .data/admin_password. An existing admin that is an active "
        "superuser keeps its password (one changed in the admin stays) unless --reset-password is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@example.com")
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="Set an existing admin's password to ADMIN_PASSWORD (or .data/admin_password) again.",
        )

    def handle(self, *args, username, email, reset_password, **options):
        try:
            user, password = self._ensure(username, email, reset_password)
        except IntegrityError:
            # Another run (two `make run`s at once) created the admin between our read and our
            # insert: this run rolled back, and now finds that account (waiting for its row) and
            # goes on as any run that finds one.
            user, password = self._ensure(username, email, reset_password)
        self._print_login(username, user, password)

    def _ensure(self, username, email, reset_password):
        """Make `username` an active superuser in the Administrator group, in one transaction.
        Returns the user and the password set (None: kept). Raises IntegrityError when another
        run created the user after this one found none."""
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.select_for_update().filter(username=username).first()
            created = user is None
            if created:
                user = User(username=username, email=email)
            # Only an active superuser keeps its password. An account of that name that is not
            # one (added by someone who may add users, or deactivated by a superuser) is made
            # one with ADMIN_PASSWORD, else whoever set its password would hold every permission.
            promoted = not created and not (user.is_superuser and user.is_active)
            flags = {"is_staff": True, "is_superuser": True, "is_active": True}
            changed = {name: True for name, value in flags.items() if getattr(user, name) != value}
            for name, value in flags.items():
                setattr(user, name, value)
            password = None
            if created or reset_password or promoted:
                password = os.environ.get("ADMIN_PASSWORD") or self._stored_password()
                try:  # the policy staff passwords meet in the admin (AUTH_PASSWORD_VALIDATORS)
                    validate_password(password, user)
                except ValidationError as exc:
                    raise CommandError(f"ADMIN_PASSWORD is refused: {' '.join(exc.messages)}") from None
                user.set_password(password)
                changed["password"] = "(set)"  # noqa: S105 - that it was set, never what
            user.save()
            administrator = Group.objects.get(name=ADMINISTRATOR)
            if not user.groups.filter(pk=administrator.pk).exists():
                user.groups.add(administrator)
                changed["groups"] = ADMINISTRATOR
            if created or changed:
                action = "staff.create" if created else "staff.password_reset" if password else "staff.update"
                audit_record(actor=Actor.system("manage.py ensure_admin"), action=action, obj=user, changes=changed)
        return user, password

    def _print_login(self, username, user, password):
        if password is None:
            # `make run` prints this: name the password only while it is still the one that logs in.
            password = os.environ.get("ADMIN_PASSWORD") or self._stored_password(create=False)
            if not password or not user.check_password(password):
                source = "ADMIN_PASSWORD" if os.environ.get("ADMIN_PASSWORD") else ".data/admin_password"
                self.stdout.write(
                    f"Admin login: {username} (password unchanged, as last set for it; "
                    f"`manage.py ensure_admin --reset-password` sets it to {source})"
                )
                return
        self.stdout.write(f"Admin login: {username} / {password}")

    def _stored_password(self, *, create: bool = True) -> str | None:
        path = Path(settings.BASE_DIR) / ".data" / "admin_password"
        if path.exists():
            return path.read_text().strip()
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password
