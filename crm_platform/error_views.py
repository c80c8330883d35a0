"""Django's error handlers (handler400/403/404/500 in the URLconf), for what goes wrong outside
JsonErrorMiddleware's reach: an exception in a middleware before it (a Host header that is not
in ALLOWED_HOSTS, raised by CommonMiddleware) is answered by these. Outside the admin's HTML
pages they answer in the one JSON error shape, as everything else does."""

from __future__ import annotations

from django.views import defaults

from crm_platform.api.errors import error_response
from crm_platform.middleware import _message_for, wants_html


def bad_request(request, exception=None):
    if wants_html(request):
        return defaults.bad_request(request, exception)
    return error_response(400, _message_for(400))


def permission_denied(request, exception=None):
    if wants_html(request):
        return defaults.permission_denied(request, exception)
    return error_response(403, _message_for(403))


def page_not_found(request, exception=None):
    if wants_html(request):
        return defaults.page_not_found(request, exception)
    return error_response(404, _message_for(404))


def server_error(request):
    if wants_html(request):
        return defaults.server_error(request)
    return error_response(500, _message_for(500))
