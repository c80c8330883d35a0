"""Every field that looks personal is either registered (compliance.registry) or explicitly
declared not personal here, with the reason. A new model field named like personal data, or of
a personal type, fails this test until its app registers it in AppConfig.ready() or someone
argues here why it holds nothing about a person."""

from __future__ import annotations

import re

from django.apps import apps
from django.db import models
from django.test.utils import isolate_apps

from compliance.fields import EncryptedFieldMixin
from compliance.registry import is_personal

# Our apps, plus Django's user model (staff accounts are people too).
OWN_APPS = ("crm_platform", "compliance", "contacts", "leads", "campaigns", "scheduling", "coaching", "integrations")
EXTRA_MODELS = ("auth.user",)

# Names that suggest personal data: matched against each `_`-separated part of a field name
# and against the whole name.
PERSONAL_WORDS = {
    "email",
    "phone",
    "mobile",
    "name",
    "first_name",
    "last_name",
    "full_name",
    "username",
    "dob",
    "birth",
    "birthday",
    "date_of_birth",
    "address",
    "street",
    "city",
    "region",
    "postal",
    "zip",
    "ssn",
    "body",
    "note",
    "notes",
    "comment",
    "message",
    "condition",
    "conditions",
    "medication",
    "medications",
    "prescription",
    "prescriptions",
    "diagnosis",
    "diagnoses",
    "lab",
    "labs",
    "measurement",
    "measurements",
    "weight",
    "height",
    "bmi",
    "allergy",
    "allergies",
    "treatment",
    "symptom",
    "symptoms",
    "assessment",
    "persona",
    "plan",
    "goal",
    "goals",
    "ip",
    "ip_address",
    "user_agent",
    "external_id",
    "reason",
}
# JSON fields under these names carry whatever the caller sent: personal until argued otherwise.
JSON_NAMES = {"properties", "payload", "data", "items", "changes", "metadata", "extra", "response_body"}

# field -> why it holds nothing about a person. Keys are "app_label.model.field" (lowercase).
NOT_PERSONAL = {
    # Names of things, not of people.
    "contacts.company.name": "a company's name (a business, not a person)",
    "leads.pipeline.name": "a pipeline's name, configuration",
    "leads.stage.name": "a pipeline stage's name, configuration",
    "leads.leadassignmentrule.name": "an assignment rule's name, configuration",
    "leads.scoringrule.name": "a scoring rule's name, configuration",
    "crm_platform.apikey.name": "an API key's label, configuration",
    # Identifiers on the other side of an integration, of objects rather than people.
    "contacts.externalref.external_id": "a provider's id of one of our objects (HubSpot contact id...), "
    "deleted with the object on erasure (contacts/privacy.py: erase_with_refs, erase_external_refs)",
    "contacts.order.external_id": "the app's order id (an opaque number), not about the person",
    "contacts.subscription.external_id": "the app's subscription id (an opaque number)",
    "contacts.ticket.external_id": "the app's ticket id (an opaque number); the ticket's text is "
    "registered (subject, body)",
    # Machine payloads and records whose personal content is handled elsewhere.
    "crm_platform.outboxmessage.payload": "its medical fields are sealed in one Fernet token "
    "(crm_platform.outbox.outbox_seal); passes compliance.guard.guard_payload per destination before "
    "leaving; erasure deletes the rows about the person; retention purges delivered ones",
    "crm_platform.idempotencyrecord.response_body": "a stored API response, encrypted at rest, kept "
    "IDEMPOTENCY_TTL_DAYS; erasure deletes the records naming the person (found by their subjects)",
    "compliance.auditevent.changes": "audit_record keeps only non-personal fields' values (the registry)",
    "compliance.auditevent.ip": "the IP of the staff member or API client who acted, not of the "
    "data subject; kept as evidence for the audit retention period",
    "compliance.adminnotice.body": "system notices to staff: ids, times and (break-glass) the acting "
    "staff member's username, never patient data (compliance/breakglass.py writes ids only)",
    "compliance.suppression.reason": "a code ('erasure', 'unsubscribe'); the row identifies nobody (a keyed hash)",
    "compliance.suppression.lifted_reason": "why a suppression was lifted ('account_created' or a staff "
    "note) on a row that identifies nobody (only a keyed hash)",
    # Operational text and ids of our own machinery.
    "integrations.webhookendpoint.disabled_reason": "why delivery stopped (status codes, failure counts)",
    "integrations.webhookdelivery.message_id": "the id of the outbox row delivered",
    "integrations.webhookendpoint.previous_secret": "the signing secret before a rotation, kept (encrypted) "
    "only while it still signs beside the new one",
    "integrations.webhookendpoint.secret": "our own signing secret (encrypted at rest as a secret), "
    "not data about a person",
}


