"""Demo data of the platform itself: a staff team, one member per role.

seed_demo calls `seed` of every app that has a demo module, in INSTALLED_APPS order; each
seeder is idempotent (it looks for what it made before making it again).
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from compliance.services import audit_record
from crm_platform.roles import ADMINISTRATOR, COACH, COMPLIANCE_OFFICER, MARKETING, SALES

TEAM = [
    ("dana.admin", "Dana", "Okafor", ADMINISTRATOR),
    ("sam.sales", "Sam", "Lindqvist", SALES),
    ("riley.sales", "Riley", "Moreau", SALES),
    ("mia.marketing", "Mia", "Tanaka", MARKETING),
    ("chris.coach", "Chris", "Adeyemi", COACH),
    ("alex.coach", "Alex", "Novak", COACH),
    ("jordan.compliance", "Jordan", "Silva", COMPLIANCE_OFFICER),
]


def seed(*, actor, rng, stdout) -> str:
    User = get_user_model()
    made = 0
    for username, first, last, role in TEAM:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={"first_name": first, "last_name": last, "email": f"{username}@demo.example", "is_staff": True},
        )
        if created:
            user.set_unusable_password()  # an administrator sets a password before anyone logs in as them
            user.save(update_fields=["password"])
            user.groups.add(Group.objects.get(name=role))
            audit_record(actor=actor, action="staff.create", obj=user, changes={"role": role})
            made += 1
    return f"{made} staff user(s) ({len(TEAM)} in the demo team)"
