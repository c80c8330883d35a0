"""GDPR/CCPA export: POST /api/v1/contacts/{id}/export (202), the Celery job, the signed expiring
download link (API and admin), and the purge of expired bundles by the retention job."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import zipfile
from decimal import Decimal

import pytest
from django.core import signing
from django.utils import timezone

from compliance.consent import consent_grant
from compliance.models import AuditEvent, ExportBundle
from compliance.tasks import export_build, retention_purge
from contacts import services as contacts
from contacts.tests.factories import ContactFactory
from integrations.tests.test_worker import own_broker  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def gdpr(key_client):
    return key_client(["gdpr:write", "phi:read"])


@pytest.fixture
def person(system_actor):
    contact = ContactFactory(email="export.me@example.com", first_name="Exa", phone="+14155550122")
    contacts.activity_record(contact=contact, type="food_logged", actor=system_actor, properties={"kcal": 310})
    contacts.note_create(contact=contact, body='=HYPERLINK("x") note', actor=system_actor)
    contacts.order_record(contact=contact, amount=Decimal("12.50"), external_id="o-1", actor=system_actor)
    consent_grant(contact=contact, purpose="marketing_email", source="form", actor=system_actor)
    return contact


def _export(gdpr, contact, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        response = gdpr.post(f"/api/v1/contacts/{contact.pk}/export")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending" and body["download_url"] is None
    assert export_build.apply(args=[body["id"]]).get() == "ready"
    return body["id"]


def test_export_builds_an_encrypted_bundle_of_every_table(gdpr, person, django_capture_on_commit_callbacks):
    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    bundle = ExportBundle.objects.get(pk=bundle_id)
    assert b"export.me@example.com" not in bytes(bundle.ciphertext)  # encrypted at rest
    status = gdpr.get(f"/api/v1/exports/{bundle_id}").json()
    assert status["status"] == "ready" and status["download_url"].startswith(
        "http://testserver/api/v1/exports/download/"
    )
    assert {"contacts.contact", "contacts.activity", "contacts.note", "contacts.order", "compliance.consent"} <= set(
        status["tables"]
    )
    download = gdpr.get(status["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    document = json.loads(archive.read("export.json"))
    assert document["tables"]["contacts.contact"][0]["email"] == "export.me@example.com"
    assert document["tables"]["contacts.activity"][0]["properties"] == {"kcal": 310}
    notes_csv = archive.read("contacts.note.csv").decode()
    assert "'=HYPERLINK" in notes_csv  # a spreadsheet will not run it
    assert {"contacts.contact.csv", "contacts.order.csv", "compliance.consent.csv"} <= set(archive.namelist())
    actions = set(AuditEvent.objects.filter(object_id=bundle_id).values_list("action", flat=True))
    assert actions == {"export.request", "export.build", "export.download"}
    assert "export.me@example.com" not in json.dumps(list(AuditEvent.objects.values("changes")))


def _download(gdpr, bundle_id) -> dict:
    url = gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]
    return json.loads(zipfile.ZipFile(io.BytesIO(gdpr.get(url).content)).read("export.json"))


def test_export_holds_the_events_the_app_sent_about_the_person_and_their_sync_log(
    gdpr, key_client, django_capture_on_commit_callbacks
):
    """Art. 15: the inbox rows naming the person (a queued event's payload, medical properties
    included, as everywhere in the export; a failed one's) and the sync log's rows about them
    (metadata: never a payload, nor the digest kept of it) are theirs. Neither was exported."""
    from integrations.tasks import inbox_apply

    person = ContactFactory(email="inbox.me@example.com", external_id="u-77")
    ContactFactory(email="someone.else@example.com", external_id="u-88")
    app = key_client(["events:write"], name="mobile app")

    def send(key, body, apply=True):
        assert app.post("/api/v1/events", body, format="json", HTTP_IDEMPOTENCY_KEY=key).status_code == 202
        if apply:
            inbox_apply()

    order = {"type": "order_placed", "user": {"external_id": "u-77"}, "properties": {"order_id": "o-1", "amount": "30"}}
    send("o1", order)
    send("o2", {**order, "properties": {"order_id": "o-1", "amount": "300"}})  # another amount: fails
    send("x1", {"type": "custom", "user": {"external_id": "u-88"}})
    send("x2", {"type": "custom", "user": {"email": "someone.else@example.com"}}, apply=False)
    plan = {"plan_id": "tp-1", "plan": "Semaglutide 0.25 mg weekly", "status": "active"}
    send("t1", {"type": "treatment_plan_updated", "user": {"email": "inbox.me@example.com"}, "properties": plan}, False)

    tables = _download(gdpr, _export(gdpr, person, django_capture_on_commit_callbacks))["tables"]

    inbox = tables["integrations.inboundevent"]
    assert [(row["type"], row["status"]) for row in inbox] == [
        ("order_placed", "failed"),
        ("treatment_plan_updated", "pending"),
    ]
    assert inbox[0]["user_external_id"] == "u-77" and Decimal(inbox[0]["payload"]["properties"]["amount"]) == 300
    assert inbox[1]["user_email"] == "inbox.me@example.com" and inbox[1]["payload"]["properties"] == plan
    assert not {"owner", "key", "request_hash", "actor"} & set(inbox[0])
    sync_log = tables["integrations.syncevent"]
    assert [(row["event_type"], row["status"]) for row in sync_log] == [
        ("order_placed", "applied"),
        ("order_placed", "failed"),
    ]
    assert [(row["object_id"], row["external_id"]) for row in sync_log] == [(str(person.pk), "u-77"), ("", "u-77")]
    assert not {"payload_digest", "outbox_message_id"} & set(sync_log[0])
    assert "u-88" not in json.dumps(tables) and "someone.else" not in json.dumps(tables)


def test_a_providers_record_under_an_id_equal_to_the_persons_app_user_id_is_not_theirs(
    gdpr, client, settings, django_capture_on_commit_callbacks
):
    """HubSpot's object ids and the app's user ids are separate spaces: the sync log's record of
    HubSpot deleting its object 7001 is not about the person whose app user id is "7001". It
    was in their export, and erasing them deleted it."""
    from integrations.models import SyncEvent
    from integrations.tests.test_hubspot_webhooks import SECRET, _deletion, post

    settings.HUBSPOT_CLIENT_SECRET = SECRET
    person = ContactFactory(email="same.digits@example.com", external_id="7001")
    assert post(client, [_deletion(7001)]).json()["unknown"] == 1  # HubSpot's 7001: nobody we know

    tables = _download(gdpr, _export(gdpr, person, django_capture_on_commit_callbacks))["tables"]
    assert tables.get("integrations.syncevent", []) == []  # a table with no rows is left out
    assert gdpr.post(f"/api/v1/contacts/{person.pk}/erase", HTTP_IDEMPOTENCY_KEY="erase-7001").status_code == 200
    assert SyncEvent.objects.filter(provider="hubspot", external_id="7001").exists()


def test_a_forged_or_expired_link_is_refused(gdpr, person, django_capture_on_commit_callbacks, settings):
    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    assert gdpr.get("/api/v1/exports/download/not-a-token").status_code == 404
    forged = signing.TimestampSigner(salt="other").sign(bundle_id)
    assert gdpr.get(f"/api/v1/exports/download/{forged}").status_code == 404
    url = gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]
    settings.GDPR_EXPORT_TTL_HOURS = 0  # every signature is now older than the link's life
    response = gdpr.get(url)
    assert response.status_code == 410 and response.json()["error"]["code"] == "gone"


def test_the_link_alone_is_not_enough(gdpr, key_client, person, django_capture_on_commit_callbacks):
    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    url = gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]
    assert key_client(["contacts:read"]).get(url).status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().get(url).status_code in (401, 403)


def _logged(caplog, capfd) -> str:
    """Everything logged: the console handler's lines (as production writes them) and every
    record's attributes (the JSON formatter writes the extras out too)."""
    return capfd.readouterr().err + caplog.text + " ".join(str(r.__dict__) for r in caplog.records)


def test_the_download_links_token_is_not_logged_nor_audited(
    gdpr, admin_client, person, django_capture_on_commit_callbacks, caplog, capfd
):
    """The signed link's token opens the bundle (for a caller with the scopes) until it expires:
    the access line logged it with the path. It now names the parameter instead."""
    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    url = gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]
    token = url.rsplit("/", 1)[1]
    capfd.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert gdpr.get(url).status_code == 200
        assert gdpr.get(f"{url}x").status_code == 404  # a forged token is not logged either
        assert admin_client.get(f"/admin/compliance/exportbundle/download/{token}/").status_code == 200
    access = [r.getMessage() for r in caplog.records if r.name == "crm_platform.request"]
    assert [line.rsplit(" ", 1)[0] for line in access] == [
        "GET /api/v1/exports/download/<token> 200",
        "GET /api/v1/exports/download/<token> 404",
        "GET /admin/compliance/exportbundle/download/<token>/ 200",
    ]
    assert token not in _logged(caplog, capfd)
    assert token not in json.dumps(list(AuditEvent.objects.values()), default=str)


