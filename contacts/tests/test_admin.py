import base64
import json
import re

import pytest
import redis
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile

from compliance.models import AuditEvent
from contacts.models import Contact, ContactDuplicateDismissal, LifecycleTransition
from contacts.tasks import contacts_bulk_change
from contacts.tests.admin_forms import change_form_data
from contacts.tests.factories import ContactFactory
from crm_platform.celery import app as celery_app
from crm_platform.models import OutboxMessage
from integrations.tests.test_worker import own_broker  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db
LIST = "/admin/contacts/contact/"


def test_changelist_searches_by_email_name_and_phone(admin_client):
    ContactFactory(email="ann.lee@example.com", first_name="Ann", last_name="Lee", phone="+14155550123")
    ContactFactory(email="bob@example.com", first_name="Bob", last_name="Stone")
    for term in ("ann.lee@", "ann", "Ann Lee", "+1415555"):
        html = admin_client.get(LIST, {"q": term}).content.decode()
        assert "ann.lee@example.com" in html and "bob@example.com" not in html, term


def test_changelist_has_a_bounded_number_of_queries(admin_client, django_assert_max_num_queries):
    ContactFactory.create_batch(60)
    admin_client.get(LIST)
    with django_assert_max_num_queries(12):
        response = admin_client.get(LIST, {"lifecycle_stage__exact": "visitor"})
    assert response.status_code == 200


def test_owner_filter_given_a_value_that_is_no_user_id_lists_nobody(admin_client, admin_user):
    ContactFactory(owner=admin_user)
    for value in ("abc", "²"):  # an edited URL; "²" passes str.isdigit() but not int()
        response = admin_client.get(LIST, {"owner": value})
        assert response.status_code == 200, value
        assert response.context["cl"].result_count == 0, value
    assert admin_client.get(LIST, {"owner": str(admin_user.pk)}).context["cl"].result_count == 1


def test_change_page_shows_timeline_and_history(admin_client, system_actor):
    from contacts.services import activity_record, lifecycle_transition

    contact = ContactFactory()
    activity_record(contact=contact, type="page_viewed", actor=system_actor, apply_lifecycle=False)
    lifecycle_transition(contact=contact, to_stage="lead", reason="form", actor=system_actor)
    html = admin_client.get(f"{LIST}{contact.pk}/change/").content.decode().lower()
    assert "page_viewed" in html and "timeline (latest 50)" in html and "lifecycle history" in html


