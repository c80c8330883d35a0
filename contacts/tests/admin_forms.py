"""What a browser posts back from an admin change form, for tests that save one."""

from django.forms import MultiWidget


def change_form_data(client, url: str) -> dict:
    """The change form at `url` as the page shows it: every field's current value, and the
    inlines' management forms; a test overrides the fields it changes."""
    page = client.get(url)
    form = page.context["adminform"].form
    data = {}
    for name in form.fields:
        value, widget = form[name].value(), form.fields[name].widget
        if isinstance(widget, MultiWidget):  # split date and time
            for i, part in enumerate(widget.decompress(value)):
                data[f"{name}_{i}"] = "" if part is None else part
        elif value is True:
            data[name] = "on"
        elif value is not False:
            data[name] = "" if value is None else value
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update({management.add_prefix(key): management[key].value() for key in management.fields})
    return data
