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