def test_a_download_that_fails_on_our_side_logs_no_token(
    gdpr, person, django_capture_on_commit_callbacks, caplog, capfd, settings
):
    """A 500 is logged three times: our access line, our error line, and Django's own
    (django.request), whose record carries the request (the JSON formatter writes it out, query
    string included). None of them holds the token."""
    from pythonjsonlogger.json import JsonFormatter

    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    url = gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]
    token = url.rsplit("/", 1)[1]
    settings.FIELD_ENCRYPTION_KEYS = ["not a fernet key"]  # a deploy's bad setting: nothing decrypts
    gdpr.raise_request_exception = False
    capfd.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert gdpr.get(f"{url}?token={token}").status_code == 500
    django_line = next(r for r in caplog.records if r.name == "django.request")
    assert django_line.getMessage() == "Internal Server Error: /api/v1/exports/download/<token>"
    assert token not in JsonFormatter("%(message)s").format(django_line)
    assert token not in _logged(caplog, capfd)


def _gdpr_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "compliance.gdpr" and r.levelno == logging.WARNING]


def test_an_export_whose_key_was_removed_is_410_marked_failed_and_logged_once_without_the_token(
    gdpr, person, django_capture_on_commit_callbacks, settings, caplog, capfd
):
    """The bundle's key left FIELD_ENCRYPTION_KEYS (rotated out): the download was an unhandled
    DecryptionError, a 500. It is now a 410 asking for a new export, the bundle is failed (the
    purge removes it; its status says so), and the warning is logged once, with the bundle's id
    and not the link's token."""
    from cryptography.fernet import Fernet

    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    url = gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]
    token = url.rsplit("/", 1)[1]
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the bundle's key is gone
    capfd.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        for _ in range(2):  # the second download is answered the same, and logs nothing more
            response = gdpr.get(url)
            assert response.status_code == 410, response.content
            assert response.json()["error"] == {
                "code": "gone",
                "message": "This export can no longer be read; request a new one.",
                "fields": {},
            }
    assert _gdpr_warnings(caplog) == [
        f"Export bundle {bundle_id} can no longer be decrypted (its key left FIELD_ENCRYPTION_KEYS, or it is "
        "damaged); marked failed."
    ]
    assert token not in _logged(caplog, capfd)
    bundle = ExportBundle.objects.get(pk=bundle_id)
    assert (bundle.status, bundle.downloads) == ("failed", 0)
    status = gdpr.get(f"/api/v1/exports/{bundle_id}").json()
    assert status["status"] == "failed" and status["download_url"] is None
    actions = list(AuditEvent.objects.filter(object_id=bundle_id).values_list("action", flat=True))
    assert "export.download" not in actions and actions.count("export.unreadable") == 1


