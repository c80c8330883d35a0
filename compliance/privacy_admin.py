"""The compliance officer's admin for consent, restriction, suppression, legal holds, export
bundles and the erasure ledger. Every change goes through the services (audited); the
contacts changelist carries the GDPR actions (export, erase), which call the same services.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from compliance import consent, gdpr
from compliance.models_privacy import Consent, Erasure, ExportBundle, LegalHold, ProcessingRestriction, Suppression
from compliance.suppression import digest
from crm_platform.actor import Actor
from crm_platform.admin_tools import PHI_PERMISSION, FastChangeListMixin, ReadOnlyAdminMixin
from crm_platform.errors import ConflictError


def _actor(request) -> Actor:
    return Actor.from_request(request)


@admin.register(Consent)
class ConsentAdmin(FastChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every consent decision, newest first: filter by contact for one person's history (the
    current decision per purpose is flagged). Changes come from the person, through the API."""

    list_display = [
        "recorded_at",
        "contact_id",
        "purpose",
        "channel",
        "third_party",
        "granted",
        "is_current",
        "source",
        "text_version",
    ]
    list_filter = ["purpose", "granted", "is_current", "channel"]
    search_fields = ["=contact__id"]
    raw_id_fields = ["contact"]
    readonly_fields = [f.name for f in Consent._meta.fields]

    def get_urls(self):
        view = self.admin_site.admin_view(self.privacy_view)
        return [path("contact/<int:contact_id>/", view, name="compliance_contact_privacy"), *super().get_urls()]

    def privacy_view(self, request, contact_id: int):
        """One person's privacy page: current consents and their history, restriction, legal
        holds, exports and can_process per purpose (read-only; changes go through the API or the
        restriction and hold pages)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        contact_model = Consent._meta.get_field("contact").related_model
        contact = get_object_or_404(contact_model, pk=contact_id)
        history = Consent.objects.filter(contact=contact).order_by("-recorded_at", "-id")[:200]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Privacy of contact {contact_id}",
            "contact_id": contact_id,
            "contact_url": reverse("admin:contacts_contact_change", args=[contact_id]),
            "current": consent.consent_current(contact=contact),
            "history": history,
            "restrictions": ProcessingRestriction.objects.filter(contact=contact)[:20],
            "holds": LegalHold.objects.filter(contact=contact).select_related("placed_by", "released_by")[:20],
            "exports": ExportBundle.objects.filter(contact=contact).defer("ciphertext")[:20],
            "decisions": [
                (purpose, consent.can_process(contact, purpose))
                for purpose in (*Consent.Purpose.values, consent.PROVIDER_SYNC)
            ],
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/compliance/privacy.html", context)


class RestrictionForm(forms.ModelForm):
    class Meta:
        model = ProcessingRestriction
        fields = ["contact", "reason"]


@admin.register(ProcessingRestriction)
class ProcessingRestrictionAdmin(FastChangeListMixin, admin.ModelAdmin):
    """Art. 18 restrictions. Add one to restrict a contact; lift it with the action."""

    form = RestrictionForm
    list_display = ["placed_at", "contact_id", "reason", "lifted_at", "placed_by_kind", "placed_by_id"]
    list_filter = [("lifted_at", admin.EmptyFieldListFilter)]
    search_fields = ["=contact__id"]
    raw_id_fields = ["contact"]
    actions = ["lift"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        restriction, _ = consent.restriction_set(contact=obj.contact, reason=obj.reason, actor=_actor(request))
        obj.pk = restriction.pk

    @admin.action(description="Lift the restriction", permissions=["change"])
    def lift(self, request, queryset):
        lifted = 0
        for restriction in queryset.filter(lifted_at__isnull=True).select_related("contact"):
            lifted += consent.restriction_lift(contact=restriction.contact, actor=_actor(request)) is not None
        self.message_user(request, f"Lifted {lifted} restriction(s).", messages.SUCCESS)


class LegalHoldForm(forms.ModelForm):
    class Meta:
        model = LegalHold
        fields = ["contact", "reason"]


@admin.register(LegalHold)
class LegalHoldAdmin(FastChangeListMixin, admin.ModelAdmin):
    """Legal holds: a held contact cannot be erased. Release with the action."""

    form = LegalHoldForm
    list_display = ["placed_at", "contact_id", "reason", "placed_by", "released_at", "released_by"]
    list_filter = [("released_at", admin.EmptyFieldListFilter)]
    search_fields = ["=contact__id"]
    raw_id_fields = ["contact"]
    list_select_related = ["placed_by", "released_by"]
    actions = ["release"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        hold = gdpr.legal_hold_place(contact=obj.contact, reason=obj.reason, actor=_actor(request), user=request.user)
        obj.pk = hold.pk

    @admin.action(description="Release the hold", permissions=["change"])
    def release(self, request, queryset):
        held = list(queryset.filter(released_at__isnull=True))
        for hold in held:
            gdpr.legal_hold_release(hold=hold, actor=_actor(request), user=request.user)
        self.message_user(request, f"Released {len(held)} hold(s).", messages.SUCCESS)


@admin.register(Suppression)
class SuppressionAdmin(FastChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Only keyed hashes are stored. Search with an email or phone (E.164) to see whether it is
    suppressed: the search term is hashed the same way."""

    list_display = ["created_at", "kind", "short_digest", "reason", "lifted_at", "lifted_reason"]
    list_filter = ["kind", "reason", ("lifted_at", admin.EmptyFieldListFilter)]
    search_fields = ["digest"]
    search_help_text = "An email address or phone number (E.164); it is hashed, never stored."

    @admin.display(description="digest")
    def short_digest(self, obj):
        return f"{obj.digest[:16]}…"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        digests = [digest(Suppression.Kind.EMAIL, term), digest(Suppression.Kind.PHONE, term)]
        return queryset.filter(digest__in=digests), False


