"""Staff security: idle session timeout, login lockout (django-axes), TOTP for staff in
production (django-otp), and a Content-Security-Policy on the admin's pages.

Wired in settings (MIDDLEWARE, AUTHENTICATION_BACKENDS, and INSTALLED_APPS' admin entry
compliance.admin_site.StaffAdminConfig, which makes StaffAdminSite the admin site).
Documented in compliance/README.md, "Staff security"."""

from __future__ import annotations

import time

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth import logout
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite

from crm_platform.actor import client_ip

# The session's last-seen time is written at most this often: rewriting the session row on
# every admin GET (SESSION_SAVE_EVERY_REQUEST) costs a write per page for nothing.
TOUCH_EVERY_SECONDS = 60
_LAST_SEEN = "_idle_last_seen"


class SessionIdleTimeoutMiddleware:
    """Log out a session user idle for more than SESSION_IDLE_TIMEOUT seconds. The last-seen
    time lives in the session and is refreshed at most once a minute; the session cookie and
    row outlive the idle limit by that minute (settings.SESSION_COOKIE_AGE), so this check,
    not the cookie's age, decides."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        user = getattr(request, "user", None)
        if session is not None and user is not None and user.is_authenticated:
            now = int(time.time())
            last_seen = session.get(_LAST_SEEN)
            if last_seen is not None and now - last_seen > settings.SESSION_IDLE_TIMEOUT:
                logout(request)
            elif last_seen is None or now - last_seen >= TOUCH_EVERY_SECONDS:
                session[_LAST_SEEN] = now
        return self.get_response(request)


def session_idle_clock_start(sender, request, user, **kwargs) -> None:
    """user_logged_in receiver (django.contrib.auth's signal): the login writes the session
    anyway, so the last-seen time goes with it and the first pages after login write nothing."""
    session = getattr(request, "session", None)
    if session is not None:
        session[_LAST_SEEN] = int(time.time())


class LockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check for every login that comes with a request (the admin login
    form, and any other form built on django.contrib.auth). Without a request there is nothing
    to count by (the test client's login(), management commands): it steps aside and the next
    backend authenticates as usual."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def axes_client_ip(request) -> str | None:
    """The address axes counts failures by: ours, honouring TRUSTED_PROXY_COUNT (None when
    the request has none, e.g. the test client's force_login)."""
    return client_ip(request)


class StaffAdminSite(OTPAdminSite):
    """The admin site, with django-otp's TOTP step when OTP_REQUIRED_FOR_STAFF (production by
    default): the login form asks for the code and only OTP-verified staff get in. Without it
    (development), the plain admin login."""

    @property
    def login_form(self):
        return OTPAdminAuthenticationForm if settings.OTP_REQUIRED_FOR_STAFF else None

    @property
    def login_template(self):
        # django-otp's login page, minus its inline <style> (the admin's CSP refuses it).
        return "admin/compliance/otp_login.html" if settings.OTP_REQUIRED_FOR_STAFF else None

    def __init__(self, name="admin"):
        super().__init__(name)

    def has_permission(self, request):
        allowed = request.user.is_active and request.user.is_staff
        if allowed and settings.OTP_REQUIRED_FOR_STAFF:
            return request.user.is_verified()
        return allowed


# Admin pages load only our own scripts, styles, fonts and images (Django 5.2's admin needs no
# inline script; style attributes, used by a few widgets and our SVG charts, stay allowed).
ADMIN_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


# The API's own HTML pages that load what the policy would block (Swagger UI and ReDoc set up
# their pages with inline script); everything else under /api/ that answers HTML is DRF's
# browsable API, which staff use with their session and which needs only our own files.
_API_PAGES_WITHOUT_CSP = ("/api/docs/", "/api/redoc/")


class AdminContentSecurityPolicyMiddleware:
    """Content-Security-Policy on /admin/ pages and on the browsable API's pages (staff browse
    the API with their admin session: an injected script there could act as them)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith("/admin/") or (
            request.path.startswith("/api/")
            and request.path not in _API_PAGES_WITHOUT_CSP
            and response.get("Content-Type", "").startswith("text/html")
        ):
            response.setdefault("Content-Security-Policy", ADMIN_CSP)
        return response
