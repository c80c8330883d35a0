"""Field encryption and keyed hashes for personal data at rest.

Keys come from the environment only (settings.FIELD_ENCRYPTION_KEYS, FIELD_HMAC_KEY):
- `FIELD_ENCRYPTION_KEYS`: comma-separated Fernet keys. The first encrypts; every key
  decrypts, so a new key can be put in front while rows written under the old one stay
  readable until `manage.py rotate_encryption_keys` has re-encrypted them.
- `FIELD_HMAC_KEY`: the key of `hmac_digest`, used for lookup columns beside encrypted ones
  and for the suppression list's hashes. Unlike the Fernet keys it cannot be rotated without
  recomputing every stored hash from the plaintext.

In development (DJANGO_DEBUG) settings.py derives both from SECRET_KEY when unset, so
`make run` works from the example .env unchanged; production refuses to start without them.
Keys are never logged, never put in an exception message, never returned by any function here.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "DecryptionError",
    "decrypt",
    "decrypt_bytes",
    "encrypt",
    "hmac_digest",
    "is_current",
    "looks_encrypted",
    "rotate",
]

# Every Fernet token starts with the version byte 0x80, which base64url-encodes to "gAAAAA"
# for any timestamp before the year 8921. Used to tell tokens from legacy plaintext while a
# data migration runs, never as proof that a value decrypts.
_FERNET_PREFIX = "gAAAAA"


class DecryptionError(ValueError):
    """A stored value is not a token any configured key can open (wrong or dropped key, or corruption)."""


@lru_cache(maxsize=8)
def _keyring(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    # Cached per key tuple (override_settings in tests changes the argument, so the cache never
    # serves a stale keyring).
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty (required in production mode).")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip()))
        except (ValueError, TypeError):
            # Name the position, never the value.
            raise ImproperlyConfigured(
                f"FIELD_ENCRYPTION_KEYS entry #{position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; generate with Fernet.generate_key())."
            ) from None
    return MultiFernet(fernets), fernets[0]


def _keys() -> tuple[MultiFernet, Fernet]:
    return _keyring(tuple(settings.FIELD_ENCRYPTION_KEYS or ()))


def encrypt(value: bytes | str) -> str:
    """Encrypt `value` (text is UTF-8 encoded) with the current key; returns the token as text."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _keys()[0].encrypt(data).decode("ascii")


def decrypt_bytes(token: bytes | str) -> bytes:
    """Open a token with any configured key; raises DecryptionError if none can."""
    raw = token.encode("ascii") if isinstance(token, str) else bytes(token)
    try:
        return _keys()[0].decrypt(raw)
    except InvalidToken:
        raise DecryptionError("value cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS") from None


def decrypt(token: bytes | str) -> str:
    """Open a token written by `encrypt` of a text value and return the text."""
    return decrypt_bytes(token).decode()


def rotate(token: bytes | str) -> str:
    """Re-encrypt a token under the current key (MultiFernet.rotate); the plaintext never leaves here."""
    raw = token.encode("ascii") if isinstance(token, str) else bytes(token)
    try:
        return _keys()[0].rotate(raw).decode("ascii")
    except InvalidToken:
        raise DecryptionError("value cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS") from None


def is_current(token: bytes | str) -> bool:
    """True when the token opens with the current (first) key, i.e. rotation has nothing to do."""
    raw = token.encode("ascii") if isinstance(token, str) else bytes(token)
    try:
        _keys()[1].decrypt(raw)
    except InvalidToken:
        return False
    return True


def looks_encrypted(value: object) -> bool:
    """Cheap shape test: does this stored value look like a Fernet token (not plaintext)?"""
    return isinstance(value, str) and value.startswith(_FERNET_PREFIX) and len(value) >= 100


def hmac_digest(value: str) -> str:
    """HMAC-SHA256 of `value` as 64 hex characters, for equality lookups on encrypted data.

    Callers normalise first (an email lowercased and stripped, a phone in E.164): the digest
    is of exactly the string given.
    """
    key = settings.FIELD_HMAC_KEY
    if not key:
        raise ImproperlyConfigured("FIELD_HMAC_KEY is empty (required in production mode).")
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
