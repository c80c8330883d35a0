"""Review findings on the contacts admin's CSV import, through the admin pages."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from contacts.models import Contact
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

IMPORT = "/admin/contacts/contact/import/"


def test_a_csv_with_one_very_long_cell_is_a_form_error_not_a_500(admin_client):
    """Python's csv module refuses a field over 131,072 characters (csv.Error): the preview
    and the confirm step both crash with a 500 on a file well under the 2 MB limit."""
    csv_text = "email,first_name\nlong@example.com," + "x" * 140_000 + "\nok@example.com,Ok\n"
    upload = SimpleUploadedFile("long.csv", csv_text.encode(), content_type="text/csv")
    preview = admin_client.post(IMPORT, {"file": upload})
    assert preview.status_code == 200
    assert "too long" in preview.content.decode()
    confirmed = admin_client.post(IMPORT, {"confirm": "1", "payload": csv_text})
    assert confirmed.status_code in (200, 302)
    assert not Contact.objects.filter(email="long@example.com").exists()


def test_a_csv_that_is_not_utf8_is_refused_not_imported_with_replacement_characters(admin_client):
    """Excel's plain "CSV" on Windows is cp1252: decoded as UTF-8 with errors="replace", every
    accented name is imported as "Ren\ufffd" and "M\ufffdller", with no word in the preview."""
    ContactFactory(email="rene@example.com", first_name="René", last_name="Müller")
    csv_bytes = "email,first_name,last_name\nrene@example.com,René,Müller\n".encode("cp1252")
    upload = SimpleUploadedFile("cp1252.csv", csv_bytes, content_type="text/csv")
    page = admin_client.post(IMPORT, {"file": upload}).content.decode()
    assert "\ufffd" not in page
    assert "UTF-8" in page
    contact = Contact.objects.get(email="rene@example.com")
    assert (contact.first_name, contact.last_name) == ("René", "Müller")