def test_a_damaged_export_is_410_in_the_admin_and_marked_failed(admin_client, person, caplog):
    admin_client.post("/admin/contacts/contact/", {"action": "gdpr_export", "_selected_action": [person.pk]})
    bundle = ExportBundle.objects.get(contact=person)
    export_build.apply(args=[str(bundle.pk)])
    page = admin_client.get("/admin/compliance/exportbundle/").content.decode()
    link = page.split('href="/admin/compliance/exportbundle/download/')[1].split('"')[0]
    ExportBundle.objects.filter(pk=bundle.pk).update(ciphertext=b"not a fernet token")  # damaged at rest
    with caplog.at_level(logging.INFO):
        response = admin_client.get(f"/admin/compliance/exportbundle/download/{link}")
    assert response.status_code == 410
    assert response.content.decode() == "This export can no longer be read; request a new one."
    assert len(_gdpr_warnings(caplog)) == 1
    assert ExportBundle.objects.get(pk=bundle.pk).status == "failed"
    assert (
        'href="/admin/compliance/exportbundle/download/'
        not in admin_client.get("/admin/compliance/exportbundle/").content.decode()
    )


def test_export_refusals(key_client, gdpr, person):
    assert gdpr.post("/api/v1/contacts/999999/export").status_code == 404
    assert key_client(["contacts:write"]).post(f"/api/v1/contacts/{person.pk}/export").status_code == 403
    assert not ExportBundle.objects.exists()


@pytest.mark.parametrize("scopes", [["gdpr:write"], ["admin"]])
def test_an_export_takes_phi_read_too(key_client, gdpr, person, django_capture_on_commit_callbacks, scopes):
    """The bundle holds every medical field unmasked; `admin` (every scope but phi:read) read
    them all this way, while the notes API masked them for the same key. Found by a review."""
    without = key_client(scopes, name="no phi")
    response = without.post(f"/api/v1/contacts/{person.pk}/export")
    assert response.status_code == 403 and "phi:read" in response.json()["error"]["message"]
    assert not ExportBundle.objects.exists()
    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    url = gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]
    assert without.get(url).status_code == 403
    assert ExportBundle.objects.get(pk=bundle_id).downloads == 0


def test_staff_without_the_phi_permission_cannot_export_in_the_admin(client, staff_user, person):
    from django.contrib.auth.models import Permission

    staff_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_contact", "change_contact", "gdpr_request", "view_exportbundle"])
    )
    client.force_login(staff_user)
    response = client.post("/admin/contacts/contact/", {"action": "gdpr_export", "_selected_action": [person.pk]})
    assert response.status_code == 403 and not ExportBundle.objects.exists()


