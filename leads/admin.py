"""The leads admin: leads, deals (with a per-stage pipeline board), and the rules staff manage.

Writes go through the services (capture, status, assignment, stage moves, rule saves), so
the admin leaves the same history, audit and outbox rows as the API. Medical fields
(assessment, persona, a deal's plan) show only to staff holding compliance.view_phi."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db.models import BigIntegerField, BooleanField, F, Func, Q, Value
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from contacts.models import Contact
from contacts.selectors import contact_search
from crm_platform.actor import Actor
from crm_platform.admin_tools import COUNT_CAP, FastChangeListMixin, PhiAdminMixin
from crm_platform.errors import ConflictError
from leads import selectors, services
from leads.models import (
    ClvSettings,
    Deal,
    Lead,
    LeadAssignmentRule,
    Pipeline,
    ScoringRule,
    Stage,
    StageAutomation,
)

BOARD_DEALS_PER_STAGE = 25
HISTORY_ROWS = 50


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ConflictError):
        return exc.message
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


def _history_table(headers, rows):
    if not rows:
        return "—"
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


class _AnyOf(Func):
    """`expression = ANY(array)`: thousands of values as one array parameter (`IN (%s, %s, ...)`
    takes longer to build and send than the database takes to answer it)."""

    template = "%(expressions)s)"
    arg_joiner = " = ANY("
    output_field = BooleanField()


def _bigints(values: list[int]) -> Value:
    return Value(values, output_field=ArrayField(BigIntegerField()))


def _search_by_contact(queryset, term: str):
    """Search through the contact: exact or prefix email, phone or name, index-served."""
    return queryset.filter(contact__in=contact_search(Contact.objects.all(), term).values("pk"))


class OwnerForm(forms.Form):
    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_staff=True, is_active=True).order_by("username"),
        required=False,
        help_text="Empty: nobody owns them.",
    )


class StageForm(forms.Form):
    stage = forms.ModelChoiceField(queryset=Stage.objects.select_related("pipeline"))

    def __init__(self, *args, pipelines=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stage"].queryset = Stage.objects.filter(pipeline__in=pipelines).select_related("pipeline")
        self.fields["stage"].label_from_instance = lambda s: f"{s.pipeline.name}: {s.name}"


class _ActionPage:
    """An action that asks one question (an owner, a stage) on a page of its own first."""

    def _ask(self, request, queryset, *, form, title, action):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
            "queryset": queryset,
            "action": action,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/leads/action_form.html", context)


# ----------------------------------------------------------------------------- leads


class LeadForm(forms.ModelForm):
    reason = forms.CharField(max_length=200, required=False, help_text="Why the status changes (kept in its history).")

    class Meta:
        model = Lead
        fields = ["status", "owner"]


@admin.register(Lead)
class LeadAdmin(_ActionPage, PhiAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    form = LeadForm
    phi_fields = ("persona", "assessment")  # shown with the PHI permission or break-glass, each view audited
    list_display = ["id", "contact", "source", "status", "owner", "created_at"]
    list_filter = ["status", "source", "owner", ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["contact", "owner"]
    search_fields = ["contact__email"]
    search_help_text = "Email, phone, or name (prefix)."
    show_full_result_count = False
    actions = ["assign_owner", "mark_contacted", "mark_qualified", "mark_unqualified"]
    _base_readonly = [
        "contact",
        "source",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "created_at",
        "updated_at",
        "status_history",
    ]

    def has_add_permission(self, request):
        return False  # leads are captured (API, forms, imports), which finds or creates the contact

    def has_delete_permission(self, request, obj=None):
        return False  # a lead's history stays; close it as unqualified instead

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return _search_by_contact(queryset, search_term), False

    def get_fields(self, request, obj=None):
        return self._phi_filtered(request, obj, ["status", "reason", "owner", *self.phi_fields, *self._base_readonly])

    def get_readonly_fields(self, request, obj=None):
        return self._phi_filtered(request, obj, [*self._base_readonly, *self.phi_fields])

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        updates = {}
        if "owner" in form.changed_data:
            updates["owner"] = data["owner"]
        if "status" in form.changed_data:
            updates.update(status=data["status"], reason=data.get("reason", ""))
        lead = Lead.objects.get(pk=obj.pk)
        services.lead_update(lead=lead, actor=Actor.from_request(request), **updates)

    @admin.display(description="status history")
    def status_history(self, obj):
        rows = obj.status_history.all()[:HISTORY_ROWS] if obj.pk else []
        return _history_table(
            ["when", "from", "to", "by", "reason"],
            [(r.at, r.from_status, r.to_status, f"{r.actor_kind}:{r.actor_id}", r.reason) for r in rows],
        )

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The service decides which status moves are allowed; its refusal (raised inside the
        # admin's transaction, so nothing was written) comes back as a message on the form.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (ValidationError, ConflictError) as exc:
            self.message_user(request, _error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    @admin.action(description="Assign an owner to the selected leads", permissions=["change"])
    def assign_owner(self, request, queryset):
        if "apply" in request.POST:
            form = OwnerForm(request.POST)
            if form.is_valid():
                actor = Actor.from_request(request)
                for lead in queryset:
                    services.lead_assign(lead=lead, owner=form.cleaned_data["owner"], actor=actor)
                self.message_user(request, f"Assigned {queryset.count()} lead(s).", messages.SUCCESS)
                return None
        else:
            form = OwnerForm()
        return self._ask(request, queryset, form=form, title="Assign an owner", action="assign_owner")

    def _set_status(self, request, queryset, status):
        actor = Actor.from_request(request)
        done, failed = 0, []
        for lead in queryset:
            try:
                services.lead_set_status(lead=lead, status=status, actor=actor, reason="admin bulk action")
                done += 1
            except (ValidationError, ConflictError) as exc:
                failed.append(f"lead {lead.pk}: {_error_text(exc)}")
        self.message_user(request, f"{done} lead(s) now {status}.", messages.SUCCESS)
        if failed:
            self.message_user(request, "; ".join(failed), messages.WARNING)

    @admin.action(description="Mark as contacted", permissions=["change"])
    def mark_contacted(self, request, queryset):
        self._set_status(request, queryset, Lead.Status.CONTACTED)

    @admin.action(description="Mark as qualified", permissions=["change"])
    def mark_qualified(self, request, queryset):
        self._set_status(request, queryset, Lead.Status.QUALIFIED)

    @admin.action(description="Mark as unqualified", permissions=["change"])
    def mark_unqualified(self, request, queryset):
        self._set_status(request, queryset, Lead.Status.UNQUALIFIED)


# ----------------------------------------------------------------------------- deals


class DealForm(forms.ModelForm):
    class Meta:
        model = Deal
        fields = [
            "name",
            "pipeline",
            "stage",
            "amount",
            "currency",
            "close_date",
            "owner",
            "contact",
            "company",
            "plan",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "stage" in self.fields:
            self.fields["stage"].queryset = Stage.objects.select_related("pipeline")
            self.fields["stage"].label_from_instance = lambda s: f"{s.pipeline.name}: {s.name}"
        if "currency" in self.fields and self.instance.pk is None:
            # A new deal left without one takes its pipeline's (deal_create), not the model's USD.
            self.fields["currency"].required = False
            self.fields["currency"].help_text = "Empty: the pipeline's currency."
            if "currency" not in (kwargs.get("initial") or {}):
                self.initial["currency"] = ""

    def clean_currency(self):
        return self.cleaned_data["currency"] or None  # None: the pipeline's

    def clean(self):
        data = super().clean()
        stage, pipeline = data.get("stage"), data.get("pipeline") or getattr(self.instance, "pipeline", None)
        if stage and pipeline and stage.pipeline_id != pipeline.pk:
            self.add_error("stage", "Pick a stage of the deal's pipeline.")
        return data


@admin.register(Deal)
class DealAdmin(_ActionPage, PhiAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    phi_fields = ("plan",)  # shown with the PHI permission or break-glass, each view audited
    form = DealForm
    list_display = ["name", "contact", "pipeline", "stage", "amount", "currency", "owner", "close_date"]
    list_filter = ["pipeline", "stage", "owner"]
    list_select_related = ["contact", "pipeline", "stage", "owner"]
    # Sorts an index serves (deal_name_idx, deal_amount_idx, deal_close_date_idx); the contact,
    # pipeline and stage sort by the other table's order (a join of every deal), and an owner or
    # a currency is shared by tens of thousands of deals (the filters find them).
    sortable_by = ["name", "amount", "close_date"]
    search_fields = ["name"]  # shows the search box; get_search_results does the work
    search_help_text = (
        "The start of the deal's name (any case), or the contact's email, phone or the start of their first "
        "and/or last name."
    )
    show_full_result_count = False
    raw_id_fields = ["contact", "company"]
    actions = ["move_stage", "assign_owner"]
    readonly_fields = ["stage_entered_at", "created_at", "updated_at", "stage_history"]

    def has_delete_permission(self, request, obj=None):
        return False  # close a deal as lost; its history and stats stay

    def get_fields(self, request, obj=None):
        fields = list(DealForm.Meta.fields)
        if obj is not None:
            fields.remove("pipeline")  # a deal stays in its pipeline; moving is by stage
        return self._phi_filtered(request, obj, [*fields, *(self.readonly_fields if obj else [])])

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        # The matching ids are read once, as many as the paginator counts: the count and the page
        # then look them up by primary key, where each would search again (a common name's
        # contacts are thousands of rows to read). Past that many, they search again.
        matching = selectors.deal_ids_matching(search_term)
        ids = list(matching[: COUNT_CAP + 1])
        return queryset.filter(_AnyOf(F("pk"), _bigints(ids)) if len(ids) <= COUNT_CAP else Q(pk__in=matching)), False

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request)
        data = {name: value for name, value in form.cleaned_data.items() if name in form.fields}
        if change:
            stage = data.pop("stage", None)
            data.pop("pipeline", None)
            fields = {name: data[name] for name in form.changed_data if name in data}
            deal = Deal.objects.get(pk=obj.pk)
            if fields:
                deal = services.deal_update(deal=deal, actor=actor, **fields)
            if stage is not None and stage.pk != deal.stage_id:
                services.deal_move_stage(deal=deal, stage=stage, actor=actor)
        else:
            deal = services.deal_create(actor=actor, **data)
            obj.pk = deal.pk
            obj._state.adding = False

    @admin.display(description="stage history")
    def stage_history(self, obj):
        rows = obj.stage_history.select_related("from_stage", "to_stage")[:HISTORY_ROWS] if obj.pk else []
        return _history_table(
            ["when", "from", "to", "days in previous stage", "by"],
            [
                (
                    r.at,
                    r.from_stage.name if r.from_stage else "",
                    r.to_stage.name,
                    "" if r.days_in_previous_stage is None else f"{r.days_in_previous_stage:.1f}",
                    f"{r.actor_kind}:{r.actor_id}",
                )
                for r in rows
            ],
        )

    def get_urls(self):
        board = self.admin_site.admin_view(self.board_view)
        return [path("board/", board, name="leads_deal_board"), *super().get_urls()]

    def board_view(self, request):
        """The pipeline as columns: each stage's totals and its most recent deals."""
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        pipelines = list(Pipeline.objects.all())
        if not pipelines:
            return HttpResponseRedirect(reverse("admin:leads_deal_changelist"))
        chosen = request.GET.get("pipeline")
        pipeline = (
            get_object_or_404(Pipeline, pk=chosen)
            if chosen and chosen.isascii() and chosen.isdecimal()
            else next((p for p in pipelines if p.is_default), pipelines[0])
        )
        stats = selectors.pipeline_stats(pipeline=pipeline)
        by_stage = selectors.deals_latest_per_stage(pipeline=pipeline, per_stage=BOARD_DEALS_PER_STAGE)
        columns = [{**row, "deals": by_stage.get(row["id"], [])} for row in stats["stages"]]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Pipeline board: {pipeline.name}",
            "opts": self.model._meta,
            "pipeline": pipeline,
            "pipelines": pipelines,
            "stats": stats,
            "columns": columns,
            "per_stage": BOARD_DEALS_PER_STAGE,
        }
        return TemplateResponse(request, "admin/leads/deal/board.html", context)

    @admin.action(description="Move the selected deals to a stage", permissions=["change"])
    def move_stage(self, request, queryset):
        pipelines = set(queryset.values_list("pipeline_id", flat=True))
        if "apply" in request.POST:
            form = StageForm(request.POST, pipelines=pipelines)
            if form.is_valid():
                actor = Actor.from_request(request)
                stage = form.cleaned_data["stage"]
                moved, failed = 0, []
                for deal in queryset:
                    try:
                        services.deal_move_stage(deal=deal, stage=stage, actor=actor)
                        moved += 1
                    except ValidationError as exc:
                        failed.append(f"{deal}: {_error_text(exc)}")
                self.message_user(request, f"Moved {moved} deal(s) to {stage.name}.", messages.SUCCESS)
                if failed:
                    self.message_user(request, "; ".join(failed), messages.WARNING)
                return None
        else:
            form = StageForm(pipelines=pipelines)
        return self._ask(request, queryset, form=form, title="Move deals to a stage", action="move_stage")

    @admin.action(description="Assign an owner to the selected deals", permissions=["change"])
    def assign_owner(self, request, queryset):
        if "apply" in request.POST:
            form = OwnerForm(request.POST)
            if form.is_valid():
                changed = services.deals_assign(
                    deals=list(queryset), owner=form.cleaned_data["owner"], actor=Actor.from_request(request)
                )
                self.message_user(request, f"Assigned {changed} deal(s).", messages.SUCCESS)
                return None
        else:
            form = OwnerForm()
        return self._ask(request, queryset, form=form, title="Assign an owner", action="assign_owner")


