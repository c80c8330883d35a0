from django.contrib import admin

from compliance.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only, for everyone."""

    list_display = ["occurred_at", "action", "actor_kind", "actor_id", "object_type", "object_id", "request_id"]
    list_filter = ["actor_kind", "action", "object_type"]
    search_fields = ["=object_id", "=request_id", "=actor_id"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
