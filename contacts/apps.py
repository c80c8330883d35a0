from django.apps import AppConfig

MODELS = ("contact", "company", "activity", "note", "ticket", "order", "subscription", "externalref")
EDITABLE = ("contact", "company", "note", "ticket")
CONFIG = [
    f"contacts.{action}_{model}"
    for model in ("customfielddefinition", "lifecyclerule", "lifecyclesettings")
    for action in ("view", "add", "change")
]


class ContactsConfig(AppConfig):
    """Contacts, companies, the activity timeline, notes, tickets, orders and subscriptions."""

    name = "contacts"

    def ready(self):
        from compliance.registry import PHI, PII, register_personal_fields
        from contacts.services import register_merge_handler
        from crm_platform.admin_tools import register_dashboard_panel
        from crm_platform.api.scopes import set_staff_permission
        from crm_platform.roles import ADMINISTRATOR, COACH, COMPLIANCE_OFFICER, MARKETING, SALES
        from crm_platform.roles import register_role_permissions as grant

        set_staff_permission("contacts:read", "contacts.view_contact")
        set_staff_permission("contacts:write", "contacts.change_contact")
        set_staff_permission("tickets:read", "contacts.view_ticket")
        set_staff_permission("tickets:write", "contacts.change_ticket")
        view = [f"contacts.view_{m}" for m in MODELS]
        edit = [f"contacts.{action}_{m}" for m in EDITABLE for action in ("add", "change")]
        grant(ADMINISTRATOR, [*view, *edit, "contacts.merge_contact", *CONFIG])
        grant(SALES, [*view, *edit, "contacts.merge_contact"])
        grant(MARKETING, [*view, "contacts.change_contact"])
        grant(COACH, [*view, "contacts.add_note", "contacts.add_ticket", "contacts.change_ticket"])
        grant(COMPLIANCE_OFFICER, view)

        from contacts.defaults import ensure_defaults
        from crm_platform.defaults import register_defaults

        register_defaults(ensure_defaults)
        register_dashboard_panel("Contacts by lifecycle stage", _lifecycle_panel, permission="contacts.view_contact")
        register_personal_fields(
            "contacts.Contact",
            {
                "email": PII,
                "external_id": PII,
                "first_name": PII,
                "last_name": PII,
                "phone": PII,
                "date_of_birth": PII,
                "address_line1": PII,
                "address_line2": PII,
                "city": PII,
                "region": PII,
                "postal_code": PII,
                "properties": PII,
            },
        )
        register_personal_fields("contacts.Activity", {"properties": PHI})
        register_personal_fields("contacts.Note", {"body": PHI})
        register_personal_fields("contacts.Ticket", {"subject": PII, "body": PHI})
        register_personal_fields("contacts.Order", {"items": PHI})
        register_personal_fields("contacts.Subscription", {"plan": PHI})
        # Staff type the reason of a manual stage move: free text that may name the person.
        register_personal_fields("contacts.LifecycleTransition", {"reason": PII})

        # GDPR: which rows are about the person, and how erasure and export treat them
        # (compliance/README.md). Children before the contact row itself, which goes last.
        from compliance.consent import consents_merge
        from compliance.retention import register_retention
        from compliance.subjects import register_subject_data, register_subject_model
        from contacts import privacy
        from contacts.services import contact_payload

        register_subject_model(
            "contacts.Contact",
            email="email",
            phone="phone",
            external_id="external_id",
            merged_into="merged_into",
            refs=privacy.provider_refs,
            payload=contact_payload,
        )
        # An object's provider ids (ExternalRef, a generic relation no CASCADE reaches) go in
        # the same step as the object, so the order of these registrations does not matter.
        for model in privacy.REF_MODELS:
            register_subject_data(model._meta.label, erase=privacy.erase_with_refs(model))
        register_subject_data("contacts.LifecycleTransition")
        register_subject_data(
            "contacts.ExternalRef",
            contact_path="object_id",
            erase=privacy.erase_external_refs,
            export=privacy.export_external_refs,
        )
        register_subject_data(
            "contacts.ContactDuplicateDismissal",
            contact_path="first",
            erase=privacy.erase_duplicate_dismissals,
            export=False,
        )
        register_retention("contacts.activity", date_field="occurred_at")
        # Consents, restrictions, holds and export bundles follow a merge to the survivor.
        register_merge_handler(consents_merge)


def _lifecycle_panel(request):
    from contacts.selectors import lifecycle_stage_counts
    from crm_platform.charts import bar_chart

    return bar_chart(lifecycle_stage_counts())
