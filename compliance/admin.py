"""compliance admin: the audit log, break-glass grants and notices (audit_admin), consent,
restriction, suppression, legal holds, export bundles and erasures (privacy_admin), and the
login lockout's attempts (django-axes' admin, below)."""

from axes.admin import AccessAttemptAdmin
from axes.handlers.proxy import AxesProxyHandler
from axes.models import AccessAttempt
from django.contrib import admin

from compliance import audit_admin, privacy_admin  # noqa: F401


class LockoutAttemptAdmin(AccessAttemptAdmin):
    """axes' admin of access attempts. Its "Clean up expired attempts" reads the request's
    attempt time, which axes sets only on the requests it checks (logins): set here the same
    way, so the action does not fail on the changelist's POST."""

    @admin.action(description=AccessAttemptAdmin.cleanup_expired_attempts.short_description)
    def cleanup_expired_attempts(self, request, queryset):
        AxesProxyHandler.update_request(request)
        return super().cleanup_expired_attempts(request, queryset)


if admin.site.is_registered(AccessAttempt):  # axes registers it unless AXES_ENABLE_ADMIN is off
    admin.site.unregister(AccessAttempt)
    admin.site.register(AccessAttempt, LockoutAttemptAdmin)