@admin.register(ExportBundle)
class ExportBundleAdmin(FastChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """GDPR exports: start one from the contacts list (action "GDPR: export"); download a ready
    one here until it expires (each download is audited)."""

    list_display = ["requested_at", "contact_id", "status", "size", "expires_at", "downloads", "download"]
    list_filter = ["status"]
    search_fields = ["=contact__id"]
    exclude = ["ciphertext"]
    readonly_fields = [f.name for f in ExportBundle._meta.fields if f.name != "ciphertext"]

    @admin.display(description="download")
    def download(self, obj):
        if obj.status != ExportBundle.Status.READY:
            return "—"
        url = reverse("admin:compliance_exportbundle_download", kwargs={"token": gdpr.export_token(obj)})
        return format_html('<a href="{}">zip</a>', url)

    def get_urls(self):
        view = self.admin_site.admin_view(self.download_view)
        return [path("download/<str:token>/", view, name="compliance_exportbundle_download"), *super().get_urls()]

    def download_view(self, request, token: str):
        if not _may_export(request):
            raise PermissionDenied
        try:
            bundle, data = gdpr.export_open(token=token, actor=_actor(request))
        except gdpr.ExportLinkError as exc:
            return HttpResponse(exc.message, status=exc.status, content_type="text/plain")
        response = HttpResponse(data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="export-{bundle.pk}.zip"'
        response["Cache-Control"] = "no-store"
        return response


@admin.register(Erasure)
class ErasureAdmin(FastChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The erasure ledger: which contact ids were erased, when, by whom, rows per table."""

    list_display = ["erased_at", "contact_id", "contact_ids", "actor_kind", "actor_id"]
    search_fields = ["=contact_id"]
    readonly_fields = [f.name for f in Erasure._meta.fields]


# ----------------------------------------------------------------------------- contact actions
# Used by the contacts changelist (contacts/admin.py): the same services as the API.


class EraseConfirmForm(forms.Form):
    confirm = forms.BooleanField(
        label="Erase these contacts and everything about them, for good",
        help_text="Deletes or anonymises every record in every app; their email and phone go on the suppression list.",
    )


def _may_export(request) -> bool:
    """An export holds every medical field about the person, unmasked: the GDPR permission and
    the PHI one."""
    return request.user.has_perm("compliance.gdpr_request") and request.user.has_perm(PHI_PERMISSION)


def admin_export(request, queryset) -> tuple[int, list[str]]:
    """Start an export per selected contact; returns (started, messages)."""
    if not _may_export(request):
        raise PermissionDenied
    started = 0
    for contact in queryset[:100]:
        gdpr.export_request(contact=contact, actor=_actor(request))
        started += 1
    return started, []


def admin_erase(request, queryset) -> tuple[int, list[str]]:
    """Erase each selected contact; returns (erased, refusals)."""
    if not request.user.has_perm("compliance.gdpr_request"):
        raise PermissionDenied
    erased, refused = 0, []
    for contact_id in list(queryset.values_list("pk", flat=True)[:100]):
        try:
            gdpr.contact_erase(contact_id=contact_id, actor=_actor(request))
            erased += 1
        except ConflictError as exc:
            refused.append(exc.message)
        except (gdpr.SubjectNotFound, ValidationError):
            refused.append(f"Contact {contact_id}: not found.")
    return erased, refused
