"""The Actor: who is doing something, built once per request, task or command and passed
explicitly to every service (no thread-locals)."""

from __future__ import annotations

import functools
import ipaddress
import uuid
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings


class ActorKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    AI = "ai"
    SYSTEM = "system"
    PROVIDER = "provider"


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    id: str
    request_id: str = ""
    ip: str | None = None

    def to_task(self) -> list:
        """The actor as a Celery argument (JSON), so work queued by a person stays theirs."""
        return [str(self.kind), self.id, self.request_id, self.ip]

    @classmethod
    def from_task(cls, value: list) -> Actor:
        kind, actor_id, request_id, ip = value
        return cls(ActorKind(kind), str(actor_id), request_id, ip)

    @classmethod
    def system(cls, name: str, *, request_id: str = "") -> Actor:
        """An actor for beat jobs, management commands and other work nobody asked for in person."""
        return cls(ActorKind.SYSTEM, name, request_id or new_request_id())

    @classmethod
    def for_user(cls, user, *, request_id: str = "", ip: str | None = None) -> Actor:
        return cls(ActorKind.USER, str(user.pk), request_id or new_request_id(), ip)

    @classmethod
    def from_request(cls, request) -> Actor:
        """The caller of an HTTP request: an API key, a staff user, or the anonymous public."""
        request_id = getattr(request, "request_id", "") or new_request_id()
        ip = client_ip(request)
        auth = getattr(request, "auth", None)
        from crm_platform.models import ApiKey

        if isinstance(auth, ApiKey):
            return cls(ActorKind.API_KEY, str(auth.pk), request_id, ip)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls(ActorKind.USER, str(user.pk), request_id, ip)
        return cls(ActorKind.SYSTEM, "anonymous", request_id, ip)


def new_request_id() -> str:
    return uuid.uuid4().hex


def client_ip(request) -> str | None:
    """The client's address: REMOTE_ADDR, or the entry TRUSTED_PROXY_COUNT hops back in X-Forwarded-For."""
    ip = request.META.get("REMOTE_ADDR")
    hops = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if hops and forwarded:
        chain = [part.strip() for part in forwarded.split(",") if part.strip()]
        if len(chain) >= hops:
            ip = chain[-hops]
    return _normalized_ip(ip) if ip else None


@functools.lru_cache(maxsize=4096)
def _normalized_ip(ip: str) -> str | None:
    """The address in its canonical form, or None if it is not one (asked several times per
    request, by authentication, throttles and the actor, for a few distinct addresses)."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None
