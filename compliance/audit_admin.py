"""The audit log in the admin: read-only for everyone, filters that stay cheap on millions of
rows, CSV export, "who viewed this patient", break-glass requests and admin notices."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from compliance.audit_selectors import phi_read_fields, phi_reads_for_contact
from compliance.breakglass import MIN_REASON_LENGTH, break_glass_active, break_glass_request, break_glass_revoke
from compliance.models import AUDIT_COLUMNS, AdminNotice, AuditEvent, BreakGlassGrant
from compliance.notices import admin_notice_resolve
from compliance.services import audit_record
from crm_platform.actor import Actor
from crm_platform.admin_tools import FastChangeListMixin, PhiAdminMixin, ReadOnlyAdminMixin
from crm_platform.csv_export import csv_response

CSV_COLUMNS = list(AUDIT_COLUMNS)
# Filter choices come from the newest rows (an index scan), never from a DISTINCT over the
# whole log; any other value still filters through the URL (?action=...).
_RECENT = 5_000


class _RecentValuesFilter(admin.SimpleListFilter):
    field = ""

    def lookups(self, request, model_admin):
        recent = AuditEvent.objects.order_by("-id").values_list(self.field, flat=True)[:_RECENT]
        return [(v, v) for v in sorted({v for v in recent if v})]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class ActionFilter(_RecentValuesFilter):
    title = parameter_name = field = "action"


class ObjectTypeFilter(_RecentValuesFilter):
    title = "object type"
    parameter_name = field = "object_type"


class AuditEventAdmin(ReadOnlyAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    """Read-only: the audit log is append-only, for everyone (and the database agrees).

    Search: `type:id` for an object (contacts.contact:12), `kind:id` for an actor (user:5),
    `contact:12` for everything about a contact, anything else for a request id."""

    list_display = [
        "occurred_at",
        "action",
        "actor_kind",
        "actor_id",
        "object_type",
        "object_id",
        "request_id",
        "sealed",
    ]
    # The one column an index orders (audit_occurred_idx); the others are shared by millions of
    # rows or in no index of their own, each such sort a sort of the whole log.
    sortable_by = ["occurred_at"]
    list_filter = [ActionFilter, "actor_kind", ObjectTypeFilter, ("occurred_at", admin.DateFieldListFilter)]
    search_fields = ["=request_id"]
    search_help_text = "object (contacts.contact:12), actor (user:5), contact:12, or a request id"
    actions = ["export_csv"]
    readonly_fields = CSV_COLUMNS

    @admin.display(boolean=True)
    def sealed(self, obj):
        return obj.chain_seq is not None

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        kind, sep, ident = term.partition(":")
        if not sep or not ident:
            return (queryset.filter(request_id=term) if term else queryset), False
        if kind == "contact" and ident.isascii() and ident.isdecimal():  # not isdigit(): "²" is one
            return queryset.filter(subject_id=int(ident)), False
        if kind in {c.value for c in AuditEvent.ActorKind}:
            return queryset.filter(actor_kind=kind, actor_id=ident), False
        return queryset.filter(object_type=kind.lower(), object_id=ident), False

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        audit_record(actor=Actor.from_request(request), action="audit.export_csv", object_type="compliance.auditevent")
        rows = queryset.order_by("id").values_list(*CSV_COLUMNS).iterator(chunk_size=2000)
        return csv_response("audit", CSV_COLUMNS, rows)

    # -------------------------------------------------------------- extra pages

    def get_urls(self):
        extra = [
            path(
                "who-viewed/<int:contact_id>/",
                self.admin_site.admin_view(self.who_viewed_view),
                name="compliance_who_viewed",
            ),
            path(
                "break-glass/<int:contact_id>/",
                self.admin_site.admin_view(self.break_glass_view),
                name="compliance_break_glass",
            ),
        ]
        return extra + super().get_urls()

    def who_viewed_view(self, request, contact_id: int):
        """Who viewed this patient: every phi.read about the contact and its records."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        events = phi_reads_for_contact(contact_id=contact_id)
        users = _usernames(e.actor_id for e in events if e.actor_kind == AuditEvent.ActorKind.USER)
        rows = [
            {
                "event": e,
                "who": users.get(e.actor_id, f"{e.actor_kind}:{e.actor_id}")
                if e.actor_kind == AuditEvent.ActorKind.USER
                else f"{e.actor_kind}:{e.actor_id}",
                **phi_read_fields(e),
            }
            for e in events
        ]
        audit_record(
            actor=Actor.from_request(request),
            action="audit.who_viewed",
            object_type="contacts.contact",
            object_id=contact_id,
            subject_id=contact_id,
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Who viewed contact {contact_id}",
            "contact_id": contact_id,
            "rows": rows,
            "contact_url": reverse("admin:contacts_contact_change", args=[contact_id]),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/compliance/who_viewed.html", context)

    def break_glass_view(self, request, contact_id: int):
        """Ask for emergency access to one contact's medical fields, with a written reason."""
        contact_model = BreakGlassGrant._meta.get_field("contact").related_model
        contact = get_object_or_404(contact_model, pk=contact_id)
        contact_url = reverse("admin:contacts_contact_change", args=[contact_id])
        form = BreakGlassForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                grant = break_glass_request(
                    user=request.user,
                    contact=contact,
                    reason=form.cleaned_data["reason"],
                    actor=Actor.from_request(request),
                )
            except ValidationError as error:
                form.add_error("reason", error.message_dict.get("reason", error.messages))
            except PermissionDenied as error:
                messages.error(request, str(error))
                return HttpResponseRedirect(contact_url)
            else:
                messages.warning(
                    request,
                    f"Break-glass access granted until {timezone.localtime(grant.expires_at):%H:%M}. "
                    "Compliance officers have been notified.",
                )
                return HttpResponseRedirect(contact_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Break-glass access to contact {contact_id}",
            "form": form,
            "contact_id": contact_id,
            "contact_url": contact_url,
            "active": break_glass_active(user=request.user, contact_id=contact_id),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/compliance/break_glass.html", context)


class BreakGlassForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        min_length=MIN_REASON_LENGTH,
        max_length=2000,
        help_text="Why you need to see this patient's medical data now. Compliance officers read this.",
    )


def _usernames(ids) -> dict[str, str]:
    wanted = {i for i in ids if i.isdigit()}
    if not wanted:
        return {}
    users = get_user_model().objects.filter(pk__in=wanted).values_list("pk", "username")
    return {str(pk): name for pk, name in users}


class BreakGlassGrantAdmin(ReadOnlyAdminMixin, PhiAdminMixin, admin.ModelAdmin):
    """Grants are made by the break-glass form on a contact's page; here they are reviewed."""

    phi_fields = ("reason",)  # registered PHI: it may describe the patient
    list_display = ["granted_at", "user", "contact_id", "expires_at", "active"]
    list_filter = [("granted_at", admin.DateFieldListFilter)]
    list_select_related = ["user"]
    readonly_fields = ["user", "contact", "reason", "granted_at", "expires_at", "revoked_at"]
    raw_id_fields = ["contact"]
    actions = ["revoke"]

    @admin.display(boolean=True)
    def active(self, obj):
        return obj.revoked_at is None and obj.expires_at > timezone.now()

    def has_revoke_permission(self, request):
        return request.user.has_perm("compliance.change_breakglassgrant")

    @admin.action(description="Revoke: end the selected grants now", permissions=["revoke"])
    def revoke(self, request, queryset):
        count = break_glass_revoke(grant_ids=queryset.values_list("pk", flat=True), actor=Actor.from_request(request))
        self.message_user(request, f"{count} grant(s) revoked (expired or revoked ones are left as they are).")


class AdminNoticeAdmin(admin.ModelAdmin):
    list_display = ["created_at", "level", "source", "title", "resolved_at"]
    list_filter = ["level", "source", ("resolved_at", admin.EmptyFieldListFilter)]
    readonly_fields = ["created_at", "level", "source", "title", "body", "permission", "resolved_at", "resolved_by"]
    actions = ["resolve"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        perms = [p for p in set(queryset.values_list("permission", flat=True)) if p and not request.user.has_perm(p)]
        return queryset.exclude(permission__in=perms) if perms else queryset

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Mark resolved", permissions=["change"])
    def resolve(self, request, queryset):
        for notice in queryset.filter(Q(resolved_at__isnull=True)):
            admin_notice_resolve(notice=notice, user=request.user)
            audit_record(actor=Actor.from_request(request), action="notice.resolved", obj=notice)
        self.message_user(request, "Resolved.", messages.SUCCESS)


admin.site.register(AuditEvent, AuditEventAdmin)
admin.site.register(BreakGlassGrant, BreakGlassGrantAdmin)
admin.site.register(AdminNotice, AdminNoticeAdmin)
