"""Outbound webhooks per Standard Webhooks: secrets, signatures, the SSRF guard, one HTTP send,
and the destination adapter that fans outbox messages out to endpoints."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.module_loading import import_string
from requests.adapters import HTTPAdapter

from compliance.guard import guard_payload
from crm_platform.actor import Actor
from crm_platform.models import OutboxMessage
from integrations.destinations import (
    BaseDestination,
    DeferDelivery,
    DeliveryResult,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from integrations.events import event_type_for
from integrations.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
# Standard Webhooks: the first attempt at once, then these waits (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
WEBHOOK_RETRY_SCHEDULE: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
AUTO_DISABLE_AFTER = timedelta(days=5)
EXCERPT_CHARS = 500


def _setting(name: str, default):
    return getattr(settings, name, default)


def timeout_seconds() -> float:
    return float(_setting("WEBHOOK_TIMEOUT_SECONDS", 10))


def allow_private_targets() -> bool:
    return bool(_setting("WEBHOOK_ALLOW_PRIVATE_TARGETS", settings.DEBUG))


# ----------------------------------------------------------------------------- secrets and signatures


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_normalize(value: str) -> str:
    """A caller-supplied secret -> our stored `whsec_` form. A `whsec_<base64>` secret is kept
    as it is; any other string becomes the HMAC key as its UTF-8 bytes (what seed 003's own
    implementation signs with). Raises ValidationError when too short or not valid base64."""
    if value.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError({"secret": ["A whsec_ secret must be base64 after the prefix."]}) from None
        if len(key) < 16:
            raise ValidationError({"secret": ["The secret must hold at least 16 bytes."]})
        return value
    if len(value) < 12:
        raise ValidationError({"secret": ["The secret must be at least 12 characters long."]})
    return SECRET_PREFIX + base64.b64encode(value.encode()).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>."""
    digest = hmac.new(secret_key(secret), f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# ----------------------------------------------------------------------------- SSRF guard and DNS pinning


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the system resolver's order (duplicates dropped)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))


def _resolver():
    # A seam like EMAIL_BACKEND: tests point WEBHOOK_RESOLVER at tests.fakes.dns.resolve so a
    # made-up host name can resolve to the loopback receiver.
    path = _setting("WEBHOOK_RESOLVER", "")
    return import_string(path) if path else system_resolve


@dataclass(frozen=True)
class PinnedTarget:
    """Where one delivery goes: `url` names the checked address instead of the host, `host`
    is the Host header (the name, with the URL's port), `server_name` the TLS name."""

    url: str
    host: str
    server_name: str
    address: str


def _refused(message: str, code: str) -> ValidationError:
    return ValidationError({"url": [ValidationError(message, code=code)]})


def url_resolve(url: str) -> PinnedTarget:
    """Resolve the URL's host once, check every address (unless private targets are allowed)
    and pin the first: the connection then goes to exactly the address we checked, so DNS
    that changes between check and connect (rebinding) cannot reach a private address.
    Raises ValidationError: code "scheme", "unresolvable" or "private"."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused("Enter an http(s) URL with a host.", "scheme")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = _resolver()(parts.hostname, port)
    except (OSError, UnicodeError, ValueError):
        addresses = []
    if not addresses:
        raise _refused("The host does not resolve.", "unresolvable")
    if not allow_private_targets():
        for value in addresses:
            address = ipaddress.ip_address(value)
            if not address.is_global or address.is_multicast:
                raise _refused("The host resolves to a private or reserved address.", "private")
    address = addresses[0]
    userinfo, _, hostport = parts.netloc.rpartition("@")
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{userinfo}@{literal}:{port}" if userinfo else f"{literal}:{port}"
    return PinnedTarget(
        url=urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        host=hostport,
        server_name=parts.hostname,
        address=address,
    )


def url_check(url: str) -> None:
    """Refuse URLs we must not call: not http(s), no host, or (unless private targets are
    allowed, as in development and tests) a host resolving to a private, loopback,
    link-local, reserved or multicast address. Raises ValidationError. Deliveries check
    again, and pin what they checked (url_resolve)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"url": ["Enter an http(s) URL with a host."]})
    if allow_private_targets():
        return
    url_resolve(url)


# ----------------------------------------------------------------------------- one send


class PinnedAddressAdapter(HTTPAdapter):
    """Requests to a pinned URL (an IP address in place of the host name) still speak TLS to
    the name: SNI and certificate verification use the Host header's name, not the address.
    Pools are keyed by address and name, so keep-alive connections are reused per target."""

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host = request.headers.get("Host")
        if host_params["scheme"] == "https" and host:
            name = urlsplit(f"//{host}").hostname
            pool_kwargs["server_hostname"] = name
            pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs


def _new_session() -> requests.Session:
    session = requests.Session()
    # No proxies or CA bundles from the environment: a proxy would resolve the name itself
    # (undoing the pin), and looking them up costs time on every request.
    session.trust_env = False
    adapter = PinnedAddressAdapter(pool_connections=20, pool_maxsize=20)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_session = _new_session()


