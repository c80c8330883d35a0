"""The CRM UI for people: contacts, companies, tickets, orders, subscriptions, settings.

Every change goes through contacts.services (validated, audited, published); changelists of
big tables use crm_platform.admin_tools (no full COUNT, prefix search served by indexes).
"""

from __future__ import annotations

import csv
import io
import logging

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from compliance.services import audit_record
from contacts import bulk, selectors, services, tasks
from contacts.bulk import MAX_ROWS, contacts_bulk_upsert
from contacts.lifecycle import Stage
from contacts.models import (
    Activity,
    Company,
    Contact,
    CustomFieldDefinition,
    LifecycleRule,
    LifecycleSettings,
    LifecycleTransition,
    Note,
    Order,
    Subscription,
    Ticket,
)
from crm_platform.actor import Actor
from crm_platform.admin_tools import AuditedAdminMixin, FastChangeListMixin, PhiAdminMixin, ReadOnlyAdminMixin
from crm_platform.csv_export import csv_response
from crm_platform.errors import ConflictError

User = get_user_model()

logger = logging.getLogger(__name__)

CSV_COLUMNS = [
    "email",
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "date_of_birth",
    "city",
    "region",
    "postal_code",
    "country",
    "time_zone",
    "language",
    "source",
    "engagement_tier",
    "tags",
]
IMPORT_MAX_BYTES = 2_000_000  # below DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)
PREVIEW_ROWS = 5000
EXPORT_COLUMNS = ["id", *CSV_COLUMNS, "lifecycle_stage", "lead_score", "clv", "created_at", "updated_at"]


def _actor(request) -> Actor:
    return Actor.from_request(request)


class ByIdOrContactSearch:
    """Search a big table by its id, the contact's id (digits) or the contact's email
    (contains @): exact, typed lookups that use an index. Django's `=field` search would
    compare UPPER(field::text) and scan the table."""

    search_fields = ["id"]  # shows the search box; get_search_results does the work
    search_help_text = "An id, a contact's id, or a contact's email."

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isascii() and term.isdecimal():
            return queryset.filter(Q(pk=int(term)) | Q(contact_id=int(term))), False
        if "@" in term:
            return queryset.filter(contact__email=term.lower()), False
        return queryset.none(), False