def _own_models():
    for model in apps.get_models(include_auto_created=False):
        if model._meta.app_label in OWN_APPS or model._meta.label_lower in EXTRA_MODELS:
            yield model


def _looks_personal(field: models.Field) -> str | None:
    name = field.name.lower()
    parts = set(re.split(r"_", name))
    if name in PERSONAL_WORDS or parts & PERSONAL_WORDS:
        return f"name {field.name!r}"
    if isinstance(field, models.EmailField | models.GenericIPAddressField):
        return f"type {type(field).__name__}"
    if isinstance(field, EncryptedFieldMixin):
        return "an encrypted field"
    if isinstance(field, models.JSONField) and name in JSON_NAMES:
        return f"a JSON field named {field.name!r}"
    return None


def test_every_field_that_looks_personal_is_registered_or_argued_not_personal():
    missing = []
    for model in _own_models():
        for field in model._meta.concrete_fields:
            if field.is_relation or field.primary_key:
                continue
            why = _looks_personal(field)
            key = f"{model._meta.label_lower}.{field.name}"
            if why and not is_personal(model._meta.label_lower, field.name) and key not in NOT_PERSONAL:
                missing.append(f"{key} ({why})")
    assert not missing, (
        "Fields that look personal are neither registered (register_personal_fields in the app's "
        "AppConfig.ready()) nor listed in NOT_PERSONAL with a reason:\n  " + "\n  ".join(sorted(missing))
    )


def test_the_allow_list_names_real_flagged_fields_that_are_not_also_registered():
    for key in NOT_PERSONAL:
        app_label, model_name, field_name = key.split(".")
        field = apps.get_model(app_label, model_name)._meta.get_field(field_name)  # gone: prune the entry
        assert _looks_personal(field), f"{key} does not look personal: no need to argue it here"
        assert not is_personal(f"{app_label}.{model_name}", field_name), f"{key} is registered: drop it here"


def test_every_registered_field_exists():
    from compliance.registry import personal_fields, registered_models

    for label in registered_models():
        model = apps.get_model(label)
        for name in personal_fields(label):
            model._meta.get_field(name)


# Registered PHI kept in plaintext on purpose, and why (compliance/README.md, "Field encryption").
PHI_NOT_ENCRYPTED = {
    "contacts.activity.properties": "the 5M-row event stream on the ingestion path; JSON conditions on "
    "event properties are expected (README: what is not encrypted, and why)",
    "compliance.exportbundle.ciphertext": "a BinaryField that already holds a compliance.crypto token",
    "integrations.inboundevent.payload": "the event's properties for the seconds until it is applied (cleared "
    "then; kept only on failed rows), on the ingestion hot path; the same data as contacts.activity.properties",
}


def test_every_phi_field_is_encrypted_at_rest_or_argued():
    from compliance.registry import PHI, personal_fields, registered_models

    plaintext = []
    for label in registered_models():
        model = apps.get_model(label)
        for name, cls in personal_fields(label).items():
            field = model._meta.get_field(name)
            if cls == PHI and not isinstance(field, EncryptedFieldMixin) and f"{label}.{name}" not in PHI_NOT_ENCRYPTED:
                plaintext.append(f"{label}.{name}")
    assert not plaintext, f"PHI stored in plaintext (use compliance.fields, or argue PHI_NOT_ENCRYPTED): {plaintext}"


@isolate_apps("compliance")
def test_the_detector_flags_names_and_types():
    class Visit(models.Model):
        diagnosis_code = models.CharField(max_length=10)
        client_addr = models.GenericIPAddressField()
        contact_address = models.EmailField()
        payload = models.JSONField()
        status = models.CharField(max_length=10)
        props = models.JSONField()

        class Meta:
            app_label = "compliance"

        def __str__(self):
            return self.status

    flagged = {f.name for f in Visit._meta.concrete_fields if not f.primary_key and _looks_personal(f)}
    assert flagged == {"diagnosis_code", "client_addr", "contact_address", "payload"}


def test_app_user_ids_are_personal_wherever_they_are_kept():
    """An app user id is pseudonymous but personal: the contact's, the inbox's and the sync log's."""
    for model, field in (
        ("contacts.contact", "external_id"),
        ("integrations.inboundevent", "user_external_id"),
        ("integrations.syncevent", "external_id"),
    ):
        assert is_personal(model, field), (model, field)
