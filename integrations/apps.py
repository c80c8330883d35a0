from django.apps import AppConfig

# What webhook subscribers may receive (top-level payload fields). Medical fields (plan, persona,
# assessment, items, ...) are not here: an endpoint gets one only when flagged may_receive_phi
# and the field is on its own PHI list.
WEBHOOK_FIELDS = (
    "id",
    "contact",
    "company",
    "owner",
    "email",
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "lifecycle_stage",
    "engagement_tier",
    "lead_score",
    "is_paid",
    "onboarding_status",
    "tags",
    "changed",
    "survivor",
    "loser",
    "source",
    "status",
    "from",
    "to",
    "reused",
    "created_at",
    "name",
    "pipeline",
    "stage",
    "from_stage",
    "days_in_previous_stage",
    "won",
    "lost",
    "amount",
    "currency",
    "close_date",
    "priority",
    "occurred_at",
)


# Seed 000: the six Klaviyo profile properties, and the events (by name) that may reach it.
# "Prescription Ordered" / last_prescription_date reveal treatment: they are not here (DESIGN.md).
KLAVIYO_PROFILE_FIELDS = (
    "patient_id",
    "account_created_date",
    "paid",
    "onboarding_status",
    "last_login_date",
    "engagement_status",
)
KLAVIYO_EVENT_NAMES = ("Account Created", "Onboarding Completed", "User Logged In")


class IntegrationsConfig(AppConfig):
    """Inbound events, the outbox relay, provider adapters and outbound webhooks."""

    name = "integrations"

    def ready(self) -> None:
        from compliance.guard import register_allow_list
        from crm_platform.api.scopes import set_staff_permission
        from crm_platform.roles import ADMINISTRATOR
        from crm_platform.roles import register_role_permissions as grant
        from integrations.destinations import register_destination
        from integrations.webhooks import WebhookDestination

        register_destination(WebhookDestination())
        # Webhooks as a family may be BAA-covered; each endpoint's may_receive_phi flag and its
        # phi_fields decide (integrations/webhooks.py). Klaviyo never is (seed 000: no PHI).
        register_allow_list("webhook", WEBHOOK_FIELDS, baa_covered=True)
        register_allow_list("klaviyo", (*KLAVIYO_PROFILE_FIELDS, "event"), baa_covered=False)
        # Retention (settings.RETENTION_DAYS; the nightly compliance.retention_purge job): delivered
        # and routed outbox rows through the relay's own purge (the admin action uses it too; dead
        # and pending rows stay), webhook delivery logs, sync events.
        from django.db.models import Q

        from compliance.retention import register_retention
        from integrations import relay, services, sync
        from integrations.models import InboundEvent

        register_retention("crm_platform.outboxmessage", purge=relay.outbox_purge)
        register_retention("integrations.webhookdelivery", date_field="at")
        register_retention("integrations.syncevent", purge=sync.sync_events_purge)
        register_retention("integrations.webhookendpoint.previous_secret", purge=services.previous_secrets_forget)
        # The inbox's rows are its events' Idempotency-Key records: kept as long as those, unless queued.
        register_retention(
            "integrations.inboundevent", date_field="received_at", filter=~Q(status=InboundEvent.Status.PENDING)
        )
        # The inbox: whom an event names, and a queued or failed event's payload (its properties
        # may be medical: a food log, a treatment plan).
        from compliance.registry import PHI, PII, register_personal_fields

        # The app user ids too: pseudonymous, but personal (as contacts.Contact.external_id is).
        register_personal_fields(
            "integrations.InboundEvent", {"user_email": PII, "user_external_id": PII, "payload": PHI}
        )
        register_personal_fields("integrations.SyncEvent", {"external_id": PII})
        # GDPR erasure and export (Art. 15): the sync log's rows about the person (metadata, never
        # a payload) and the inbox's rows naming them (integrations/privacy.py).
        from compliance.subjects import register_subject_data
        from integrations import privacy

        register_subject_data(
            "integrations.SyncEvent",
            contact_path="object_id",
            erase=privacy.erase_sync_events,
            export=privacy.export_sync_events,
        )
        register_subject_data(
            "integrations.InboundEvent",
            contact_path="result__contact",
            erase=privacy.erase_inbound_events,
            export=privacy.export_inbound_events,
        )
        set_staff_permission("webhooks:read", "integrations.view_webhookendpoint")
        set_staff_permission("webhooks:write", "integrations.change_webhookendpoint")
        grant(
            ADMINISTRATOR,
            [
                *[f"integrations.{a}_webhookendpoint" for a in ("view", "add", "change")],
                "integrations.view_webhookdelivery",
                "integrations.view_syncevent",
                "integrations.view_inboundevent",
                "integrations.change_inboundevent",
                "crm_platform.view_outboxmessage",
                "crm_platform.change_outboxmessage",
            ],
        )
