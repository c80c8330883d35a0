from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    """Audit log, data classification and the PHI guard, consent, GDPR."""

    name = "compliance"

    def ready(self):
        from crm_platform.api.scopes import PHI_READ, set_staff_permission
        from crm_platform.roles import ADMINISTRATOR, COACH, COMPLIANCE_OFFICER
        from crm_platform.roles import register_role_permissions as grant

        # Staff see medical fields with this one permission; API keys with phi:read.
        set_staff_permission(PHI_READ, "compliance.view_phi")
        for role in (ADMINISTRATOR, COACH, COMPLIANCE_OFFICER):
            grant(role, ["compliance.view_phi"])

        _privacy_ready()
        _audit_ready()
        from crm_platform.admin_tools import register_dashboard_panel

        register_dashboard_panel(
            "PHI guard: fields kept from leaving", _guard_panel, permission="compliance.view_auditevent"
        )


def _guard_panel(request):
    """Per destination and field, how often the guard dropped it (names only, never values)."""
    from django.utils.html import format_html, format_html_join

    from compliance.guard import guard_drop_counts

    counts = sorted(guard_drop_counts().items(), key=lambda item: (-item[1], item[0]))
    if not counts:
        return format_html("<p>{}</p>", "Nothing dropped yet.")
    rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", ((d, f, n) for (d, f), n in counts[:50]))
    return format_html(
        "<table><thead><tr><th>destination</th><th>field</th><th>times</th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )


def _audit_ready() -> None:
    """The audit log's API scope, who reads audit rows, break-glass grants and notices; the
    idle-timeout clock starts at login (compliance.security)."""
    from django.contrib.auth.signals import user_logged_in

    from compliance.registry import PHI, register_personal_fields
    from compliance.security import session_idle_clock_start
    from crm_platform.api.scopes import set_staff_permission
    from crm_platform.roles import ADMINISTRATOR, COMPLIANCE_OFFICER
    from crm_platform.roles import register_role_permissions as grant

    set_staff_permission("audit:read", "compliance.view_auditevent")
    user_logged_in.connect(session_idle_clock_start, dispatch_uid="compliance.session_idle_clock_start")
    for role in (ADMINISTRATOR, COMPLIANCE_OFFICER):
        grant(
            role,
            [
                "compliance.view_auditevent",
                "compliance.view_breakglassgrant",
                "compliance.change_breakglassgrant",  # revoke a grant (the admin's action); nothing else changes
                "compliance.view_adminnotice",
                "compliance.change_adminnotice",
            ],
        )
    # The written reason may describe the patient's condition.
    register_personal_fields("compliance.BreakGlassGrant", {"reason": PHI})


PRIVACY_MODELS = ("consent", "processingrestriction", "suppression", "legalhold", "exportbundle", "erasure")


def _privacy_ready() -> None:
    """Consent, restriction, suppression, legal holds, export and erasure: scopes, role
    permissions, compliance's own rows about people, and retention of export bundles."""
    from compliance.registry import PHI, PII, register_personal_fields
    from compliance.retention import register_retention
    from compliance.subjects import register_subject_data
    from crm_platform.api.scopes import set_staff_permission
    from crm_platform.roles import ADMINISTRATOR, COMPLIANCE_OFFICER, MARKETING, SALES
    from crm_platform.roles import register_role_permissions as grant

    set_staff_permission("gdpr:write", "compliance.gdpr_request")
    set_staff_permission("consents:write", "compliance.add_consent")
    officer = [f"compliance.view_{m}" for m in PRIVACY_MODELS] + [
        "compliance.gdpr_request",
        "compliance.add_consent",
        "compliance.add_processingrestriction",
        "compliance.change_processingrestriction",
        "compliance.add_legalhold",
        "compliance.change_legalhold",
    ]
    grant(COMPLIANCE_OFFICER, officer)
    grant(ADMINISTRATOR, officer)
    grant(SALES, ["compliance.view_consent"])
    grant(MARKETING, ["compliance.view_consent"])

    register_personal_fields("compliance.Consent", {"proof_ip": PII, "proof_user_agent": PII})
    register_personal_fields("compliance.ExportBundle", {"ciphertext": PHI})
    register_personal_fields("compliance.LegalHold", {"reason": PII})
    register_personal_fields("compliance.ProcessingRestriction", {"reason": PII})
    # Compliance's own rows about a person go with them (a hold still in place blocks erasure
    # before any of this runs; released holds go). Bundles are exports already: not re-exported.
    register_subject_data("compliance.Consent")
    register_subject_data("compliance.ProcessingRestriction")
    register_subject_data("compliance.LegalHold")
    register_subject_data("compliance.ExportBundle", export=False)
    register_subject_data("compliance.BreakGlassGrant")
    register_retention("compliance.exportbundle", purge=_purge_export_bundles)


def _purge_export_bundles(*, older_than_days: int, chunk: int) -> int:
    """Bundles go once their link expired (plus `older_than_days`); failed ones after a day."""
    import datetime as dt

    from django.db.models import Q
    from django.utils import timezone

    from compliance.models_privacy import ExportBundle

    now = timezone.now()
    expired = ExportBundle.objects.filter(
        Q(expires_at__lt=now - dt.timedelta(days=older_than_days))
        | Q(status=ExportBundle.Status.FAILED, requested_at__lt=now - dt.timedelta(days=1))
    )
    total = 0
    while True:
        ids = list(expired.values_list("pk", flat=True)[:chunk])
        if not ids:
            return total
        total += ExportBundle.objects.filter(pk__in=ids).delete()[0]
