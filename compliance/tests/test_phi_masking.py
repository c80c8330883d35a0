"""Every field registered PHI stays masked in the admin and the API for whoever may not see it.

Walks the registry: each registered PHI field gets a row holding a unique marker value; then
every admin page (changelists, change and history pages of every registered ModelAdmin, their
extra pages) and every GET route under /api/ is fetched as staff without compliance.view_phi,
as an API key with every scope but phi:read, and as that staff member through the API. No
response may contain a marker. Staff with view_phi and a key with phi:read then see each
marker somewhere (unless the field is not shown by design: SHOWN_NOWHERE says why).

A new PHI field without a row here fails `test_every_phi_field_has_a_marker_row`: add one.
"""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from compliance.registry import PHI, personal_fields, registered_models
from contacts import services
from contacts.tests.factories import ContactFactory
from crm_platform.api.scopes import PHI_READ, SCOPES

pytestmark = pytest.mark.django_db


def marker(label: str, field: str) -> str:
    # Letters and digits only: survives HTML escaping, JSON and CSV unchanged.
    return "phimarker" + re.sub(r"[^a-z0-9]", "", f"{label}{field}".lower())


def _rows(system_actor, requester) -> dict[str, object]:
    """One row per model with PHI fields, each PHI field holding its marker, made through the
    services that production uses."""
    from compliance.breakglass import break_glass_request
    from leads.services import deal_create, lead_capture

    contact = ContactFactory(email="pat@example.com", external_id="app-4242")
    m = marker
    rows = {"contacts.contact": contact}
    rows["contacts.activity"] = services.activity_record(
        contact=contact,
        type="lab_result",
        actor=system_actor,
        properties={"result": m("contacts.activity", "properties")},
        apply_lifecycle=False,
    )
    rows["contacts.note"] = services.note_create(contact=contact, body=m("contacts.note", "body"), actor=system_actor)
    rows["contacts.ticket"] = services.ticket_create(
        contact=contact, subject="Follow-up", body=m("contacts.ticket", "body"), actor=system_actor
    )
    rows["contacts.order"], _ = services.order_record(
        contact=contact, amount="20", actor=system_actor, items=[{"sku": m("contacts.order", "items")}]
    )
    rows["contacts.subscription"], _ = services.subscription_start(
        contact=contact, plan=m("contacts.subscription", "plan"), actor=system_actor
    )
    rows["leads.lead"] = lead_capture(
        actor=system_actor,
        source="assessment",
        email=contact.email,
        assessment={"answer": m("leads.lead", "assessment")},
        persona=m("leads.lead", "persona"),
    )
    rows["leads.deal"] = deal_create(
        actor=system_actor, name="Pat - plan", amount=10, contact=contact, plan=m("leads.deal", "plan")
    )
    # Another staff member's grant: its reason (PHI) must not show to the staff under test.
    rows["compliance.breakglassgrant"] = break_glass_request(
        user=requester,
        contact=contact,
        reason=f"Covering the on-call coach {m('compliance.breakglassgrant', 'reason')}",
        actor=system_actor,
    )
    # An inbound event still queued in the inbox: its payload holds the event's properties.
    from integrations.inbound import event_parse
    from integrations.inbox import Entry, inbox_accept
    from integrations.models import InboundEvent

    event = event_parse(
        {
            "type": "custom",
            "user": {"external_id": "app-4242"},
            "properties": {"x": m("integrations.inboundevent", "payload")},
        }
    )
    [queued] = inbox_accept(owner="key:0", route="event", actor=system_actor, entries=[Entry("k", "h", event)])
    rows["integrations.inboundevent"] = InboundEvent.objects.get(pk=queued.id)
    return rows


# PHI fields no admin page or API response shows even to those who may see PHI, and why.
SHOWN_NOWHERE = {
    ("compliance.exportbundle", "ciphertext"): "the encrypted bundle goes only to the data subject's signed link",
}
NOT_IN_API = {
    ("compliance.breakglassgrant", "reason"): "break-glass grants are reviewed in the admin only",
    ("integrations.inboundevent", "payload"): "the sender has its event; GET /api/v1/events/{id} tells how it ended",
}
# Apps whose admin pages are walked: ours, and auth (users and groups).
ADMIN_APPS = {"auth", "crm_platform", "compliance", "contacts", "leads", "campaigns", "scheduling", "coaching"}
ADMIN_APPS |= {"integrations"}
# GET routes not walked, and why.
SKIPPED_ROUTES = {
    "api/v1/exports/download/<str:token>": "the signed link delivers the bundle to the data subject by design",
    "api/schema/": "the OpenAPI document (no data)",
    "api/docs/": "Swagger UI (no data)",
    "api/redoc/": "Redoc (no data)",
}


def _phi_fields() -> list[tuple[str, str]]:
    return [
        (label, name)
        for label in registered_models()
        for name, cls in personal_fields(label).items()
        if cls == PHI and not label.startswith("auth.")
    ]


@pytest.fixture
def people(django_user_model):
    every = Permission.objects.all()
    plain = django_user_model.objects.create_user(username="plain", password="a-long-pass-123", is_staff=True)
    plain.user_permissions.set(every.exclude(content_type__app_label="compliance", codename="view_phi"))
    medical = django_user_model.objects.create_user(username="medic", password="a-long-pass-123", is_staff=True)
    medical.user_permissions.set(every)
    requester = django_user_model.objects.create_user(username="cover", password="a-long-pass-123", is_staff=True)
    return plain, medical, requester


@pytest.fixture
def rows(people, system_actor):
    return _rows(system_actor, people[2])


