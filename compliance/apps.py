from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    """Audit log, data classification and the PHI guard, consent, GDPR."""

    name = "compliance"