def webhook_body(*, event_type: str, occurred_at, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": occurred_at.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


def webhook_send(
    *,
    endpoint: WebhookEndpoint,
    target: PinnedTarget,
    webhook_id: str,
    event_type: str,
    body: str,
    message_id: int | None,
    attempt: int,
) -> tuple[WebhookDelivery, int | None]:
    """POST one signed body (signed now, with a fresh timestamp) to the pinned `target`
    (url_resolve) and log the attempt. Never raises for the target's failures: returns the
    delivery row saying what happened, and the target's Retry-After in seconds when it sent one."""
    timestamp = int(time.time())
    headers = {
        "host": target.host,
        "content-type": "application/json",
        "user-agent": "crm_platform-webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(endpoint.secret, webhook_id, timestamp, body),
    }
    delivery = WebhookDelivery(
        endpoint=endpoint, message_id=message_id, webhook_id=webhook_id, event_type=event_type, attempt=attempt
    )
    started = time.monotonic()
    try:
        with _session.post(
            target.url,
            data=body.encode(),
            headers=headers,
            timeout=timeout_seconds(),
            allow_redirects=False,
            stream=True,
        ) as response:
            excerpt = next(response.iter_content(EXCERPT_CHARS), b"")
            delivery.status_code = response.status_code
            delivery.response_excerpt = excerpt.decode("utf-8", "replace")[:EXCERPT_CHARS]
            delivery.succeeded = 200 <= response.status_code < 300
            retry_after = response.headers.get("retry-after", "")
            if not delivery.succeeded:
                delivery.error = f"HTTP {response.status_code}"
    except requests.Timeout:
        delivery.error = "timeout"
        retry_after = ""
    except requests.RequestException as exc:
        delivery.error = f"{type(exc).__name__}"[:EXCERPT_CHARS]
        retry_after = ""
    delivery.latency_ms = int((time.monotonic() - started) * 1000)
    delivery.save(force_insert=True)
    return delivery, int(retry_after) if retry_after.isdigit() else None


# ----------------------------------------------------------------------------- endpoint state


def endpoint_disable(*, endpoint: WebhookEndpoint, reason: str, actor: Actor, by_system: bool) -> None:
    """Switch an endpoint off; a system disable (410, days of failures) flags it for staff."""
    from compliance.services import audit_record

    now = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_at=now, disabled_reason=reason[:200], needs_attention=by_system, updated_at=now
    )
    endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = False, now, reason[:200]
    endpoint.needs_attention = by_system
    audit_record(actor=actor, action="webhook_endpoint.disable", obj=endpoint, changes={"reason": reason[:200]})
    if by_system:
        logger.warning("webhook endpoint %s disabled: %s", endpoint.pk, reason)


def _note_failure(endpoint: WebhookEndpoint, now) -> None:
    if endpoint.failing_since is None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
        endpoint.failing_since = now
    elif now - endpoint.failing_since >= AUTO_DISABLE_AFTER:
        endpoint_disable(
            endpoint=endpoint,
            reason=f"failing since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC",
            actor=Actor.system("webhooks"),
            by_system=True,
        )


def _note_success(endpoint: WebhookEndpoint) -> None:
    if endpoint.failing_since is not None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        endpoint.failing_since = None


# ----------------------------------------------------------------------------- the destination


class WebhookDestination(BaseDestination):
    """Fans each message out to the enabled endpoints that want its event type: one row
    "webhook:<endpoint id>" each."""

    name = "webhook"
    retry_schedule = WEBHOOK_RETRY_SCHEDULE

    def targets(self, messages: Sequence[OutboxMessage]) -> dict[int, list[str]]:
        endpoints = list(WebhookEndpoint.objects.filter(enabled=True).values_list("pk", "event_types"))
        routed: dict[int, list[str]] = {}
        for message in messages:
            event_type = event_type_for(message.topic, message.payload)
            if event_type is not None:
                routed[message.pk] = [f"webhook:{pk}" for pk, types in endpoints if not types or event_type in types]
        return routed

    def deliver(self, message: OutboxMessage) -> DeliveryResult:
        endpoint = WebhookEndpoint.objects.filter(pk=int(message.destination.split(":", 1)[1])).first()
        if endpoint is None:
            raise PermanentDeliveryError("endpoint deleted")
        if not endpoint.enabled:
            raise PermanentDeliveryError(f"endpoint disabled: {endpoint.disabled_reason}")
        if endpoint.rate_limit_per_minute:
            recent = WebhookDelivery.objects.filter(
                endpoint=endpoint, at__gte=timezone.now() - timedelta(minutes=1), message_id__isnull=False
            ).count()
            if recent >= endpoint.rate_limit_per_minute:
                raise DeferDelivery(10)
        try:
            target = url_resolve(endpoint.url)
        except ValidationError as exc:
            if any(error.code == "unresolvable" for error in exc.error_dict["url"]):
                _note_failure(endpoint, timezone.now())
                raise TransientDeliveryError("host does not resolve") from None  # DNS may come back
            raise PermanentDeliveryError("target address refused") from None
        event_type = event_type_for(message.topic, message.payload) or message.topic
        phi_allowed = endpoint.phi_fields if endpoint.may_receive_phi else ()
        body = webhook_body(
            event_type=event_type,
            occurred_at=message.created_at,
            data=guard_payload(message.destination, message.payload, phi_allowed=phi_allowed),
        )
        delivery, retry_after = webhook_send(
            endpoint=endpoint,
            target=target,
            webhook_id=f"msg_{message.parent_id or message.pk}",
            event_type=event_type,
            body=body,
            message_id=message.pk,
            attempt=message.attempts + 1,
        )
        result = DeliveryResult(status_code=delivery.status_code, latency_ms=delivery.latency_ms)
        if delivery.succeeded:
            _note_success(endpoint)
            return result
        if delivery.status_code == 410:
            endpoint_disable(endpoint=endpoint, reason="410 Gone", actor=Actor.system("webhooks"), by_system=True)
            raise PermanentDeliveryError("410 Gone: endpoint disabled", status_code=410)
        _note_failure(endpoint, delivery.at)
        raise TransientDeliveryError(delivery.error, status_code=delivery.status_code, retry_after=retry_after)