def test_add_through_the_admin_goes_through_the_service(admin_client):
    response = admin_client.post(
        f"{LIST}add/",
        {
            "email": " New@Example.com ",
            "first_name": "New",
            "engagement_tier": "bronze",
            "onboarding_status": "created",
            "churn_risk": "0",
            "tags": "",
            "properties": "{}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    contact = Contact.objects.get(email="new@example.com")
    assert AuditEvent.objects.filter(action="contact.create", object_id=str(contact.pk), actor_kind="user").exists()


def test_change_through_the_admin_goes_through_the_service(admin_client, admin_user):
    contact = ContactFactory(first_name="Ann")
    url = f"{LIST}{contact.pk}/change/"
    response = admin_client.post(url, {**change_form_data(admin_client, url), "first_name": "Anna"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Contact.objects.get(pk=contact.pk).first_name == "Anna"
    update = AuditEvent.objects.get(action="contact.update", object_id=str(contact.pk))
    assert (update.actor_kind, update.actor_id, list(update.changes)) == ("user", str(admin_user.pk), ["first_name"])


def test_duplicate_email_is_a_form_error_in_the_admin(admin_client):
    ContactFactory(email="taken@example.com")
    response = admin_client.post(
        f"{LIST}add/",
        {
            "email": "TAKEN@example.com",
            "engagement_tier": "bronze",
            "onboarding_status": "created",
            "churn_risk": "0",
            "tags": "",
            "properties": "{}",
        },
    )
    assert response.status_code == 200
    assert "Another contact has this value." in response.content.decode()
    assert Contact.objects.count() == 1


def _action(client, action, contacts, **extra):
    data = {"action": action, "_selected_action": [c.pk for c in contacts], **extra}
    return client.post(LIST, data)


def test_bulk_actions_assign_owner_add_tag_move_stage(admin_client, admin_user):
    contacts = ContactFactory.create_batch(3)
    form = _action(admin_client, "assign_owner", contacts)
    assert "Assign an owner" in form.content.decode()
    _action(admin_client, "assign_owner", contacts, owner=admin_user.pk, apply="1")
    assert Contact.objects.filter(owner=admin_user).count() == 3
    _action(admin_client, "add_tag", contacts, tag="VIP", apply="1")
    assert Contact.objects.filter(tags__contains=["vip"]).count() == 3
    _action(admin_client, "move_stage", contacts, stage="lead", reason="campaign", apply="1")
    assert LifecycleTransition.objects.filter(to_stage="lead", reason="campaign").count() == 3
    response = _action(admin_client, "move_stage", contacts, stage="won_back", reason="x", apply="1")
    assert response.status_code == 302
    assert Contact.objects.filter(lifecycle_stage="lead").count() == 3


def test_bulk_owner_and_tag_are_set_based_audited_and_announced(
    admin_client, admin_user, django_assert_max_num_queries
):
    contacts = ContactFactory.create_batch(40, tags=["old"])
    with django_assert_max_num_queries(20):  # not one write per contact
        _action(admin_client, "assign_owner", contacts, owner=admin_user.pk, apply="1")
    _action(admin_client, "add_tag", contacts[:10], tag="VIP", apply="1")
    _action(admin_client, "add_tag", contacts, tag="vip", apply="1")  # only the other 30 change
    assert Contact.objects.filter(owner=admin_user, tags=["old", "vip"]).count() == 40
    updates = AuditEvent.objects.filter(action="contact.update", actor_kind="user", actor_id=str(admin_user.pk))
    assert updates.count() == 40 + 10 + 30
    assert updates.filter(subject_id=contacts[0].pk).count() == 2
    assert OutboxMessage.objects.filter(topic="contact.updated").count() == 80


def test_bulk_actions_past_the_inline_limit_are_queued_as_background_jobs(admin_client, admin_user, settings):
    """The admin queues them on the bulk queue; the jobs it queued (read back from the broker)
    do the work when a worker runs them."""
    settings.ADMIN_BULK_INLINE_LIMIT = 2
    broker = redis.Redis.from_url(celery_app.conf.broker_url)
    broker.delete("bulk")
    contacts = ContactFactory.create_batch(3)
    response = _action(admin_client, "assign_owner", contacts, owner=admin_user.pk, apply="1")
    assert "in the background (1 jobs)" in admin_client.get(response["Location"]).content.decode()
    assert not Contact.objects.filter(owner=admin_user).exists()
    messages = [json.loads(raw) for raw in broker.lrange("bulk", 0, -1)]
    assert [m["headers"]["task"] for m in messages] == ["contacts.tasks.contacts_bulk_change"]
    args, kwargs, _ = json.loads(base64.b64decode(messages[0]["body"]))
    assert contacts_bulk_change(*args, **kwargs) == 3
    assert contacts_bulk_change(*args, **kwargs) == 0  # safe to run twice
    assert Contact.objects.filter(owner=admin_user).count() == 3
    assert AuditEvent.objects.filter(action="contact.update", actor_id=str(admin_user.pk)).count() == 3


def test_merge_flow(admin_client):
    keep, drop = ContactFactory(email="keep@example.com"), ContactFactory(email="drop@example.com")
    redirect = _action(admin_client, "merge_two", [keep, drop])
    page = admin_client.get(redirect["Location"])
    assert "Choose the contact that stays" in page.content.decode()
    admin_client.post("/admin/contacts/contact/merge/", {"first": keep.pk, "second": drop.pk, "survivor": keep.pk})
    drop.refresh_from_db()
    assert drop.merged_into_id == keep.pk and drop.is_archived


def test_duplicate_review_lists_and_dismisses(admin_client):
    a = ContactFactory(phone="+14155550199")
    b = ContactFactory(phone="+14155550199")
    html = admin_client.get("/admin/contacts/contact/duplicates/").content.decode()
    assert f"#{a.pk}" in html and f"#{b.pk}" in html and "same phone" in html
    admin_client.post("/admin/contacts/contact/duplicates/", {"dismiss": f"{a.pk}-{b.pk}"})
    assert ContactDuplicateDismissal.objects.filter(first=a, second=b).exists()
    assert f"#{a.pk}" not in admin_client.get("/admin/contacts/contact/duplicates/").content.decode()


def test_csv_import_previews_then_imports(admin_client):
    ContactFactory(email="old@example.com")
    csv_text = "email,first_name,phone,tags\nold@example.com,Olga,,\nnew@example.com,Nia,+14155550100,a;b\nbad,X,,\n"
    upload = SimpleUploadedFile("contacts.csv", csv_text.encode(), content_type="text/csv")
    preview = admin_client.post("/admin/contacts/contact/import/", {"file": upload}).content.decode()
    assert "nothing has been written yet" in preview
    assert [m for m in re.findall(r'<tr class="(\w+)">', preview)] == ["update", "create", "error"]
    assert not Contact.objects.filter(email="new@example.com").exists()
    admin_client.post("/admin/contacts/contact/import/", {"confirm": "1", "payload": csv_text})
    assert Contact.objects.get(email="new@example.com").tags == ["a", "b"]
    assert Contact.objects.get(email="old@example.com").first_name == "Olga"


def test_csv_export_streams_the_selection_and_is_audited(admin_client):
    contacts = ContactFactory.create_batch(2)
    response = _action(admin_client, "export_csv", contacts)
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[0].startswith("id,email,external_id")
    assert all(c.email in body for c in contacts)
    assert AuditEvent.objects.filter(action="contact.export_csv").exists()


def test_groups_see_what_they_need(client, django_user_model):
    user = django_user_model.objects.create_user(username="s", password="a-long-pass-123", is_staff=True)
    user.groups.add(Group.objects.get(name="Marketing"))
    client.force_login(user)
    contact = ContactFactory()
    assert client.get(LIST).status_code == 200
    assert client.get("/admin/contacts/lifecyclerule/").status_code == 403
    assert client.get("/admin/contacts/contact/duplicates/").status_code == 200
    assert client.get("/admin/contacts/contact/merge/", {"first": contact.pk, "second": contact.pk}).status_code == 403


def test_medical_fields_are_hidden_from_staff_without_view_phi(client, admin_client, django_user_model, system_actor):
    from contacts.services import activity_record

    contact = ContactFactory()
    activity_record(
        contact=contact, type="lab_result", actor=system_actor, properties={"hba1c": 9.1}, apply_lifecycle=False
    )
    marketer = django_user_model.objects.create_user(username="mk", password="a-long-pass-123", is_staff=True)
    marketer.groups.add(Group.objects.get(name="Marketing"))
    coach = django_user_model.objects.create_user(username="co", password="a-long-pass-123", is_staff=True)
    coach.groups.add(Group.objects.get(name="Coach"))
    client.force_login(marketer)
    assert "hba1c" not in client.get(f"{LIST}{contact.pk}/change/").content.decode()
    client.force_login(coach)
    assert "hba1c" in client.get(f"{LIST}{contact.pk}/change/").content.decode()


def test_csv_export_neutralizes_spreadsheet_formulas(admin_client):
    contact = ContactFactory(first_name='=HYPERLINK("http://evil")', last_name="+1+1")
    body = b"".join(_action(admin_client, "export_csv", [contact]).streaming_content).decode()
    assert "'=HYPERLINK" in body and "'+1+1" in body


def test_csv_preview_names_identity_conflicts_and_refuses_big_files(admin_client):
    a = ContactFactory(email="a@example.com")
    b = ContactFactory(email=None, external_id="u-b")
    csv_text = "email,external_id\na@example.com,u-b\n"
    upload = SimpleUploadedFile("c.csv", csv_text.encode(), content_type="text/csv")
    preview = admin_client.post("/admin/contacts/contact/import/", {"file": upload}).content.decode()
    assert re.findall(r'<tr class="(\w+)">', preview) == ["error"]
    assert f"contact {a.pk}" in preview and f"contact {b.pk}" in preview
    big = SimpleUploadedFile("big.csv", b"email\n" + b"x@example.com\n" * 200_000, content_type="text/csv")
    page = admin_client.post("/admin/contacts/contact/import/", {"file": big}).content.decode()
    assert "At most 2 MB per import" in page


def test_encrypted_columns_offer_no_sort_link(admin_client, system_actor):
    """Sorting an encrypted column would order by ciphertext: the header is not sortable."""
    from contacts.services import subscription_start

    subscription_start(contact=ContactFactory(), plan="glp1-monthly", actor=system_actor)
    html = admin_client.get("/admin/contacts/subscription/").content.decode()
    assert "glp1-monthly" in html  # the admin may see it...
    assert re.search(r'class="[^"]*sortable[^"]*column-status', html)
    assert not re.search(r'class="[^"]*sortable[^"]*column-plan', html)  # ...but not sort by it


# ----------------------------------------------------------------------------- big-table pages
# Each page below is asked for through the admin; the queries it made are planned with
# sequential scans and sorts off (tests.support.list_plan): an index must find the page's rows
# and give their order, as on a million contacts.


def _analyze(*tables):
    """Statistics of the rows the test made (as autovacuum would gather): those an earlier test
    left, of an empty table, make every plan cost the same."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(tables)}")


@pytest.fixture
def many_contacts(system_actor):
    """Contacts alike in every filtered column, on many pages: on a table of one page every plan
    costs about the same and PostgreSQL may pick any."""
    from contacts.models import Activity

    contacts = Contact.objects.bulk_create(
        Contact(email=f"fill{n}@example.com", source="website_form", lifecycle_stage="lead") for n in range(400)
    )
    Activity.objects.bulk_create(Activity(contact=contacts[n % 40], type="page_viewed") for n in range(400))
    _analyze("contacts_contact", "contacts_activity")
    return contacts


def _list_plans(admin_client, url, params, table):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.support import list_plan, list_queries

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url, params)
    assert response.status_code == 200
    statements = list_queries(captured, table)
    assert statements, captured.captured_queries
    return response, [list_plan(sql) for sql in statements]


@pytest.mark.parametrize(
    "params",
    [
        {"source": "calendly"},  # a source no other contact has
        {"owner": "<admin>"},
        {"lifecycle_stage__exact": "advocate"},
        {"engagement_tier__exact": "platinum"},
        {"is_archived__exact": "1"},
    ],
)
def test_contact_filters_read_through_an_index(admin_client, admin_user, many_contacts, params):
    ContactFactory(source="website_form", owner=admin_user)
    ContactFactory(is_archived=True, lifecycle_stage="advocate", engagement_tier="platinum", source="calendly")
    params = {name: str(admin_user.pk) if value == "<admin>" else value for name, value in params.items()}
    response, _ = _list_plans(admin_client, LIST, params, "contacts_contact")
    assert response.context["cl"].result_count == 1


def test_contact_sorts_offered_are_the_indexed_ones(admin_client, many_contacts):
    ContactFactory.create_batch(2)
    response = admin_client.get(LIST)
    html = response.content.decode()
    for column in ("id", "lead_score", "updated_at"):
        assert re.search(rf'class="[^"]*sortable[^"]*column-{column}', html), column
    for column in ("email", "phone", "lifecycle_stage", "engagement_tier", "owner", "source"):
        assert not re.search(rf'class="[^"]*sortable[^"]*column-{column}', html), column
    columns = list(response.context["cl"].list_display)
    for column in ("lead_score", "updated_at"):
        for sign in ("", "-"):
            _list_plans(admin_client, LIST, {"o": f"{sign}{columns.index(column)}"}, "contacts_contact")


def test_contact_sort_not_offered_is_ignored(admin_client):
    ContactFactory.create_batch(2)
    columns = list(admin_client.get(LIST).context["cl"].list_display)
    response = admin_client.get(LIST, {"o": str(columns.index("source"))})  # an old or edited URL
    assert list(response.context["cl"].queryset.query.order_by) == ["-pk"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"o": "0"},
        {"o": "-0"},
        {"occurred_at__gte": "2026-01-01 00:00:00+00:00", "occurred_at__lt": "2027-01-01 00:00:00+00:00"},
    ],
)
def test_activity_timeline_reads_through_an_index(admin_client, system_actor, many_contacts, params):
    from contacts.services import activity_record

    activity_record(contact=ContactFactory(), type="page_viewed", actor=system_actor, apply_lifecycle=False)
    _list_plans(admin_client, "/admin/contacts/activity/", params, "contacts_activity")


def test_activity_sorts_offered_are_the_indexed_ones(admin_client, system_actor):
    from contacts.services import activity_record

    activity_record(contact=ContactFactory(), type="page_viewed", actor=system_actor, apply_lifecycle=False)
    html = admin_client.get("/admin/contacts/activity/").content.decode()
    assert re.search(r'class="[^"]*sortable[^"]*column-occurred_at', html)
    for column in ("type", "source"):
        assert not re.search(rf'class="[^"]*sortable[^"]*column-{column}', html), column


def test_order_sorts_offered_are_the_indexed_ones(admin_client):
    from contacts.models import Order

    Order.objects.create(contact=ContactFactory(), amount=10)
    response = admin_client.get("/admin/contacts/order/")
    html = response.content.decode()
    assert re.search(r'class="[^"]*sortable[^"]*column-id', html)
    for column in ("amount", "currency", "status", "paid_at"):
        assert not re.search(rf'class="[^"]*sortable[^"]*column-{column}', html), column
    columns = list(response.context["cl"].list_display)
    ignored = admin_client.get("/admin/contacts/order/", {"o": str(columns.index("amount"))})
    assert list(ignored.context["cl"].queryset.query.order_by) == ["-pk"]


def test_bulk_actions_past_the_inline_limit_with_the_broker_down_say_so_instead_of_a_500(
    admin_client,
    admin_user,
    settings,
    own_broker,  # noqa: F811
):
    """The jobs cannot be queued: staff are told so (how many went, and to run it again: a
    contact already changed is left alone), instead of a server error."""
    settings.ADMIN_BULK_INLINE_LIMIT = 2
    contacts = ContactFactory.create_batch(3)
    own_broker.stop()
    response = _action(admin_client, "assign_owner", contacts, owner=admin_user.pk, apply="1")
    assert response.status_code == 302
    page = admin_client.get(response["Location"]).content.decode()
    assert "could not be queued" in page and "0 of 1 job(s)" in page and "in the background" not in page
    assert not Contact.objects.filter(owner=admin_user).exists()