class ActivityTypeFilter(admin.SimpleListFilter):
    """The types on the timeline, read with a skip scan over the (type, occurred_at) index:
    a few milliseconds per type instead of a DISTINCT over millions of rows."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [(t, t) for t in selectors.activity_types()]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


class OwnerFilter(admin.SimpleListFilter):
    """Staff users, not a DISTINCT over a million contacts."""

    title = "owner"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        staff = User.objects.filter(is_staff=True, is_active=True).order_by("username")
        return [("none", "Nobody"), *[(str(u.pk), u.get_username()) for u in staff]]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "none":
            return queryset.filter(owner__isnull=True)
        if value and not (value.isascii() and value.isdecimal()):
            return queryset.none()  # a value off the links (an edited URL) names nobody
        if value:
            return queryset.filter(owner_id=int(value))
        return queryset


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"
    SOURCES = ["website_form", "assessment", "referral", "import", "api", "app", "event", "calendly", "hubspot"]

    def lookups(self, request, model_admin):
        return [(s, s.replace("_", " ")) for s in self.SOURCES]

    def queryset(self, request, queryset):
        return queryset.filter(source=self.value()) if self.value() else queryset


class ActivityInline(PhiAdminMixin, admin.TabularInline):
    """The latest 50 events; the full timeline is one click away (Activities, filtered)."""

    phi_fields = ("properties",)
    model = Activity
    fields = ["occurred_at", "type", "source", "properties"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-occurred_at", "-id"]
    verbose_name_plural = "timeline (latest 50)"

    def get_queryset(self, request):
        latest = Activity.objects.filter(contact=self.parent_id).order_by("-occurred_at", "-id")[:50]
        return super().get_queryset(request).filter(pk__in=list(latest.values_list("pk", flat=True)))

    def get_formset(self, request, obj=None, **kwargs):
        self.parent_id = obj.pk if obj else None
        return super().get_formset(request, obj, **kwargs)

    def has_add_permission(self, request, obj=None):
        return False


class LifecycleInline(admin.TabularInline):
    model = LifecycleTransition
    fields = ["occurred_at", "from_stage", "to_stage", "reason", "actor_kind", "actor_id"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "lifecycle history"

    def has_add_permission(self, request, obj=None):
        return False


class ContactForm(forms.ModelForm):
    """Shapes here, rules in the service: clean() asks the service, so a duplicate email or a
    bad phone is a form error, never a 500."""

    email = forms.CharField(required=False, max_length=254)
    external_id = forms.CharField(required=False, max_length=128)

    class Meta:
        model = Contact
        fields = [
            *("email", "external_id", "first_name", "last_name", "phone", "date_of_birth"),
            *("address_line1", "address_line2", "city", "region", "postal_code", "country", "time_zone", "language"),
            *("company", "owner", "source", "tags", "properties", "engagement_tier", "churn_risk", "is_paid"),
            *("onboarding_status", "last_login_at", "last_active_at"),
        ]

    def clean(self):
        data = super().clean()
        try:
            email = services.normalize_email(data.get("email"))
            external_id = services.normalize_external_id(data.get("external_id"))
            if not email and not external_id:
                raise ValidationError({"email": ["Give an email or an app user id."]})
            for field, value in (("email", email), ("external_id", external_id)):
                if value and Contact.objects.filter(**{field: value}).exclude(pk=self.instance.pk).exists():
                    raise ValidationError({field: ["Another contact has this value."]})
            data["email"], data["external_id"] = email, external_id
            data["phone"] = services.normalize_phone(data.get("phone"), default_region=data.get("country"))
            if data.get("properties"):
                data["properties"] = services.validate_properties(data["properties"])
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return data


class OwnerForm(forms.Form):
    owner = forms.ModelChoiceField(queryset=User.objects.filter(is_staff=True, is_active=True), required=False)


class TagForm(forms.Form):
    tag = forms.CharField(max_length=50)


class StageForm(forms.Form):
    stage = forms.ChoiceField(choices=Stage.choices)
    reason = forms.CharField(max_length=200)


class ImportForm(forms.Form):
    file = forms.FileField(help_text=f"CSV with a header row. Columns: {', '.join(CSV_COLUMNS)}.")


@admin.register(Contact)
class ContactAdmin(FastChangeListMixin, admin.ModelAdmin):
    form = ContactForm
    change_list_template = "admin/contacts/contact/change_list.html"
    list_display = [
        "id",
        "email",
        "full_name",
        "phone",
        "lifecycle_stage",
        "engagement_tier",
        "lead_score",
        "owner",
        "source",
        "updated_at",
    ]
    list_display_links = ["id", "email"]
    # Sorts an index serves both ways on a million contacts; a stage, tier, owner or source is
    # shared by 100,000s of contacts, each such sort a sort of the table (the filters find them).
    sortable_by = ["id", "lead_score", "updated_at"]
    list_filter = [
        "lifecycle_stage",
        "engagement_tier",
        OwnerFilter,
        SourceFilter,
        "is_paid",
        "is_archived",
        ("created_at", admin.DateFieldListFilter),
        ("updated_at", admin.DateFieldListFilter),
    ]
    search_fields = ["email"]  # the search itself is get_search_results: prefixes served by indexes
    search_help_text = "Email, phone, or the start of a first and/or last name."
    list_select_related = ["owner"]
    autocomplete_fields = ["company"]
    raw_id_fields = ["owner"]
    readonly_fields = [
        "lifecycle_stage",
        "lead_score",
        "score_explanation_table",
        "clv",
        "is_archived",
        "merged_into",
        "created_at",
        "updated_at",
    ]
    inlines = [ActivityInline, LifecycleInline]
    actions = [
        "assign_owner",
        "add_tag",
        "move_stage",
        "merge_two",
        "archive",
        "unarchive",
        "export_csv",
        "gdpr_export",
        "gdpr_erase",
    ]
    fieldsets = [
        ("Identity", {"fields": ["email", "external_id", "first_name", "last_name", "phone", "date_of_birth"]}),
        (
            "Address",
            {
                "fields": [
                    "address_line1",
                    "address_line2",
                    "city",
                    "region",
                    "postal_code",
                    "country",
                    "time_zone",
                    "language",
                ],
                "classes": ["collapse"],
            },
        ),
        ("Relationship", {"fields": ["company", "owner", "source", "tags", "properties"]}),
        (
            "Lifecycle and scores",
            {
                "fields": [
                    "lifecycle_stage",
                    "engagement_tier",
                    "lead_score",
                    "score_explanation_table",
                    "clv",
                    "churn_risk",
                    "is_paid",
                    "onboarding_status",
                    "last_login_at",
                    "last_active_at",
                ]
            },
        ),
        ("Record", {"fields": ["is_archived", "merged_into", "created_at", "updated_at"]}),
    ]

    @admin.display(description="name")
    def full_name(self, obj):
        return obj.full_name

    @admin.display(description="score explanation")
    def score_explanation_table(self, obj):
        rows = obj.score_explanation or []
        if not rows:
            return "—"
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((r.get("rule"), r.get("points")) for r in rows)),
        )

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new contact has no timeline yet

    def get_search_results(self, request, queryset, search_term):
        return selectors.contact_search(queryset, search_term), False

    def has_delete_permission(self, request, obj=None):
        return False  # archive (reversible) or erase (compliance), never a silent delete

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in form.changed_data if name in services.EDITABLE_FIELDS}
        data.update({k: form.cleaned_data[k] for k in ("email", "external_id") if k in form.changed_data})
        actor = _actor(request)
        try:
            if change:
                saved = services.contact_update(contact=obj, actor=actor, **data)
            else:
                saved = services.contact_create(actor=actor, **data)
        except ConflictError as exc:  # raced by another writer since the form was checked
            raise PermissionDenied(exc.message) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        pass  # the inlines are read-only

    def construct_change_message(self, request, form, formsets, add=False):
        # The inlines are never saved (above), so they have no new/changed/deleted objects to
        # describe; Django's message would read those lists and fail on every change.
        return super().construct_change_message(request, form, [], add)

    # -------------------------------------------------------------- actions

    def _intermediate(self, request, queryset, form, title, action):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
            "queryset": queryset[:20],
            "count": queryset.count(),
            "action": action,
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/contacts/contact/action_form.html", context)

    @admin.action(description="Assign an owner", permissions=["change"])
    def assign_owner(self, request, queryset):
        form = OwnerForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._intermediate(request, queryset, form, "Assign an owner", "assign_owner")
        owner = form.cleaned_data["owner"]
        self._bulk_change(request, queryset, "set_owner", owner.pk if owner else None, "Owner set")
        return None

    @admin.action(description="Add a tag", permissions=["change"])
    def add_tag(self, request, queryset):
        form = TagForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._intermediate(request, queryset, form, "Add a tag", "add_tag")
        tag = form.cleaned_data["tag"].strip().lower()
        self._bulk_change(request, queryset, "add_tag", tag, f"Tag “{tag}” added")
        return None

    def _bulk_change(self, request, queryset, action: str, value, done: str) -> None:
        """Set-based (contacts.bulk); past ADMIN_BULK_INLINE_LIMIT contacts (a select-all over a
        big filter), queued as background jobs of contacts.bulk.BATCH ids each on the bulk queue."""
        actor, ids = _actor(request), list(queryset.order_by().values_list("pk", flat=True))
        if len(ids) <= settings.ADMIN_BULK_INLINE_LIMIT:
            changed = bulk.contacts_bulk_change(action=action, ids=ids, value=value, actor=actor)
            self.message_user(request, f"{done}: {changed} contact(s) changed.", messages.SUCCESS)
            return
        jobs = range(0, len(ids), bulk.BATCH)
        queued = 0
        try:
            for start in jobs:
                tasks.contacts_bulk_change.apply_async(
                    (action, ids[start : start + bulk.BATCH], value, actor.to_task()), queue="bulk"
                )
                queued += 1
        except (KombuError, RedisError, OSError) as exc:  # the broker is down: say so, not a 500
            logger.warning("bulk %s: %d of %d job(s) queued (%s)", action, queued, len(jobs), type(exc).__name__)
            self.message_user(
                request,
                f"The background jobs could not be queued ({queued} of {len(jobs)} job(s) were): try again "
                "shortly. Running the action again is safe (a contact already changed is left alone).",
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            f"{done} for {len(ids):,} contacts in the background ({len(jobs)} jobs); each change is in the audit log.",
            messages.SUCCESS,
        )

    @admin.action(description="Move to a lifecycle stage", permissions=["change"])
    def move_stage(self, request, queryset):
        form = StageForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._intermediate(request, queryset, form, "Move to a lifecycle stage", "move_stage")
        actor, moved, refused = _actor(request), 0, []
        for contact in queryset.iterator(chunk_size=500):
            try:
                services.lifecycle_transition(
                    contact=contact,
                    to_stage=form.cleaned_data["stage"],
                    reason=form.cleaned_data["reason"],
                    actor=actor,
                )
                moved += 1
            except ValidationError as exc:
                refused.append(f"{contact}: {' '.join(exc.messages)}")
        self.message_user(request, f"Moved {moved} contact(s).", messages.SUCCESS)
        for line in refused[:10]:
            self.message_user(request, line, messages.WARNING)
        return None

    @admin.action(description="Merge two contacts", permissions=["merge"])
    def merge_two(self, request, queryset):
        contacts = list(queryset[:3])
        if len(contacts) != 2:
            self.message_user(request, "Select exactly two contacts to merge.", messages.ERROR)
            return None
        return HttpResponseRedirect(
            reverse("admin:contacts_contact_merge") + f"?first={contacts[0].pk}&second={contacts[1].pk}"
        )

    def has_merge_permission(self, request):
        return request.user.has_perm("contacts.merge_contact")

    def has_gdpr_permission(self, request):
        return request.user.has_perm("compliance.gdpr_request")

    @admin.action(description="GDPR: export everything about them", permissions=["gdpr"])
    def gdpr_export(self, request, queryset):
        from compliance.privacy_admin import admin_export

        started, _ = admin_export(request, queryset)
        self.message_user(
            request,
            f"Export started for {started} contact(s); download from Compliance → Export bundles.",
            messages.SUCCESS,
        )

    @admin.action(description="GDPR: erase everything about them", permissions=["gdpr"])
    def gdpr_erase(self, request, queryset):
        from compliance.privacy_admin import EraseConfirmForm, admin_erase

        form = EraseConfirmForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._intermediate(request, queryset, form, "Erase contacts (GDPR)", "gdpr_erase")
        erased, refused = admin_erase(request, queryset)
        self.message_user(request, f"Erased {erased} contact(s).", messages.SUCCESS)
        for line in refused[:10]:
            self.message_user(request, line, messages.ERROR)
        return None

    @admin.action(description="Archive (hide from lists)", permissions=["change"])
    def archive(self, request, queryset):
        actor = _actor(request)
        for contact in queryset.filter(is_archived=False).iterator(chunk_size=500):
            services.contact_archive(contact=contact, actor=actor)
        self.message_user(request, "Archived.", messages.SUCCESS)

    @admin.action(description="Restore from the archive", permissions=["change"])
    def unarchive(self, request, queryset):
        actor = _actor(request)
        for contact in queryset.filter(is_archived=True, merged_into__isnull=True).iterator(chunk_size=500):
            services.contact_archive(contact=contact, actor=actor, archived=False)
        self.message_user(request, "Restored.", messages.SUCCESS)

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        audit_record(
            actor=_actor(request),
            action="contact.export_csv",
            object_type="contacts.contact",
            changes={"count": queryset.count()},
        )
        rows = queryset.order_by("pk").values_list(*EXPORT_COLUMNS).iterator(chunk_size=2000)
        return csv_response("contacts", EXPORT_COLUMNS, rows)

    # -------------------------------------------------------------- extra pages

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("merge/", wrap(self.merge_view), name="contacts_contact_merge"),
            path("duplicates/", wrap(self.duplicates_view), name="contacts_contact_duplicates"),
            path("import/", wrap(self.import_view), name="contacts_contact_import"),
            *super().get_urls(),
        ]

    def merge_view(self, request):
        if not self.has_merge_permission(request):
            raise PermissionDenied
        source = request.POST if request.method == "POST" else request.GET
        first = get_object_or_404(Contact, pk=source.get("first"))
        second = get_object_or_404(Contact, pk=source.get("second"))
        if request.method == "POST":
            survivor, loser = (first, second) if source.get("survivor") == str(first.pk) else (second, first)
            try:
                services.contact_merge(survivor=survivor, loser=loser, actor=_actor(request))
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
                return HttpResponseRedirect(reverse("admin:contacts_contact_changelist"))
            self.message_user(request, f"Merged {loser.pk} into {survivor.pk}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:contacts_contact_change", args=[survivor.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Merge two contacts",
            "first": first,
            "second": second,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/contacts/contact/merge.html", context)

    def duplicates_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("dismiss"):
            if not self.has_change_permission(request):
                raise PermissionDenied
            first, _, second = request.POST["dismiss"].partition("-")
            if not (first.isascii() and first.isdecimal() and second.isascii() and second.isdecimal()):
                self.message_user(request, "Not a pair of contacts.", messages.ERROR)
                return HttpResponseRedirect(request.path)
            try:
                services.contact_duplicate_dismiss(first_id=int(first), second_id=int(second), actor=_actor(request))
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "title": "Likely duplicates",
            "pairs": selectors.contact_duplicates(),
            "opts": self.model._meta,
            "can_merge": self.has_merge_permission(request),
        }
        return TemplateResponse(request, "admin/contacts/contact/duplicates.html", context)

    def import_view(self, request):
        """Upload a CSV, see what would happen row by row (dry run), then confirm."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "title": "Import contacts", "opts": self.model._meta}
        if request.method == "POST" and "confirm" in request.POST:
            rows, errors = _parse_csv(request.POST.get("payload", ""))
            results = []
            actor = _actor(request)
            for start in range(0, len(rows), MAX_ROWS):
                chunk = contacts_bulk_upsert(rows=rows[start : start + MAX_ROWS], actor=actor)
                results += [{**r, "index": r["index"] + start} for r in chunk]
            created = sum(r["status"] == "created" for r in results)
            updated = sum(r["status"] == "updated" for r in results)
            failed = sum(r["status"] == "error" for r in results) + len(errors)
            self.message_user(
                request, f"Imported: {created} created, {updated} updated, {failed} refused.", messages.SUCCESS
            )
            return HttpResponseRedirect(reverse("admin:contacts_contact_changelist"))
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            raw = form.cleaned_data["file"].read()
            if len(raw) > IMPORT_MAX_BYTES:
                # The confirm step posts the file back: it must fit Django's request-body limit.
                form.add_error("file", f"At most {IMPORT_MAX_BYTES // 1_000_000} MB per import; split the file.")
            else:
                try:
                    text = raw.decode("utf-8-sig")
                except UnicodeDecodeError:  # Excel's plain "CSV" (cp1252): refuse rather than mangle names
                    form.add_error("file", "The file is not UTF-8 text; save it as “CSV UTF-8” and upload it again.")
                else:
                    rows, errors = _parse_csv(text)
                    context.update(preview=_preview(rows), parse_errors=errors, payload=text, rows=len(rows))
        context["form"] = form
        return TemplateResponse(request, "admin/contacts/contact/import.html", context)


