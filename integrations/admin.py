"""integrations admin: the outbox (read-only, replay, purge), webhook endpoints and their delivery log.

Actions call relay/services functions. A signing secret (a new endpoint's, a rotated one) is shown
once, on the page that answers the request that made it: never in a message, which Django's
default storage keeps in a cookie on the browser until the next page.
"""

from __future__ import annotations

import json
import operator
import re
from datetime import timedelta
from functools import reduce

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.postgres.forms import SimpleArrayField
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from compliance.crypto import DecryptionError
from crm_platform.actor import Actor
from crm_platform.admin_tools import (
    PHI_PERMISSION,
    ExactSearchMixin,
    FastChangeListMixin,
    IndexedValuesFieldListFilter,
    PhiAdminMixin,
    ReadOnlyAdminMixin,
    distinct_values,
)
from crm_platform.models import OutboxMessage
from crm_platform.outbox import outbox_open
from integrations import inbox, relay, selectors, services, sync
from integrations.events import EVENT_TYPES, TOPIC_EVENT_TYPES
from integrations.models import INBOX_APPLIED_NAMED, InboundEvent, SyncEvent, WebhookDelivery, WebhookEndpoint
from integrations.webhooks import url_check

ROTATION_PAUSE_SECONDS = 60  # between two rotations of one endpoint's secret in the admin

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")  # a payload digest, as staff may paste it


class _ReplayPermission:
    """Sending outbox rows again (replay, retry), from whichever page: the outbox's own change
    permission, the same everywhere."""

    def has_replay_permission(self, request):
        return request.user.has_perm("crm_platform.change_outboxmessage")


def _warn_overtaken(model_admin, request, ids=(), *, overtaken: int | None = None) -> None:
    """Replayed rows that a later message for the same object already reached arrive after it:
    staff hear of it (the per-object order holds among undelivered rows, not against ones
    already delivered). `overtaken`: the count, when the caller has it."""
    if overtaken is None:
        overtaken = relay.outbox_overtaken(ids=ids)
    if overtaken:
        model_admin.message_user(
            request,
            f"{overtaken} of them are older than a message already delivered for the same object to the same "
            'place and will arrive after it. For an endpoint that comes back, "Enable and replay failed '
            "deliveries, in order\" keeps the order; receivers may also order by the payload's timestamp.",
            messages.WARNING,
        )


# ----------------------------------------------------------------------------- outbox