def test_every_phi_field_has_a_marker_row(rows):
    for label, field in _phi_fields():
        assert label in rows or (label, field) in SHOWN_NOWHERE, (
            f"{label}.{field} is registered PHI: give it a marker row in _rows() (or argue SHOWN_NOWHERE)"
        )


STANDARD_VIEWS = {"changelist", "add", "change", "history", "delete"}


def _admin_urls(rows) -> list[str]:
    contact = rows["contacts.contact"]
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ADMIN_APPS:
            continue  # third-party admins (otp devices, axes, beat) hold no PHI of ours
        info = f"{model._meta.app_label}_{model._meta.model_name}"
        urls.append(reverse(f"admin:{info}_changelist"))
        for pk in model._default_manager.order_by("-pk").values_list("pk", flat=True)[:30]:
            urls.append(reverse(f"admin:{info}_change", args=[pk]))
            urls.append(reverse(f"admin:{info}_history", args=[pk]))
        for pattern in model_admin.get_urls():
            name = getattr(pattern, "name", None) or ""
            standard = name.startswith(f"{info}_") and name.rsplit("_", 1)[1] in STANDARD_VIEWS
            if not isinstance(pattern, URLPattern) or standard:
                continue
            if "download" in name or not name:
                continue  # signed links (see SKIPPED_ROUTES) and Django's redirect shims
            converters = pattern.pattern.converters
            if not converters:
                urls.append(reverse(f"admin:{name}"))
            elif len(converters) == 1:
                urls.append(reverse(f"admin:{name}", args=[contact.pk]))
    return urls


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        else:
            yield prefix + str(p.pattern), p


def _api_urls(rows) -> list[str]:
    contact = rows["contacts.contact"]
    ints = sorted({obj.pk for obj in rows.values() if isinstance(obj.pk, int)})
    values = {"email": [contact.email], "user_id": [contact.external_id], "name": ["lead_to_customer"]}
    urls = []
    for route, _ in _walk(get_resolver().url_patterns):
        if not route.startswith("api/") or route in SKIPPED_ROUTES:
            continue
        urls_for_route = [route]
        for param, converter in re.findall(r"<(?:(\w+):)?(\w+)>", route):
            expanded = []
            choices = ints if param == "int" else values.get(converter, ["x"])
            for url in urls_for_route:
                expanded += [re.sub(rf"<(?:\w+:)?{converter}>", str(v), url, count=1) for v in choices]
            urls_for_route = expanded
        urls += ["/" + u for u in urls_for_route]
    return urls


def _fetch(client, urls) -> str:
    pages = []
    for url in urls:
        response = client.get(url)
        assert response.status_code < 500, f"{url}: {response.status_code}"
        body = b"".join(response.streaming_content) if response.streaming else response.content
        pages.append(f"\n=== {url}\n" + body.decode(errors="replace"))
    return "".join(pages)


def _leaks(text: str, fields) -> list[str]:
    found = []
    for label, field in fields:
        if marker(label, field) in text:
            where = text[: text.index(marker(label, field))].rsplit("\n=== ", 1)[-1].split("\n", 1)[0]
            found.append(f"{label}.{field} on {where}")
    return found


def test_admin_masks_every_phi_field_without_view_phi_and_shows_it_with(client, people, rows):
    plain, medical, _ = people
    urls = _admin_urls(rows)
    client.force_login(plain)
    assert not _leaks(_fetch(client, urls), _phi_fields())
    client.force_login(medical)
    seen = _fetch(client, urls)
    unseen = [f for f in _phi_fields() if f not in SHOWN_NOWHERE and marker(*f) not in seen]
    assert not unseen, f"staff with view_phi never see {unseen} in the admin"


def test_api_masks_every_phi_field_without_phi_read_and_shows_it_with(key_client, client, people, rows):
    urls = _api_urls(rows)
    everything = [s for s in SCOPES if s != PHI_READ]
    plain_key = key_client(everything, name="no phi")
    assert not _leaks(_fetch(plain_key, urls), _phi_fields())
    client.force_login(people[0])  # staff without view_phi, through the API with a session
    assert not _leaks(_fetch(client, urls), _phi_fields())
    medical_key = key_client([*everything, PHI_READ], name="phi")
    seen = _fetch(medical_key, urls)
    hidden = SHOWN_NOWHERE.keys() | NOT_IN_API.keys()
    unseen = [f for f in _phi_fields() if f not in hidden and marker(*f) not in seen]
    assert not unseen, f"a key with phi:read never sees {unseen} in the API"


def test_staff_who_may_add_a_note_but_not_view_phi_write_it_and_never_read_one(client, django_user_model):
    """A Sales user (add note, no view PHI) got a note form without its body, and saving it was a
    500; the API lets them write one. The new object's form keeps its PHI field (it discloses
    nothing); an existing note's page still hides the body. Found by a review."""
    from django.contrib.auth.models import Group

    from contacts.models import Note
    from contacts.tests.factories import ContactFactory

    staff = django_user_model.objects.create_user(username="rep", password="a-long-test-password", is_staff=True)
    staff.groups.add(Group.objects.get(name="Sales"))
    client.force_login(staff)
    contact = ContactFactory(email="note.writer@example.com")
    assert b'name="body"' in client.get("/admin/contacts/note/add/").content
    response = client.post("/admin/contacts/note/add/", {"contact": contact.pk, "body": "MARKER-NOTE wants a refill"})
    assert response.status_code == 302, response.content[:500]
    note = Note.objects.get(contact=contact)
    assert note.body == "MARKER-NOTE wants a refill" and note.author == staff
    page = client.get(f"/admin/contacts/note/{note.pk}/change/").content.decode()
    assert "MARKER-NOTE" not in page and 'name="body"' not in page