def _parse_csv(text: str) -> tuple[list[dict], list[str]]:
    reader = csv.DictReader(io.StringIO(text))
    unknown = [c for c in (reader.fieldnames or []) if c not in CSV_COLUMNS]
    errors = [f"Unknown column(s) ignored: {', '.join(unknown)}."] if unknown else []
    rows = []
    try:
        for line in reader:
            row = {k: v.strip() for k, v in line.items() if k in CSV_COLUMNS and v is not None and v.strip() != ""}
            if "tags" in row:
                row["tags"] = [t for t in row["tags"].split(";") if t.strip()]
            rows.append(row)
    except csv.Error as exc:  # a cell over csv.field_size_limit(), a NUL byte...: the file is refused
        limit = "field larger than field limit" in str(exc)
        reason = f"a cell is too long (at most {csv.field_size_limit():,} characters)" if limit else str(exc)
        return [], [*errors, f"Line {reader.line_num} cannot be read as CSV: {reason}. Nothing was imported."]
    return rows, errors


def _preview(rows: list[dict]) -> list[dict]:
    """What the import would do, without writing: the same validation, and the identity lookup
    for all rows in two queries."""
    from contacts.bulk import _existing, _prepare, _refuse_suppressed

    definitions = {d.key: d for d in CustomFieldDefinition.objects.all()}
    preview, prepared = [], {}
    for index, row in enumerate(rows[:PREVIEW_ROWS]):
        item = {"line": index + 2, "row": row}
        try:
            prepared[index] = _prepare(row, definitions)
        except ValidationError as exc:
            item.update(action="error", errors=exc.message_dict)
        preview.append(item)
    refused: list[dict] = [{} for _ in preview]
    _refuse_suppressed(prepared, refused)  # an erased person's email or phone
    for index, result in enumerate(refused):
        if result.get("status") == "error":
            preview[index].update(action="error", errors=result["errors"])
    existing = _existing(prepared.values())
    for index, (email, external_id, _) in prepared.items():
        by_email = existing["email"].get(email) if email else None
        by_external = existing["external_id"].get(external_id) if external_id else None
        if by_email and by_external and by_email["id"] != by_external["id"]:
            errors = {"email": [f"contact {by_email['id']}"], "external_id": [f"contact {by_external['id']}"]}
            preview[index].update(action="error", errors=errors)
        else:
            preview[index]["action"] = "update" if by_email or by_external else "create"
    return preview


