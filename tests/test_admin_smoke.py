"""Every ModelAdmin of every admin site, walked with a row in each model: the changelist, its
searches, filters and sort orders, the add, change, delete and history pages, and the first
POST of each action, as a superuser and as staff who may only view (no compliance.view_phi).
No page answers 500, and the viewer never sees a medical value planted in the data.

The rows are built once per module (in a transaction rolled back at the end) and every request
runs in a savepoint rolled back after it, so an action cannot change what the next page sees.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl

import pytest
from django.contrib.admin import SimpleListFilter, helpers
from django.contrib.admin.sites import all_sites
from django.contrib.admin.templatetags.admin_list import result_headers
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

ROLES = ("superuser", "viewer")
# A word, an email, a number, and what a pasted or hostile term may hold: a NUL and non-ASCII.
SEARCH_TERMS = ("smith", "pat@example.com", "42", "pa\x00t ünïcødé 💊 ß")
PHI_MARK = "phismokemark"


def _registered() -> dict[str, tuple]:
    """Every (site, model, ModelAdmin), keyed "<site>:<app_label.model_name>"."""
    found = {}
    for site in all_sites:
        for model, model_admin in site._registry.items():
            found[f"{site.name}:{model._meta.label_lower}"] = (site, model, model_admin)
    return dict(sorted(found.items()))


REGISTERED = _registered()


def _phi(field: str) -> str:
    return f"{PHI_MARK}{field}"


# ----------------------------------------------------------------------------- the rows


def _build(receiver_url: str) -> dict:
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django.contrib.auth import get_user_model
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from compliance import consent, gdpr
    from compliance.breakglass import break_glass_request
    from compliance.notices import admin_notice_post
    from compliance.suppression import suppression_add
    from contacts import services as contacts
    from contacts.models import CustomFieldDefinition, LifecycleRule, LifecycleSettings
    from contacts.tests.factories import ContactFactory
    from crm_platform.actor import Actor
    from crm_platform.models import OutboxMessage, StaffProfile
    from crm_platform.services import api_key_create
    from integrations import services as integrations
    from integrations import sync
    from integrations.inbound import event_parse
    from integrations.inbox import Entry, inbox_accept
    from leads import services as leads
    from leads.models import LeadAssignmentRule, StageAutomation

    actor = Actor.system("smoke")
    users = get_user_model().objects
    root = users.create_superuser(username="root", email="root@example.com", password="a-long-test-password")
    viewer = users.create_user(username="viewer", password="a-long-test-password", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__startswith="view_").exclude(
            content_type__app_label="compliance", codename="view_phi"
        )
    )
    owner = users.create_user(
        username="owner", email="owner@example.com", password="a-long-test-password", is_staff=True
    )
    StaffProfile.objects.get_or_create(user=owner)
    Group.objects.get_or_create(name="smoke testers")

    company, _ = contacts.company_upsert(name="Smith Health", domain="smith.example", actor=actor)
    contact = ContactFactory(
        email="pat@example.com", external_id="app-4242", first_name="Pat", last_name="Smith", company=company
    )
    other = ContactFactory(email="sam@example.com", first_name="Sam", last_name="Smith")
    erased = ContactFactory(email="gone@example.com")
    contacts.activity_record(contact=contact, type="lab_result", actor=actor, properties={"result": _phi("properties")})
    contacts.note_create(contact=contact, body=_phi("notebody"), actor=actor, author=owner)
    contacts.ticket_create(contact=contact, subject="Follow-up", body=_phi("ticketbody"), actor=actor, owner=owner)
    contacts.order_record(contact=contact, amount="42", actor=actor, items=[{"sku": _phi("items")}])
    contacts.subscription_start(contact=contact, plan=_phi("plan"), actor=actor, amount="9")
    CustomFieldDefinition.objects.create(key="goal", label="Goal", type="text")
    if not LifecycleRule.objects.exists():
        LifecycleRule.objects.create(event_type="signed_up", to_stage="signed_up")
    if not LifecycleSettings.objects.exists():
        LifecycleSettings.objects.create()

    leads.lead_capture(
        actor=actor,
        source="assessment",
        email=contact.email,
        assessment={"answer": _phi("assessment")},
        persona=_phi("persona"),
    )
    deal = leads.deal_create(actor=actor, name="Pat - plan", amount=42, contact=contact, plan=_phi("dealplan"))
    StageAutomation.objects.get_or_create(stage=deal.stage, action=StageAutomation.Action.values[0])
    if not LeadAssignmentRule.objects.exists():
        LeadAssignmentRule.objects.create(name="everyone")
    leads.clv_settings_get()

    consent.consent_grant(contact=contact, purpose="marketing_email", source="signup form", actor=actor)
    consent.restriction_set(contact=other, reason="asked us to pause", actor=actor)
    gdpr.legal_hold_place(contact=other, reason="litigation 42", actor=actor, user=root)
    suppression_add(actor=actor, email="blocked@example.com", phone="+14155550100")
    bundle = gdpr.export_request(contact=contact, actor=actor)
    gdpr.export_build(bundle_id=str(bundle.pk), actor=actor)
    gdpr.export_request(contact=other, actor=actor)  # one left pending
    gdpr.contact_erase(contact_id=erased.pk, actor=actor)
    break_glass_request(user=owner, contact=contact, reason=f"Covering the on-call coach {_phi('reason')}", actor=actor)
    admin_notice_post(source="smoke", title="Something to look at", body="Contact 42.")
    admin_notice_post(source="smoke", title="For PHI staff", permission="compliance.view_phi")

    api_key_create(name="Partner app", scopes=["contacts:read"], actor=actor, created_by=root)
    endpoint, _ = integrations.webhook_endpoint_create(url=receiver_url, description="Smith's hook", actor=actor)
    integrations.webhook_endpoint_test(endpoint=endpoint, actor=actor)
    OutboxMessage.objects.create(
        topic="contact.updated",
        object_type="contacts.contact",
        object_id=str(contact.pk),
        destination=f"webhook:{endpoint.pk}",
        status=OutboxMessage.Status.FAILED,
        payload={"id": contact.pk},
    )
    sync.sync_events_record_outbound(OutboxMessage.objects.all())
    sync.sync_event_record(
        sync.inbound_row(
            provider="app",
            event_type="signed_up",
            payload={"email": contact.email},
            status="applied",
            object_id=contact.pk,
            external_id="app-4242",
        )
    )
    event = event_parse({"type": "custom", "user": {"external_id": "app-4242"}, "properties": {"x": _phi("payload")}})
    inbox_accept(owner="key:0", route="event", actor=actor, entries=[Entry("smoke-1", "h", event)])

    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    CrontabSchedule.objects.create(minute="0", hour="3")
    SolarSchedule.objects.create(event="sunrise", latitude="48.85", longitude="2.35")
    ClockedSchedule.objects.create(clocked_time=timezone.now() + dt.timedelta(days=1))
    PeriodicTask.objects.create(name="smoke job", task="crm_platform.tasks.nothing", interval=every_minute)
    attempt = {"user_agent": "curl", "ip_address": "10.0.0.1", "username": "mallory", "http_accept": "*/*"}
    AccessAttempt.objects.create(**attempt, path_info="/admin/login/", failures_since_start=3)
    AccessLog.objects.create(**attempt, path_info="/admin/login/")
    AccessFailureLog.objects.create(**attempt, path_info="/admin/login/", locked_out=True)
    TOTPDevice.objects.create(user=root, name="phone", confirmed=True)

    return {"root": root, "viewer": viewer, "contact": contact}


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    overrides = {
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": True,
        "WEBHOOK_TIMEOUT_SECONDS": 2,
        "WEBHOOK_RESOLVER": "tests.fakes.dns.resolve",
    }
    with WebhookReceiver() as receiver, override_settings(**overrides), django_db_blocker.unblock():
        with transaction.atomic():
            yield _build(receiver.url)
            transaction.set_rollback(True)


def test_every_registered_model_has_a_row(world):
    empty = [key for key, (_, model, _) in REGISTERED.items() if not model._default_manager.exists()]
    assert not empty, f"give these a row in _build(): {empty}"


# ----------------------------------------------------------------------------- the walk


class Walk:
    """Requests as one user, each in a savepoint rolled back after it; collects what failed."""

    def __init__(self, user, *, must_hide_phi: bool):
        self.client = Client()
        self.client.force_login(user)
        self.must_hide_phi = must_hide_phi
        self.failures: list[str] = []
        self.saw_phi = False  # a page showed a planted medical value

    def get(self, url, data=None, *, expect=(200,)):
        return self._send("get", url, data, expect)

    def post(self, url, data, *, expect=(200, 302)):
        return self._send("post", url, data, expect)

    def _send(self, method, url, data, expect):
        where = f"{method.upper()} {url} {data or ''}"
        try:
            with transaction.atomic():
                response = getattr(self.client, method)(url, data)
                body = b"".join(response.streaming_content) if response.streaming else response.content
                transaction.set_rollback(True)
        except Exception as exc:  # the walk reports every failure, not only the first
            self.failures.append(f"{where}: {type(exc).__name__}: {exc}")
            return None
        if response.status_code not in expect:
            self.failures.append(f"{where}: {response.status_code}, expected {expect}")
        if PHI_MARK.encode() in body:
            self.saw_phi = True
            if self.must_hide_phi:
                self.failures.append(f"{where}: shows a medical value")
        return response


def _filter_queries(changelist) -> list[dict]:
    """Choices of each list filter as its links give them: "All" (the plain page) left out,
    and of a longer list the first and the last (for a date filter, its "No date" or "Has
    date" branch), the others taking the first one's path with another value. Then each
    SimpleListFilter (code of ours or of an app, where Django's FieldListFilters check their
    values themselves) given a value no link offers, as an edited or stale URL may: "²" is a
    digit to str.isdigit(), not to int()."""
    queries = []
    for spec in changelist.filter_specs:
        choices = [dict(_query(choice["query_string"])) for choice in spec.choices(changelist)][1:]
        queries += choices if len(choices) <= 2 else [choices[0], choices[-1]]
        if isinstance(spec, SimpleListFilter):
            queries.append({spec.parameter_name: "²"})
    return queries


def _sort_queries(changelist) -> list[dict]:
    """Every sortable column at once (`o` lists their indexes in list_display; each is an
    ORDER BY term of the query), ascending, then descending."""
    sortable = [str(index) for index, header in enumerate(result_headers(changelist)) if header["sortable"]]
    if not sortable:
        return []
    return [{"o": ".".join(sortable)}, {"o": ".".join(f"-{index}" for index in sortable)}]


def _query(query_string: str):
    return parse_qsl(query_string.lstrip("?"), keep_blank_values=True)


def _request(user):
    request = RequestFactory().get("/")
    request.user = user
    return request


def _phi_shown_models() -> set[str]:
    """Models with a registered medical field that some admin page shows to PHI staff."""
    from compliance.registry import PHI, personal_fields, registered_models

    shown_nowhere = {"compliance.exportbundle"}  # its PHI is the encrypted bundle, never shown
    return {label for label in registered_models() if PHI in personal_fields(label).values()} - shown_nowhere


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("key", REGISTERED)
def test_admin_pages_and_actions_never_answer_500(world, key, role):
    """The superuser walks the changelist's searches, filter choices and sort orders, the
    add, change, history and delete pages and the first POST of every action (an action
    asking a question answers its page; none is confirmed). The viewer gets the same pages
    (with one search) and every action's POST, and is refused (403) or sent back (302) where
    it may not go, never shown a medical value, which the superuser does see."""
    site, model, model_admin = REGISTERED[key]
    superuser = role == "superuser"
    user = world["root"] if superuser else world["viewer"]
    request = _request(user)
    walk = Walk(user, must_hide_phi=not superuser)
    info = f"{site.name}:{model._meta.app_label}_{model._meta.model_name}"
    if model._meta.label_lower == "contacts.contact":
        obj = world["contact"]  # the one with a timeline, a lead, a deal
    else:
        obj = model_admin.get_queryset(request).order_by("pk").first()  # a ModelAdmin may hide rows

    changelist_url = reverse(f"{info}_changelist")
    response = walk.get(changelist_url)
    assert response is not None and response.status_code == 200, walk.failures
    if superuser:
        changelist = response.context_data["cl"]
        queries = [{"_facets": "1"}, *_filter_queries(changelist), *_sort_queries(changelist)]
        queries += [{"q": term} for term in SEARCH_TERMS if model_admin.search_fields]
    else:
        queries = [{"q": "pat@example.com"}] if model_admin.search_fields else []
    for query in queries:
        # 302: a value a filter refuses (?e=1); 400: a NUL, refused before any view.
        nul = any("\x00" in str(value) for value in query.values())
        walk.get(changelist_url, query, expect=(400,) if nul else (200, 302))

    walk.get(reverse(f"{info}_add"), expect=(200,) if model_admin.has_add_permission(request) else (403,))
    walk.get(reverse(f"{info}_change", args=[obj.pk]))
    walk.get(reverse(f"{info}_history", args=[obj.pk]))
    deletable = model_admin.has_delete_permission(request, obj)
    walk.get(reverse(f"{info}_delete", args=[obj.pk]), expect=(200,) if deletable else (403,))

    root_request = _request(world["root"])
    for action in model_admin.get_actions(root_request):  # the viewer tries the ones it lacks too
        walk.post(changelist_url, {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(obj.pk)], "index": "0"})

    assert not walk.failures, "\n".join(walk.failures)
    if superuser and model._meta.label_lower in _phi_shown_models():
        assert walk.saw_phi, "no page showed the planted medical value: the viewer's check would prove nothing"