# ----------------------------------------------------------------------------- rules staff manage


class AuditedAdmin(admin.ModelAdmin):
    """Saves and deletes through config_save/config_delete: checked and audited."""

    def save_model(self, request, obj, form, change):
        services.config_save(instance=obj, actor=Actor.from_request(request), changed=form.changed_data)

    def delete_model(self, request, obj):
        services.config_delete(instance=obj, actor=Actor.from_request(request))

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.config_delete(instance=obj, actor=Actor.from_request(request))

    def save_formset(self, request, form, formset, change):
        actor = Actor.from_request(request)
        formset.save(commit=False)
        for obj in formset.new_objects:
            services.config_save(instance=obj, actor=actor, changed=[f.name for f in obj._meta.concrete_fields])
        for obj, fields in formset.changed_objects:
            services.config_save(instance=obj, actor=actor, changed=fields)
        for obj in formset.deleted_objects:
            services.config_delete(instance=obj, actor=actor)


class StageInline(admin.TabularInline):
    model = Stage
    fields = ["order", "key", "name", "probability", "is_won", "is_lost"]
    extra = 0
    ordering = ["order", "id"]


@admin.register(Pipeline)
class PipelineAdmin(AuditedAdmin):
    list_display = ["name", "is_default", "currency"]
    inlines = [StageInline]