@admin.register(OutboxMessage)
class OutboxMessageAdmin(
    _ReplayPermission, ReadOnlyAdminMixin, PhiAdminMixin, FastChangeListMixin, ExactSearchMixin, admin.ModelAdmin
):
    """Read-only; replay and purge are actions guarded by the outbox's change permission.
    Payloads may carry medical fields (a plan, a persona, an assessment): PHI staff only, and
    each view is audited (compliance/tests/test_phi_masking.py walks this page)."""

    phi_fields = ("payload_published",)
    list_display = ("id", "topic", "destination", "object_type", "object_id", "status", "attempts", "next_attempt_at")
    sortable_by = ("id",)  # the other columns are shared by many rows or in no index of their own
    list_filter = (
        "status",
        ("destination", IndexedValuesFieldListFilter),
        ("topic", IndexedValuesFieldListFilter),
    )
    search_fields = ("=object_id", "=destination", "=topic")
    # Topics and destinations are lower-case names; an object id is matched as typed.
    search_normalizers = {"destination": str.lower, "topic": str.lower}
    search_help_text = "Object id (exact), destination or topic (whole, any case)."
    ordering = ("-id",)
    actions = ("replay", "purge_delivered")
    # The payload as published: its medical fields are sealed at rest (crm_platform.outbox).
    readonly_fields = ["payload_published" if f.name == "payload" else f.name for f in OutboxMessage._meta.fields]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    @admin.display(description="payload")
    def payload_published(self, obj):
        try:
            payload = outbox_open(obj.payload)
        except DecryptionError:
            return "(its medical fields do not decrypt with the keys in FIELD_ENCRYPTION_KEYS)"
        return format_html("<pre>{}</pre>", json.dumps(payload, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder))

    def search_q(self, field, value):
        if field == "object_id":
            # No index leads with object_id; outbox_object_idx is (object_type, object_id): name
            # each object type there is (a skip scan of that index) and it finds the id under each.
            return Q(object_type__in=distinct_values(OutboxMessage, "object_type", limit=None), object_id=value)
        return super().search_q(field, value)

    @admin.action(description="Replay: send again now", permissions=["replay"])
    def replay(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        count = relay.outbox_replay(ids=ids, actor=Actor.from_request(request))
        self.message_user(request, f"{count} row(s) will be sent again.", messages.SUCCESS)
        _warn_overtaken(self, request, ids)

    @admin.action(description="Purge delivered rows past the retention", permissions=["replay"])
    def purge_delivered(self, request, queryset):
        from compliance.services import audit_record

        count = relay.outbox_purge()
        if count:
            audit_record(
                actor=Actor.from_request(request),
                action="outbox.purge",
                object_type="crm_platform.outboxmessage",
                changes={"deleted": count, "older_than_days": relay.retention_days()},
            )
        self.message_user(request, f"{count} delivered row(s) older than {relay.retention_days()} days deleted.")


# ----------------------------------------------------------------------------- webhook endpoints


def _endpoint_formfield(field, **kwargs):
    """The form built for a field made read-only (the URL, see get_readonly_fields) is built
    from the model once before it is dropped: with https assumed, as the declared field does."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked: every event type.",
    )
    phi_fields = SimpleArrayField(forms.CharField(max_length=60), required=False, help_text="Comma-separated.")
    # As the API has it: 0 is no rate (the relay reads it as "no limit", not "hold everything").
    rate_limit_per_minute = forms.IntegerField(
        min_value=1,
        max_value=2_147_483_647,
        required=False,
        help_text="At most this many deliveries a minute; empty: no limit.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "description", "event_types", "rate_limit_per_minute", "may_receive_phi", "phi_fields")
        formfield_callback = _endpoint_formfield

    def clean(self):
        """The service's own checks, so a refused URL or field shows beside it."""
        cleaned = super().clean()
        checks = {"url": url_check, "phi_fields": services.check_phi_fields}
        for name, check in checks.items():
            if name in cleaned and (self.instance.pk is None or name in self.changed_data):
                try:
                    check(cleaned[name])
                except ValidationError as exc:
                    self.add_error(name, exc.message_dict.get(name, exc.messages))
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(_ReplayPermission, admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = (
        "id",
        "url",
        "description",
        "enabled",
        "attention",
        "success_rate",
        "p95_latency",
        "deliveries_7d",
        "owner",
    )
    list_filter = ("enabled", "needs_attention", "may_receive_phi")
    search_fields = ("url", "description")
    list_select_related = ("owner",)
    readonly_fields = ("owner", "failing_since", "disabled_at", "disabled_reason", "needs_attention", "created_at")
    actions = ("enable", "enable_and_replay", "disable", "send_test", "rotate_secret", "replay_failed")

    def get_readonly_fields(self, request, obj=None):
        """Where medical fields go (whether, which, and the address and event types of an
        endpoint receiving them; switching one on, see `enable`) is decided by staff who may
        see them (compliance.view_phi), as on the API (phi:read); for everyone else those
        fields are shown, not editable."""
        return [*super().get_readonly_fields(request, obj), *self._phi_guarded(request, obj)]

    @staticmethod
    def _phi_guarded(request, obj: WebhookEndpoint | None) -> list[str]:
        if request.user.has_perm(PHI_PERMISSION):
            return []
        return ["may_receive_phi", "phi_fields", *(("url", "event_types") if obj and obj.may_receive_phi else ())]

    def get_changelist(self, request, **kwargs):
        return _EndpointChangeList

    @admin.display(description="⚠", boolean=False)
    def attention(self, obj):
        if obj.needs_attention:
            return format_html('<strong style="color:#ba2121">disabled: {}</strong>', obj.disabled_reason)
        return ""

    @admin.display(description="success (7 d)")
    def success_rate(self, obj):
        return f"{100 * obj.stat_succeeded / obj.stat_total:.1f}%" if obj.stat_total else "-"

    @admin.display(description="p95 latency")
    def p95_latency(self, obj):
        return f"{obj.stat_p95_ms:.0f} ms" if obj.stat_p95_ms is not None else "-"

    @admin.display(description="deliveries (7 d)")
    def deliveries_7d(self, obj):
        # Test sends are no deliveries (the rate and the p95 leave them out): shown apart.
        return f"{obj.stat_total} (+{obj.stat_test_sends} test)" if obj.stat_test_sends else obj.stat_total

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request)
        data = {name: form.cleaned_data[name] for name in form.Meta.fields if name in form.cleaned_data}
        if change:
            # The form has already written its values onto `obj`: the service compares them
            # with the stored endpoint (locked), to save and audit what changed.
            services.webhook_endpoint_update(
                endpoint=obj,
                data=data,
                actor=actor,
                authorize=lambda locked, d: self._keep_phi_routing(request, locked, d),
            )
            return
        endpoint, secret = services.webhook_endpoint_create(actor=actor, **data)
        obj.pk = endpoint.pk
        request._webhook_secrets = [(endpoint, secret, "")]

    def _keep_phi_routing(self, request, locked: WebhookEndpoint, data: dict) -> dict:
        """Judged again on the endpoint as it now is: medical fields switched on since the form
        was read make its address and event types someone else's to change."""
        guarded = set(self._phi_guarded(request, locked))
        kept_out = sorted(name for name in data if name in guarded and data[name] != getattr(locked, name))
        if kept_out:
            self.message_user(
                request,
                f"Not changed: {', '.join(kept_out)}. The endpoint now receives medical fields; "
                "staff who may see them decide where they go.",
                messages.ERROR,
            )
        return {name: value for name, value in data.items() if name not in kept_out}

    def response_add(self, request, obj, post_url_continue=None):
        return self._secrets_shown_once(request, "Webhook endpoint added", request._webhook_secrets)

    def _secrets_shown_once(self, request, title: str, secrets: list[tuple[WebhookEndpoint, str, str]]):
        context = {**self.admin_site.each_context(request), "title": title, "secrets": secrets, "opts": self.opts}
        return TemplateResponse(request, "admin/integrations/webhookendpoint/secrets.html", context)

    @admin.action(description="Enable", permissions=["change"])
    def enable(self, request, queryset):
        actor = Actor.from_request(request)
        may_send_phi = request.user.has_perm(PHI_PERMISSION)
        enabled = 0
        for endpoint in queryset:
            # Judged by the UPDATE itself, on the endpoint as it is then (not as listed here).
            if not services.webhook_endpoint_enable(endpoint=endpoint, actor=actor, phi_allowed=may_send_phi):
                self.message_user(
                    request, f"{endpoint}: receives medical fields; staff who may see them enable it.", messages.ERROR
                )
                continue
            enabled += 1
        self.message_user(request, f"{enabled} endpoint(s) enabled.")

    @admin.action(description="Enable and replay failed deliveries, in order", permissions=["change", "replay"])
    def enable_and_replay(self, request, queryset):
        actor = Actor.from_request(request)
        may_send_phi = request.user.has_perm(PHI_PERMISSION)
        for endpoint in queryset:
            count = services.webhook_endpoint_recover(endpoint=endpoint, actor=actor, phi_allowed=may_send_phi)
            if count is None:
                self.message_user(
                    request, f"{endpoint}: receives medical fields; staff who may see them enable it.", messages.ERROR
                )
                continue
            self.message_user(request, f"{endpoint}: enabled; {count} message(s) go out again before any new one.")

    @admin.action(description="Disable", permissions=["change"])
    def disable(self, request, queryset):
        actor = Actor.from_request(request)
        for endpoint in queryset:
            services.webhook_endpoint_disable(endpoint=endpoint, actor=actor)
        self.message_user(request, f"{len(queryset)} endpoint(s) disabled.")

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test(self, request, queryset):
        actor = Actor.from_request(request)
        for endpoint in queryset:
            try:
                delivery = services.webhook_endpoint_test(endpoint=endpoint, actor=actor)
            except ValidationError as exc:
                self.message_user(request, f"{endpoint}: {'; '.join(exc.messages)}", messages.ERROR)
                continue
            level = messages.SUCCESS if delivery.succeeded else messages.ERROR
            outcome = delivery.status_code or delivery.error
            self.message_user(request, f"{endpoint}: {outcome} in {delivery.latency_ms} ms", level)

    @admin.action(description="Rotate the signing secret (the old one signs too for 24 h)", permissions=["change"])
    def rotate_secret(self, request, queryset):
        actor = Actor.from_request(request)
        secrets = []
        # Reloading the page that showed new secrets posts this action again: the rotation would
        # drop at once the secret receivers still verify with. A minute must pass in between.
        just_rotated = selectors.webhook_endpoints_rotated_since(
            [endpoint.pk for endpoint in queryset], timezone.now() - timedelta(seconds=ROTATION_PAUSE_SECONDS)
        )
        for endpoint in queryset:
            if endpoint.pk in just_rotated:
                self.message_user(
                    request,
                    f"{endpoint}: its secret was rotated less than a minute ago (a reloaded page sends the "
                    "action again); rotate it again in a minute if you meant to.",
                    messages.ERROR,
                )
                continue
            secret, until = services.webhook_endpoint_rotate_secret(endpoint=endpoint, actor=actor)
            note = f"The old secret also signs until {until:%Y-%m-%d %H:%M} UTC." if until else "The old one stopped."
            secrets.append((endpoint, secret, note))
        return self._secrets_shown_once(request, "Signing secrets rotated", secrets) if secrets else None

    @admin.action(description="Replay failed and dead deliveries", permissions=["replay"])
    def replay_failed(self, request, queryset):
        ids = [pk for endpoint in queryset for pk in services.webhook_endpoint_failed_ids(endpoint)]
        count = relay.outbox_replay(ids=ids, actor=Actor.from_request(request))
        self.message_user(request, f"{count} message(s) will be sent again.")
        _warn_overtaken(self, request, ids)


class _EndpointChangeList(ChangeList):
    """Adds the page's delivery statistics in one query (not joined into the count queries)."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        pks = [endpoint.pk for endpoint in self.result_list]
        stats = {e.pk: e for e in selectors.webhook_endpoints_with_stats(WebhookEndpoint.objects.filter(pk__in=pks))}
        for endpoint in self.result_list:
            for name in ("stat_total", "stat_succeeded", "stat_p95_ms", "stat_test_sends"):
                setattr(endpoint, name, getattr(stats[endpoint.pk], name))


# ----------------------------------------------------------------------------- deliveries


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReplayPermission, ReadOnlyAdminMixin, FastChangeListMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "at",
        "endpoint",
        "event_type",
        "webhook_id",
        "attempt",
        "succeeded",
        "status_code",
        "latency_ms",
    )
    list_filter = ("succeeded", "event_type")
    list_select_related = ("endpoint",)
    search_fields = ("=webhook_id",)
    ordering = ("-id",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ("replay",)

    @admin.action(description="Replay these messages", permissions=["replay"])
    def replay(self, request, queryset):
        ids = set(queryset.exclude(message_id__isnull=True).values_list("message_id", flat=True))
        count = relay.outbox_replay(ids=ids, actor=Actor.from_request(request))
        self.message_user(request, f"{count} message(s) will be sent again.")
        _warn_overtaken(self, request, ids)


# ----------------------------------------------------------------------------- sync events


class _ChoicesFilter(admin.SimpleListFilter):
    """A filter whose choices come from our registries, not from a DISTINCT over a big table."""

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class SyncProviderFilter(_ChoicesFilter):
    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        from integrations.destinations import destinations
        from integrations.inbound import EventInput

        names = list(EventInput().fields["source"].choices)
        names += [d.name for d in destinations() if d.name != "webhook"]
        names += [f"webhook:{pk}" for pk in WebhookEndpoint.objects.order_by("pk").values_list("pk", flat=True)[:100]]
        return [(name, name) for name in names]


class SyncEventTypeFilter(_ChoicesFilter):
    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request, model_admin):
        from integrations.inbound import EVENT_TYPES as INBOUND_TYPES

        return [(name, name) for name in sorted({*INBOUND_TYPES, *TOPIC_EVENT_TYPES})]


@admin.register(SyncEvent)
class SyncEventAdmin(_ReplayPermission, ReadOnlyAdminMixin, FastChangeListMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "direction",
        "provider",
        "event_type",
        "object_type",
        "object_id",
        "external_id",
        "status",
        "attempts",
        "last_error",
        "outbox_message_id",
    )
    # Index-served both ways; the other columns are shared by millions of rows or in no index.
    sortable_by = ("id", "created_at", "object_id")
    list_filter = (
        "direction",
        SyncProviderFilter,
        "status",
        SyncEventTypeFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("=object_id", "=external_id", "=payload_digest")
    search_normalizers = {"payload_digest": lambda term: term.lower() if _HEX_DIGEST.fullmatch(term) else None}
    search_help_text = "Object id, external id or payload digest (exact)."
    ordering = ("-id",)
    actions = ("retry",)
    readonly_fields = [f.name for f in SyncEvent._meta.fields]

    @admin.action(description="Retry: replay outbound deliveries", permissions=["replay"])
    def retry(self, request, queryset):
        counts = sync.sync_events_retry(ids=queryset.values_list("pk", flat=True), actor=Actor.from_request(request))
        if counts["replayed"]:
            self.message_user(request, f"{counts['replayed']} outbox row(s) will be sent again.", messages.SUCCESS)
            _warn_overtaken(self, request, overtaken=counts["overtaken"])
        if counts["missing"]:
            self.message_user(
                request,
                f"{counts['missing']} outbound event(s) not replayed: their outbox row was purged.",
                messages.WARNING,
            )
        if counts["inbound"]:
            self.message_user(
                request,
                f"{counts['inbound']} inbound event(s) left unchanged: the sync log keeps a digest, not the "
                "payload. An event that failed when applied can be applied again from Inbound events; one "
                "refused at the door was never accepted, and only its sender can send it again.",
                messages.WARNING,
            )


# ----------------------------------------------------------------------------- the inbox


class InboundEventTypeFilter(_ChoicesFilter):
    title = "event type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        from integrations.inbound import EVENT_TYPES as INBOUND_TYPES

        return [(name, name) for name in sorted(INBOUND_TYPES)]


# The inbox rows that may still name their user (applied rows keep no names), each set with a
# partial index of its own: a search term is looked for in these only, one OR branch per set.
_NAMED_ROWS = (Q(status=InboundEvent.Status.PENDING), Q(status=InboundEvent.Status.FAILED), INBOX_APPLIED_NAMED)


@admin.register(InboundEvent)
class InboundEventAdmin(ReadOnlyAdminMixin, PhiAdminMixin, FastChangeListMixin, ExactSearchMixin, admin.ModelAdmin):
    """Events the API queued: how each ended, and "apply again" for failed ones. A queued or
    failed event's payload may carry medical fields: PHI staff only, and each view is audited."""

    phi_fields = ("payload",)

    list_display = ("id", "received_at", "type", "route", "owner", "status", "applied_at", "errors")
    sortable_by = ("id",)  # the other columns are shared by many rows or in no index of their own
    list_filter = ("status", InboundEventTypeFilter, "route", ("received_at", admin.DateFieldListFilter))
    search_fields = ("=id", "=key", "=user_external_id", "=user_email")
    search_normalizers = {"user_email": str.lower}  # stored normalized (contacts.services.normalize_email)
    search_help_text = (
        "Inbox id, Idempotency-Key (batch: event:<id>), or app user id or email of a queued or failed event "
        "(exact, an email in any case; applied events keep no names)."
    )
    ordering = ("-id",)
    actions = ("apply_again",)
    readonly_fields = [f.name for f in InboundEvent._meta.fields]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    def get_search_results(self, request, queryset, search_term):
        """ExactSearchMixin's exact matches, each read through an index: the id; the key, unique
        per owner (inbound_event_key_uniq leads with the owner: each owner there is is named, a
        skip scan of that index); a user id or email among the rows that may still name their
        user, one OR branch per set of them (pending, failed, applied and named), each read
        through its partial index."""
        term = search_term.strip()
        if not term:
            return queryset, False
        matches = []
        if (pk := self._search_value("id", term)) is not None:
            matches.append(Q(pk=pk))
        if (key := self._search_value("key", term)) is not None:
            matches.append(Q(owner__in=distinct_values(InboundEvent, "owner", limit=None), key=key))
        names = [
            Q(**{field: value})
            for field in ("user_external_id", "user_email")
            if (value := self._search_value(field, term)) is not None
        ]
        if names:
            matches += [rows & reduce(operator.or_, names) for rows in _NAMED_ROWS]
        return (queryset.filter(reduce(operator.or_, matches)) if matches else queryset.none()), False

    @admin.display(description="errors")
    def errors(self, obj):
        if obj.status != InboundEvent.Status.FAILED or not obj.result:
            return ""
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in obj.result.get("errors", {}).items())[:200]

    @admin.action(description="Apply again (failed events)", permissions=["apply_again"])
    def apply_again(self, request, queryset):
        count = inbox.inbox_retry(ids=queryset.values_list("pk", flat=True), actor=Actor.from_request(request))
        self.message_user(request, f"{count} failed event(s) queued to be applied again.", messages.SUCCESS)

    def has_apply_again_permission(self, request):
        return request.user.has_perm("integrations.change_inboundevent")
