"""GDPR/CCPA export: POST /api/v1/contacts/{id}/export (202), the Celery job, the signed expiring
download link (API and admin), and the purge of expired bundles by the retention job."""

from __future__ import annotations

import datetime as dt
import io
import json
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