@admin.register(StageAutomation)
class StageAutomationAdmin(AuditedAdmin):
    list_display = ["stage", "pipeline", "action", "enabled"]
    list_filter = ["enabled", "action", "stage__pipeline"]
    list_select_related = ["stage__pipeline"]
    actions = ["switch_on", "switch_off"]

    @admin.display(description="pipeline", ordering="stage__pipeline__name")
    def pipeline(self, obj):
        return obj.stage.pipeline.name

    @admin.action(description="Switch the selected automations on", permissions=["change"])
    def switch_on(self, request, queryset):
        changed = services.stage_automations_set_enabled(
            automations=queryset, enabled=True, actor=Actor.from_request(request)
        )
        self.message_user(request, f"Switched on {changed} automation(s).", messages.SUCCESS)

    @admin.action(description="Switch the selected automations off", permissions=["change"])
    def switch_off(self, request, queryset):
        changed = services.stage_automations_set_enabled(
            automations=queryset, enabled=False, actor=Actor.from_request(request)
        )
        self.message_user(request, f"Switched off {changed} automation(s).", messages.SUCCESS)


@admin.register(LeadAssignmentRule)
class LeadAssignmentRuleAdmin(AuditedAdmin):
    list_display = ["name", "kind", "team", "match_value", "priority", "enabled", "last_assigned"]
    list_filter = ["enabled", "kind"]
    list_select_related = ["last_assigned"]
    readonly_fields = ["last_assigned", "last_assigned_at"]


@admin.register(ScoringRule)
class ScoringRuleAdmin(AuditedAdmin):
    list_display = ["name", "kind", "field", "operator", "value", "event_type", "points", "half_life_days", "enabled"]
    list_filter = ["enabled", "kind"]
    search_fields = ["name", "event_type"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "points", "enabled"]}),
        ("Profile rule", {"fields": ["field", "operator", "value"]}),
        ("Activity rule", {"fields": ["event_type", "half_life_days", "max_points"]}),
    ]


@admin.register(ClvSettings)
class ClvSettingsAdmin(AuditedAdmin):
    list_display = ["__str__", "expected_lifetime_years"]

    def has_add_permission(self, request):
        return not ClvSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False