def test_expired_bundles_are_purged_by_the_retention_job(gdpr, person, django_capture_on_commit_callbacks):
    bundle_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    fresh_id = _export(gdpr, person, django_capture_on_commit_callbacks)
    ExportBundle.objects.filter(pk=bundle_id).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    report = retention_purge.apply().get()
    assert report["compliance.exportbundle"] == 1
    assert list(ExportBundle.objects.values_list("pk", flat=True)) == [ExportBundle.objects.get(pk=fresh_id).pk]
    assert gdpr.get(f"/api/v1/exports/{bundle_id}").status_code == 404


def test_admin_action_exports_and_admin_downloads(admin_client, person):
    admin_client.post(
        "/admin/contacts/contact/", {"action": "gdpr_export", "_selected_action": [person.pk]}, follow=True
    )
    bundle = ExportBundle.objects.get(contact=person)
    export_build.apply(args=[str(bundle.pk)])
    page = admin_client.get("/admin/compliance/exportbundle/")
    assert page.status_code == 200 and b"/admin/compliance/exportbundle/download/" in page.content
    link = page.content.decode().split('href="/admin/compliance/exportbundle/download/')[1].split('"')[0]
    download = admin_client.get(f"/admin/compliance/exportbundle/download/{link}")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"


@pytest.mark.django_db(transaction=True)
def test_an_export_of_a_contact_erased_while_it_is_requested_is_a_404_and_leaves_no_bundle(gdpr):
    """Found by the view, then erased (another request) before the export's bundle commits: the
    bundle's foreign key failed at COMMIT and the request answered 500."""
    from tests.support import behind_a_lock

    contact = ContactFactory(email="erased.meanwhile@example.com")
    gdpr.raise_request_exception = False
    answer = behind_a_lock(
        "DELETE FROM contacts_contact WHERE id = %s",
        [contact.pk],
        lambda: gdpr.post(f"/api/v1/contacts/{contact.pk}/export"),
    )
    assert answer.status_code == 404, answer.content
    assert answer.json()["error"]["code"] == "not_found"
    assert not ExportBundle.objects.exists()


def _procfile_queues() -> str:
    """The queues `make run`'s worker consumes (its Procfile line)."""
    from tests.support import ROOT

    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("worker:"))
    return line.split("--queues", 1)[1].split()[0]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_export_requested_while_the_broker_is_down_is_built_by_beats_jobs_once_it_is_back(
    gdpr,
    person,
    own_broker,  # noqa: F811
):
    """The build job is queued after commit, best effort: with the broker down (or its queue lost
    in a Redis restart) the bundle was left pending for ever, never built and never purged. A
    beat job now sends it again; one round of the schedule, run by a worker on `make run`'s
    queues, builds it."""
    from crm_platform.celery import app as celery_app
    from crm_platform.schedules import SCHEDULE
    from tests.support import celery_worker, wait_until

    own_broker.stop()
    response = gdpr.post(f"/api/v1/contacts/{person.pk}/export")
    assert response.status_code == 202, response.content
    bundle_id = response.json()["id"]
    own_broker.start()
    assert ExportBundle.objects.get(pk=bundle_id).status == ExportBundle.Status.PENDING
    ExportBundle.objects.filter(pk=bundle_id).update(requested_at=timezone.now() - dt.timedelta(hours=1))

    with celery_worker(broker_url=own_broker.url, queues=_procfile_queues()):
        for spec in SCHEDULE.values():  # what beat sends, each job once
            celery_app.send_task(spec["task"], queue=spec["queue"], expires=max(spec["expires"], 120))
        wait_until(lambda: ExportBundle.objects.get(pk=bundle_id).status == ExportBundle.Status.READY, timeout=120)
    assert gdpr.get(f"/api/v1/exports/{bundle_id}").json()["download_url"]


def test_an_export_whose_build_never_ends_is_failed_after_a_day_for_a_new_request(
    gdpr, person, django_capture_on_commit_callbacks
):
    """A bundle still pending a day after its request (its build keeps failing or being killed)
    is marked failed, so the caller sees it and asks again, and the retention purge removes it."""
    from compliance.tasks import export_sweep

    with django_capture_on_commit_callbacks():
        bundle_id = gdpr.post(f"/api/v1/contacts/{person.pk}/export").json()["id"]
    ExportBundle.objects.filter(pk=bundle_id).update(requested_at=timezone.now() - dt.timedelta(days=2))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert export_sweep() == {"requeued": 0, "failed": 1}
    assert queued == []
    status = gdpr.get(f"/api/v1/exports/{bundle_id}").json()
    assert status["status"] == "failed" and status["download_url"] is None
