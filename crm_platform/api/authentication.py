from __future__ import annotations

from django.conf import settings
from rest_framework import authentication, exceptions

from crm_platform.actor import client_ip
from crm_platform.selectors import ApiKeyInvalid, api_key_verify


class ApiKeyPrincipal:
    """request.user for a machine client: authenticated, never staff, holds no Django permissions."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    is_active = True
    pk = None
    id = None

    def __init__(self, api_key):
        self.api_key = api_key
        self.username = f"api-key:{api_key.prefix}"

    def has_perm(self, perm, obj=None) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`. Missing header: not this scheme (anonymous). A key that is
    unknown, revoked, expired or used from a disallowed address: 401."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'.")
        try:
            raw = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        try:
            key = api_key_verify(raw_key=raw, ip=client_ip(request._request))
        except ApiKeyInvalid:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.") from None
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """The admin session, for staff browsing the API. Non-staff sessions are not API callers."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, auth = result
        if not user.is_staff:
            return None
        # As the admin site (compliance.security.StaffAdminSite): where staff need TOTP, only a
        # session OTP-verified now (django_otp's middleware; a removed device unverifies it).
        if settings.OTP_REQUIRED_FOR_STAFF and not getattr(user, "is_verified", lambda: False)():
            return None
        return user, auth
