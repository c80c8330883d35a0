"""Staff roles: the groups and the least permissions each needs.

The groups are created by a data migration (crm_platform 0002). The permissions below are
granted after every migrate (`roles_sync`, run by crm_platform.defaults once Django has
created the permission rows). Granting is additive: a permission staff added to a group by hand stays.
Each app declares the permissions its models need with `register_role_permissions` in its
AppConfig.ready(), beside its own models.
"""

ADMINISTRATOR = "Administrator"
SALES = "Sales"
MARKETING = "Marketing"
COACH = "Coach"
COMPLIANCE_OFFICER = "Compliance officer"
ROLES = (ADMINISTRATOR, SALES, MARKETING, COACH, COMPLIANCE_OFFICER)

ROLE_PERMISSIONS: dict[str, list[str]] = {
    ADMINISTRATOR: [
        "crm_platform.add_apikey",
        "crm_platform.change_apikey",
        "crm_platform.view_apikey",
        "compliance.view_auditevent",
        "auth.add_user",
        "auth.change_user",
        "auth.view_user",
        "auth.view_group",
        "django_celery_beat.view_periodictask",
        "django_celery_beat.change_periodictask",
    ],
    SALES: [],
    MARKETING: [],
    COACH: [],
    COMPLIANCE_OFFICER: ["compliance.view_auditevent", "crm_platform.view_apikey", "auth.view_user"],
}


def register_role_permissions(role: str, labels: list[str]) -> None:
    """Grant `labels` ("app_label.codename") to `role` on the next migrate."""
    if role not in ROLE_PERMISSIONS:
        raise ValueError(f"unknown role {role!r}")
    for label in labels:
        if label not in ROLE_PERMISSIONS[role]:
            ROLE_PERMISSIONS[role].append(label)


def roles_sync() -> None:
    """Make sure each role group exists and holds its declared permissions."""
    from django.contrib.auth.models import Group, Permission

    for role, labels in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for label in labels:
            app_label, codename = label.split(".")
            wanted.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.add(*wanted)
