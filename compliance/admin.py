"""compliance admin: the audit log, break-glass grants and notices (audit_admin), consent,
restriction, suppression, legal holds, export bundles and erasures (privacy_admin)."""

from compliance import audit_admin, privacy_admin  # noqa: F401
