"""Django's error handlers (handler400/403/404/500 in the URLconf), for what goes wrong outside
JsonErrorMiddleware's reach: an exception in a middleware before it (a Host header that is not
in ALLOWED_HOSTS, raised by CommonMiddleware) is answered by these. Outside the admin's HTML
pages they answer in the one JSON error shape, as everything else does."""

from __future__ import annotations

from django.views import defaults

from crm_platform.api.errors import error_response
from crm_platform.middleware import _message_for, wants_html


def _json_outside_html(status: int, html_view):
    """The handler for `status`: Django's own page under the admin's HTML prefixes, the JSON
    error shape elsewhere."""

    def handler(request, exception=None):
        if wants_html(request):
            return html_view(request) if status == 500 else html_view(request, exception)
        return error_response(status, _message_for(status))

    return handler


bad_request = _json_outside_html(400, defaults.bad_request)
permission_denied = _json_outside_html(403, defaults.permission_denied)
page_not_found = _json_outside_html(404, defaults.page_not_found)
server_error = _json_outside_html(500, defaults.server_error)