@admin.register(Company)
class CompanyAdmin(FastChangeListMixin, admin.ModelAdmin):
    list_display = ["name", "domain", "industry", "size", "created_at"]
    search_fields = ["name", "=domain"]
    list_filter = ["industry"]

    def save_model(self, request, obj, form, change):
        data = {k: form.cleaned_data[k] for k in ("name", "domain", "industry", "size") if k in form.cleaned_data}
        try:
            if change:
                services.company_update(company=obj, actor=_actor(request), **data)
            else:
                company, _ = services.company_upsert(actor=_actor(request), **data)
                obj.pk = company.pk
        except ConflictError as exc:
            raise PermissionDenied(exc.message) from exc

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Activity)
class ActivityAdmin(ReadOnlyAdminMixin, ByIdOrContactSearch, PhiAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    """The timeline is append-only: nothing here changes it."""

    phi_fields = ("properties",)
    list_display = ["occurred_at", "contact", "type", "source"]
    sortable_by = ["occurred_at", "contact"]  # index-served; a type or a source is shared by millions of rows
    list_filter = [ActivityTypeFilter, ("occurred_at", admin.DateFieldListFilter)]
    list_select_related = ["contact"]
    raw_id_fields = ["contact"]


@admin.register(Note)
class NoteAdmin(PhiAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    phi_fields = ("body",)
    list_display = ["created_at", "contact", "author"]
    list_select_related = ["contact", "author"]
    raw_id_fields = ["contact"]
    fields = ["contact", "body"]

    def save_model(self, request, obj, form, change):
        if change:
            raise PermissionDenied("Notes are not edited; add another.")
        note = services.note_create(contact=obj.contact, body=obj.body, actor=_actor(request), author=request.user)
        obj.pk = note.pk

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Ticket)
class TicketAdmin(ByIdOrContactSearch, PhiAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    phi_fields = ("body",)
    list_display = ["id", "subject", "contact", "status", "priority", "sla_due_at", "owner"]
    list_filter = ["status", "priority", OwnerFilter]
    list_select_related = ["contact", "owner"]
    raw_id_fields = ["contact", "owner"]

    def save_model(self, request, obj, form, change):
        actor = _actor(request)
        if change:
            fields = {
                k: form.cleaned_data[k]
                for k in form.changed_data
                if k in ("status", "priority", "owner", "subject", "body")
            }
            services.ticket_update(ticket=obj, actor=actor, **fields)
        else:
            ticket = services.ticket_create(
                contact=obj.contact,
                subject=obj.subject,
                body=obj.body,
                priority=obj.priority,
                owner=obj.owner,
                actor=actor,
            )
            obj.pk = ticket.pk

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(ByIdOrContactSearch, PhiAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    phi_fields = ("items",)
    list_display = ["id", "contact", "amount", "currency", "status", "paid_at"]
    sortable_by = ["id", "contact"]  # index-served; the others sort the whole table
    list_filter = ["status", "currency", ("paid_at", admin.DateFieldListFilter)]
    list_select_related = ["contact"]
    raw_id_fields = ["contact"]

    def has_change_permission(self, request, obj=None):
        return False  # orders come from the app; staff read them

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(Subscription)
class SubscriptionAdmin(ByIdOrContactSearch, PhiAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    phi_fields = ("plan",)
    list_display = ["id", "contact", "plan", "status", "started_at", "renews_at"]
    list_filter = ["status"]
    list_select_related = ["contact"]
    actions = ["cancel"]

    @admin.action(description="Cancel selected subscriptions", permissions=["change"])
    def cancel(self, request, queryset):
        for subscription in queryset:
            services.subscription_cancel(subscription=subscription, actor=_actor(request))
        self.message_user(request, "Cancelled.", messages.SUCCESS)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        fields = [f.name for f in Subscription._meta.fields]
        return [f for f in fields if f not in self.phi_fields] if self._hides_phi(request) else fields


@admin.register(CustomFieldDefinition)
class CustomFieldDefinitionAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["key", "label", "type", "required"]


@admin.register(LifecycleRule)
class LifecycleRuleAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["event_type", "to_stage", "enabled", "description"]
    list_editable = ["enabled"]
    list_filter = ["enabled", "to_stage"]


@admin.register(LifecycleSettings)
class LifecycleSettingsAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "at_risk_churn_risk", "churned_after_days"]

    def has_add_permission(self, request):
        return not LifecycleSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False
