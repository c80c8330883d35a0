"""Outbound webhooks per Standard Webhooks: secrets, signatures, the SSRF guard, one HTTP send,
and the destination adapter that fans outbox messages out to endpoints."""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import certifi
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.module_loading import import_string
from redis.exceptions import RedisError

from compliance.crypto import hmac_digest
from compliance.guard import guard_payload, phi_field_names
from crm_platform.actor import Actor
from crm_platform.api.fastjson import json_leaves
from crm_platform.api.throttling import sliding_window_hits_members
from crm_platform.models import OutboxMessage
from crm_platform.outbox import outbox_open
from integrations.destinations import (
    BaseDestination,
    DeferDelivery,
    DeliveryResult,
    PermanentDeliveryError,
    TargetUnreachableError,
    TransientDeliveryError,
    task_stopping,
)
from integrations.events import event_type_for, event_types_for
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


def signatures(endpoint: WebhookEndpoint, webhook_id: str, timestamp: int, body: str) -> str:
    """The endpoint's `webhook-signature` header: the current secret's signature and, while a
    rotation's overlap lasts, the previous secret's too (space-separated; a receiver accepts
    the message when any of them verifies with its secret)."""
    value = sign(endpoint.secret, webhook_id, timestamp, body)
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and timestamp < until.timestamp():
        value += " " + sign(endpoint.previous_secret, webhook_id, timestamp, body)
    return value


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


class LookupTimedOutError(OSError):
    """The host name lookup took longer than WEBHOOK_DNS_TIMEOUT_SECONDS."""


# getaddrinfo has no timeout of its own (the system resolver's retries can take tens of seconds,
# and a relay batch or an API request would wait them out): each lookup runs on a daemon thread
# of its own and is waited for WEBHOOK_DNS_TIMEOUT_SECONDS. A lookup that overruns finishes on
# its thread in the background; callers asking for the same name meanwhile wait on that same
# lookup rather than starting more, so a name server that stops answering costs one thread per
# name, and never delays the lookup of another name.
_lookups: dict[tuple[str, int], concurrent.futures.Future] = {}
MAX_LOOKUPS_IN_FLIGHT = 64
_lookups_lock = threading.Lock()


def _lookup(host: str, port: int) -> list[str]:
    """The resolver's answer for `host`, or LookupTimedOutError after the DNS timeout. An
    address is its own answer, with no thread (nor a place among the lookups in flight)."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    resolver = _resolver()
    with _lookups_lock:
        future = _lookups.get((host, port))
        if future is None:
            if len(_lookups) >= MAX_LOOKUPS_IN_FLIGHT:  # that many names hang already: no more threads
                raise LookupTimedOutError(host)
            future = concurrent.futures.Future()
            try:
                threading.Thread(
                    target=_run_lookup, args=(resolver, host, port, future), name="webhook-dns", daemon=True
                ).start()
            except RuntimeError:  # no thread to be had: as a lookup that did not answer
                raise LookupTimedOutError(host) from None
            _lookups[(host, port)] = future
    try:
        return future.result(timeout=float(_setting("WEBHOOK_DNS_TIMEOUT_SECONDS", 5)))
    except concurrent.futures.TimeoutError:
        raise LookupTimedOutError(host) from None


def _run_lookup(resolver, host: str, port: int, future: concurrent.futures.Future) -> None:
    try:
        future.set_result(resolver(host, port))
    except BaseException as exc:
        future.set_exception(exc)
    finally:
        with _lookups_lock:
            if _lookups.get((host, port)) is future:
                del _lookups[(host, port)]


# A name may resolve to several addresses (IPv6 and IPv4, several hosts): a send whose connection
# fails before anything was sent tries the next checked one, up to this many in all.
MAX_ADDRESSES = 3


@dataclass(frozen=True)
class PinnedTarget:
    """Where one delivery goes: `url` names the checked address instead of the host, `host`
    is the Host header (the name, with the URL's port), `server_name` the TLS name.
    `alternates`: the other checked addresses, in the resolver's order, for a connection that
    fails (`at`)."""

    url: str
    host: str
    server_name: str
    address: str
    scheme: str = "http"
    port: int = 80
    path: str = "/"  # path and query
    alternates: tuple[str, ...] = ()

    def at(self, address: str) -> PinnedTarget:
        """The same target pinned to another of its checked addresses."""
        if address not in self.alternates:
            raise ValueError("not one of the target's checked addresses")
        return replace(self, url=_pinned_url(self.url, self.address, address), address=address, alternates=())


def _refused(message: str, code: str) -> ValidationError:
    return ValidationError({"url": [ValidationError(message, code=code)]})


def _ascii_host(hostname: str) -> str:
    """The host name as it goes on the wire (DNS, the Host header, TLS SNI): an internationalised
    name in its IDNA (punycode) form, as the system resolver looks it up. Raises ValidationError
    (code "scheme") for a name that has none."""
    if hostname.isascii():
        return hostname
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise _refused("The host name is not a valid internationalised domain name.", "scheme") from None


# IPv6 prefixes that carry an IPv4 address in their last 32 bits and reach it through a
# translator (NAT64: RFC 6052, RFC 8215) or, for the deprecated IPv4-compatible form, the stack.
# Python counts them global whatever they embed, so 64:ff9b::a9fe:a9fe reached 169.254.169.254
# through a NAT64 gateway: the embedded address must be global too.
_EMBEDDING_IPV4 = tuple(ipaddress.ip_network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96"))


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether we may call `address` in production: global and not multicast, and so is any
    IPv4 address it carries (IPv4-mapped, 6to4, Teredo, NAT64, IPv4-compatible)."""
    if not address.is_global or address.is_multicast:
        return False
    if address.version == 6:
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if any(address in net for net in _EMBEDDING_IPV4):
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return all(_is_public(ipv4) for ipv4 in embedded if ipv4 is not None)
    return True


def url_resolve(url: str) -> PinnedTarget:
    """Resolve the URL's host once, check every address (unless private targets are allowed)
    and pin the first: the connection then goes to exactly the address we checked, so DNS
    that changes between check and connect (rebinding) cannot reach a private address.
    Raises ValidationError: code "scheme", "unresolvable", "lookup_timeout" or "private"."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused("Enter an http(s) URL with a host.", "scheme")
    hostname = _ascii_host(parts.hostname)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = _lookup(hostname, port)
    except LookupTimedOutError:
        raise _refused("The host name lookup timed out; try again later.", "lookup_timeout") from None
    except (OSError, UnicodeError, ValueError):
        addresses = []
    if not addresses:
        raise _refused("The host does not resolve.", "unresolvable")
    if not allow_private_targets():
        for value in addresses:
            if not _is_public(ipaddress.ip_address(value)):
                raise _refused("The host resolves to a private or reserved address.", "private")
    address, *alternates = addresses[:MAX_ADDRESSES]
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if not hostport.isascii():  # an internationalised name: the Host header carries its IDNA form
        hostport = hostname + (f":{parts.port}" if parts.port is not None else "")
    netloc = f"{userinfo}@{_literal(address)}:{port}" if userinfo else f"{_literal(address)}:{port}"
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return PinnedTarget(
        url=urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        host=hostport,
        server_name=hostname,
        address=address,
        scheme=parts.scheme,
        port=port,
        path=path,
        alternates=tuple(alternates),
    )


def _literal(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _pinned_url(url: str, old: str, new: str) -> str:
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    hostport = _literal(new) + hostport.removeprefix(_literal(old))
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}" if userinfo else hostport))


def url_audited(url: str) -> str:
    """What the audit log keeps of an endpoint's URL: its origin and a keyed digest of the
    whole. Receivers often carry a secret in the path or the query (a token), and audit rows
    are kept for ever and served by the audit API."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}/… (digest {hmac_digest(url)[:16]})"


def url_check(url: str) -> None:
    """Refuse URLs we must not call: not http(s), no host, or (unless private targets are
    allowed, as in development and tests) a host resolving to a private, loopback,
    link-local, reserved or multicast address. Raises ValidationError. Deliveries check
    again, and pin what they checked (url_resolve)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"url": ["Enter an http(s) URL with a host."]})
    if parts.username is not None or parts.password is not None:
        # Never sent (deliveries authenticate by their signature), and kept in plain text.
        raise ValidationError({"url": ["Credentials in the URL (user:password@) are not accepted."]})
    try:
        port_ok = parts.port is None or 0 < parts.port
    except ValueError:  # beyond 65535, or not a number
        port_ok = False
    if not port_ok:
        raise ValidationError({"url": ["The port must be a number from 1 to 65535."]})
    _ascii_host(parts.hostname)  # a name with no IDNA form could never be sent to
    if allow_private_targets():
        return
    url_resolve(url)


# ----------------------------------------------------------------------------- one send


class _Send:
    """One send under way in this thread, and when it must be over."""

    __slots__ = ("conn", "deadline", "expired")

    def __init__(self, deadline: float):
        self.deadline, self.conn, self.expired = deadline, None, False


class SendDeadlinePassedError(TimeoutError):
    """The send's deadline passed before its request went out (a slow TLS handshake)."""


_sending = threading.local()  # .send: the _Send of this thread, while one is under way


class _Deadlines:
    """Ends sends that outlast WEBHOOK_TIMEOUT_SECONDS in all. urllib3's read timeout bounds
    each read, not the answer: a receiver sending its status line a byte at a time could hold
    a send, and the relay behind it, as long as it liked. One thread per process watches the
    sends under way; at a send's deadline it marks it expired and shuts down the socket of the
    connection carrying it, if that connection still carries it (a connection back in the pool,
    or taken by another thread's send, is left alone). A connection that has not been claimed
    yet refuses to go on once it is (`claim`). The thread sleeps until the nearest deadline,
    and a send wakes it only when its deadline is nearer than that (rarely: deadlines grow)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._sends: dict[int, _Send] = {}
        self._pid: int | None = None
        self._sleeping_until: float | None = None  # None: until told

    def watch(self, send: _Send) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first use in this process (a worker forked after import)
                self._sends, self._sleeping_until = {}, None
                threading.Thread(target=self._run, name="webhook-deadlines", daemon=True).start()
                self._pid = os.getpid()  # only once it runs: a failed start is tried again next send
            self._sends[id(send)] = send
            if self._sleeping_until is None or send.deadline < self._sleeping_until:
                self._cond.notify()

    def unwatch(self, send: _Send) -> None:
        with self._cond:
            self._sends.pop(id(send), None)

    def claim(self, conn) -> None:
        """`conn` now carries this thread's send (if one is under way); raises
        SendDeadlinePassedError when that send's deadline has already passed."""
        send = getattr(_sending, "send", None)
        if send is None:
            return
        with self._cond:
            send.conn, conn._webhook_send = conn, send
            if send.expired:
                raise SendDeadlinePassedError("webhook send deadline passed")

    def release(self, conn) -> None:
        """`conn` went back to its pool: it carries no send any more."""
        with self._cond:
            conn._webhook_send = None

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                try:
                    for key, send in list(self._sends.items()):
                        if send.deadline <= now:
                            del self._sends[key]
                            self._expire(send)
                except Exception:  # never let the watch end: every later send would go unbounded
                    logger.exception("webhook deadline watch failed; going on")
                self._sleeping_until = min((send.deadline for send in self._sends.values()), default=None)
                self._cond.wait(None if self._sleeping_until is None else self._sleeping_until - now)

    @staticmethod
    def _expire(send: _Send) -> None:
        send.expired = True
        conn = send.conn
        sock = getattr(conn, "sock", None) if getattr(conn, "_webhook_send", None) is send else None
        if sock is not None:
            with contextlib.suppress(OSError):
                # socket.socket's own shutdown: an SSLSocket's would also drop its TLS state
                # under the sending thread's feet.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # its blocked read returns at once


_deadlines = _Deadlines()


def _after_fork_in_child() -> None:
    """A child forked while another thread held a lock here gets fresh ones (and no threads)."""
    global _lookups, _lookups_lock
    _lookups, _lookups_lock = {}, threading.Lock()
    _deadlines.__init__()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _WatchedConnectionMixin:
    """Claims the connection for the thread's send when it connects (an https connection
    connects and shakes hands before its request) and when a request goes out on it."""

    _webhook_send = None

    def connect(self):
        _deadlines.claim(self)
        super().connect()
        _deadlines.claim(self)  # the deadline may have passed during the handshake

    def request(self, *args, **kwargs):
        _deadlines.claim(self)
        return super().request(*args, **kwargs)


class _WatchedPoolMixin:
    def _put_conn(self, conn) -> None:
        if conn is not None:
            _deadlines.release(conn)
        super()._put_conn(conn)


class _HTTPPool(_WatchedPoolMixin, urllib3.HTTPConnectionPool):
    ConnectionCls = type("WatchedHTTPConnection", (_WatchedConnectionMixin, urllib3.connection.HTTPConnection), {})


class _HTTPSPool(_WatchedPoolMixin, urllib3.HTTPSConnectionPool):
    ConnectionCls = type("WatchedHTTPSConnection", (_WatchedConnectionMixin, urllib3.connection.HTTPSConnection), {})


# One pool manager per process: keep-alive connections are reused per (address, port, TLS name).
# urllib3 directly rather than requests: the relay sends hundreds a second, and requests' own
# layers (request preparation, hooks, environment lookups) cost more than the send itself.
_pools = urllib3.PoolManager(num_pools=50, maxsize=4, retries=False, ca_certs=certifi.where())
_pools.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _pool_for(target: PinnedTarget):
    """The connection pool for the pinned address. For https the TLS SNI and the certificate
    check use the host name (part of the pool key), while the socket goes to the address."""
    tls = {
        "server_hostname": target.server_name,
        "assert_hostname": target.server_name,
        "ca_certs": _setting("WEBHOOK_CA_BUNDLE", "") or certifi.where(),
    }
    return _pools.connection_from_host(
        target.address, target.port, target.scheme, pool_kwargs=tls if target.scheme == "https" else None
    )


# An address that did not connect is tried last for a while, so the messages after the first
# (a relay batch, the next batches) do not each spend their connect budget on it first.
UNREACHABLE_SECONDS = 60.0
MIN_CONNECT_SECONDS = 0.5
_unreachable: dict[tuple[str, int], float] = {}  # (address, port) -> tried last until (monotonic)


def _in_order(target: PinnedTarget) -> list[PinnedTarget]:
    """The target at each of its checked addresses, the resolver's order kept except that
    addresses which recently did not connect come last."""
    now = time.monotonic()
    pinned = [target, *(target.at(address) for address in target.alternates)]
    return sorted(pinned, key=lambda t: _unreachable.get((t.address, t.port), 0.0) > now)


def _post(pinned: list[PinnedTarget], body: bytes, headers: dict[str, str], started: float):
    """POST to the first of `pinned` that connects, the addresses sharing one connect budget;
    the response, or the last address's ConnectTimeoutError (NewConnectionError included).
    An address that did not connect has sent nothing, so trying the next cannot send twice."""
    deadline = started + timeout_seconds()
    for n, target in enumerate(pinned):
        connect = max((deadline - time.monotonic()) / (len(pinned) - n), MIN_CONNECT_SECONDS)
        try:
            response = _pool_for(target).urlopen(
                "POST",
                target.path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=connect, read=timeout_seconds()),
                preload_content=False,
            )
        except urllib3.exceptions.ConnectTimeoutError:
            _unreachable[(target.address, target.port)] = time.monotonic() + UNREACHABLE_SECONDS
            if n + 1 == len(pinned):
                raise
            continue
        _unreachable.pop((target.address, target.port), None)
        return response
    raise AssertionError("no address to try")  # _in_order always gives the target itself


def webhook_body(*, event_type: str, occurred_at, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": occurred_at.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


# The delivery log's error when nothing answered (NO_ANSWER below).
CONNECTION_FAILED, CONNECT_TIMEOUT, TIMEOUT = "connection failed", "connect timeout", "timeout"


def webhook_send(
    *,
    endpoint: WebhookEndpoint,
    target: PinnedTarget,
    webhook_id: str,
    event_type: str,
    body: str,
    message_id: int | None,
    attempt: int,
    log: list[WebhookDelivery] | None = None,
) -> tuple[WebhookDelivery, int | None]:
    """POST one signed body (signed now, with a fresh timestamp) to the pinned `target`
    (url_resolve) and log the attempt: saved now, or appended to `log` for the caller to save
    (the relay writes a batch's log in one INSERT). Never raises for the target's failures:
    returns the delivery row saying what happened, and the target's Retry-After in seconds
    when it sent one."""
    timestamp = int(time.time())
    headers = {
        "host": target.host,
        "content-type": "application/json",
        "user-agent": "crm_platform-webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures(endpoint, webhook_id, timestamp, body),
    }
    delivery = WebhookDelivery(
        endpoint=endpoint, message_id=message_id, webhook_id=webhook_id, event_type=event_type, attempt=attempt
    )
    started = time.monotonic()
    retry_after = ""
    send = _sending.send = _Send(started + timeout_seconds())
    _deadlines.watch(send)
    try:
        response = _post(_in_order(target), body.encode(), headers, started)
        try:
            excerpt = response.read(EXCERPT_CHARS)
        except (urllib3.exceptions.HTTPError, OSError):
            if not send.expired:
                raise
            excerpt = b""  # the status came in time; the body did not
        finally:
            _deadlines.unwatch(send)
            if send.expired or response.length_remaining != 0:  # more body (or no length): not worth reading
                response.close()
            response.release_conn()
        delivery.status_code = response.status
        delivery.response_excerpt = excerpt_redacted(
            excerpt.decode("utf-8", "replace"), body, medical=endpoint.may_receive_phi
        )[:EXCERPT_CHARS]
        delivery.succeeded = 200 <= response.status < 300
        retry_after = response.headers.get("retry-after", "")
        if not delivery.succeeded:
            delivery.error = f"HTTP {response.status}"
    except urllib3.exceptions.NewConnectionError:  # on every address tried
        delivery.error = CONNECTION_FAILED
    except urllib3.exceptions.ConnectTimeoutError:
        delivery.error = CONNECT_TIMEOUT
    except urllib3.exceptions.TimeoutError:
        delivery.error = TIMEOUT
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        delivery.error = TIMEOUT if send.expired else f"{type(exc).__name__}"[:EXCERPT_CHARS]
    except BaseException as exc:
        if task_stopping(exc) and log is not None:
            # Stopped mid-send (the task's soft time limit, a shutdown): the relay commits its
            # batch before the stop goes on, this attempt's log row with it, so an endpoint
            # whose answers always outlast the task still shows, and counts, as failing.
            delivery.error = "interrupted"
            delivery.latency_ms = int((time.monotonic() - started) * 1000)
            log.append(delivery)
        raise
    finally:
        _deadlines.unwatch(send)
        _sending.send = None
    delivery.latency_ms = int((time.monotonic() - started) * 1000)
    if log is None:
        delivery.save(force_insert=True)
    else:
        log.append(delivery)
    return delivery, _seconds(retry_after)


def _seconds(retry_after: str) -> int | None:
    """A Retry-After in seconds (ASCII digits; the HTTP-date form and anything else: None).
    Eleven digits or more read as 10**10 (over 300 years): int() refuses past 4,300 digits, and
    the relay caps every wait anyway (relay._fail)."""
    if not (retry_after.isascii() and retry_after.isdigit()):
        return None
    return int(retry_after) if len(retry_after) <= 10 else 10**10


REDACTED = "[redacted]"


def excerpt_redacted(excerpt: str, body: str, *, medical: bool = True) -> str:
    """The receiver's answer less every text value we sent it. Receivers often quote the body
    back ("invalid payload: {...}"): kept as is, the delivery log (30 days, plain text, shown
    to whoever reads deliveries, not covered by erasure) would hold the person's email, name
    and, for an endpoint allowed them, medical fields. A value cut off by the excerpt's end is
    caught by its prefix. `medical`: whether the body may carry medical fields (the guard
    lets them go only to an endpoint flagged for them), whose numbers and keys go too."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return excerpt
    values: set[str] = set()
    parts = _medical_parts(data) if medical else []
    for value in (*json_leaves(data), *parts):
        if isinstance(value, str) and len(value) >= 2:
            # As we sent it (JSON-escaped, ASCII) and as a receiver may write it back (UTF-8).
            values.update({value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]})
    for value in sorted(values, key=len, reverse=True):
        excerpt = excerpt.replace(value, REDACTED)
    # A medical field's numbers (scores, measurements) are medical values too: each where it
    # stands alone (not inside a longer number or word), whatever its length.
    numbers = {json.dumps(v) for v in parts if isinstance(v, int | float) and not isinstance(v, bool)}
    for number in sorted(numbers, key=len, reverse=True):
        excerpt = re.sub(rf"(?<![\w.]){re.escape(number)}(?![\w.])", REDACTED, excerpt)
    values |= {number for number in numbers if len(number) >= 2}
    for value in values:
        for cut in range(len(value) - 1, 2, -1):
            if excerpt.endswith(value[:cut]):
                return excerpt[:-cut] + REDACTED
    return excerpt


def _medical_parts(data: Any) -> list[Any]:
    """Every key and leaf inside the medical fields of `data`, at any depth (an endpoint allowed
    them received them): a medical field's keys can say as much as its values ("diabetes")."""
    medical = phi_field_names()
    found: list[Any] = []
    stack, inside = [data], []
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, sub in value.items():
                (inside if key in medical else stack).append(sub)
        elif isinstance(value, list):
            stack.extend(value)
    while inside:
        value = inside.pop()
        if isinstance(value, dict):
            found.extend(value.keys())
            inside.extend(value.values())
        elif isinstance(value, list):
            inside.extend(value)
        else:
            found.append(value)
    return found


# What webhook_send logs when nothing answered: the relay then leaves the endpoint's other
# rows alone for a while (TargetUnreachableError) instead of waiting out a timeout for each.
NO_ANSWER = frozenset({CONNECTION_FAILED, CONNECT_TIMEOUT, TIMEOUT})


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
        from compliance.notices import admin_notice_post

        logger.warning("webhook endpoint %s disabled: %s", endpoint.pk, reason)
        # Staff who manage endpoints see it on the admin index until resolved (CONTRACTS: the
        # owner is notified); an API client sees enabled false, needs_attention and the reason
        # on its endpoint, and may enable it again (PATCH enabled).
        owner = f"API key #{endpoint.owner_id}" if endpoint.owner_id else "staff"
        admin_notice_post(
            source="webhooks",
            title=disabled_notice_title(endpoint),
            body=f"{reason[:200]}. Registered by {owner}. Fix the receiver, then use the endpoint's action "
            '"Enable and replay failed deliveries, in order": its failed messages go out before any new one.',
            permission="integrations.change_webhookendpoint",
        )


def disabled_notice_title(endpoint: WebhookEndpoint) -> str:
    return f"Webhook endpoint #{endpoint.pk} was disabled"


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


# The Redis group of the endpoints' rate-limit windows (one member per endpoint).
RATE_GROUP = "webhook_rate"


class _Batch:
    """What one relay batch shares: its endpoints (one query), each URL's pinned target
    (resolved and checked once per batch), deliveries counted against rate limits, and the
    delivery log to write in one INSERT at the end."""

    def __init__(self, endpoints: dict[int, WebhookEndpoint] | None = None):
        self.endpoints = endpoints
        self.targets: dict[str, PinnedTarget | ValidationError] = {}
        self.sent: dict[int, int] = {}
        self.log: list[WebhookDelivery] | None = [] if endpoints is not None else None

    def endpoint(self, pk: int) -> WebhookEndpoint | None:
        if self.endpoints is None:
            return WebhookEndpoint.objects.filter(pk=pk).first()
        return self.endpoints.get(pk)

    def rate_wait(self, endpoint: WebhookEndpoint) -> int | None:
        """None when one more delivery to `endpoint` fits its rate limit now (it is then
        counted), else the seconds until one does. The count is one sliding window per endpoint
        in Redis, shared by every worker: counted from the delivery log, which a batch writes
        when it commits, two batches under way at once each saw none of the other's sends.
        Redis away: the log's last minute as this batch sees it, plus what it sent."""
        limit = endpoint.rate_limit_per_minute
        try:
            short = sliding_window_hits_members(RATE_GROUP, {str(endpoint.pk): 1}, limit, 60, time.time())
        except RedisError:
            logger.warning("webhook rate limits counted from the delivery log (Redis unavailable)")
        else:
            return max(1, math.ceil(short[str(endpoint.pk)][1])) if short else None
        if endpoint.pk not in self.sent:
            self.sent[endpoint.pk] = WebhookDelivery.objects.filter(
                endpoint=endpoint, at__gte=timezone.now() - timedelta(minutes=1), message_id__isnull=False
            ).count()
        if self.sent[endpoint.pk] >= limit:
            return 10
        self.sent[endpoint.pk] += 1
        return None

    def target(self, url: str) -> PinnedTarget:
        if url not in self.targets:
            try:
                self.targets[url] = url_resolve(url)
            except ValidationError as exc:
                self.targets[url] = exc
        found = self.targets[url]
        if isinstance(found, ValidationError):
            raise found
        return found


class WebhookDestination(BaseDestination):
    """Fans each message out to the enabled endpoints that want its event type: one row
    "webhook:<endpoint id>" each. Within a relay batch it reads its endpoints once and writes
    its delivery log once; the common path writes nothing per row, so no savepoint per row."""

    name = "webhook"
    retry_schedule = WEBHOOK_RETRY_SCHEDULE
    savepoint_per_attempt = False

    def __init__(self):
        self._local = threading.local()  # the current batch, per thread

    def targets(self, messages: Sequence[OutboxMessage]) -> dict[int, list[str]]:
        endpoints = list(WebhookEndpoint.objects.filter(enabled=True).values_list("pk", "event_types"))
        routed: dict[int, list[str]] = {}
        for message in messages:
            if event_types_for(message.topic, message.payload):
                routed[message.pk] = [
                    f"webhook:{pk}" for pk, types in endpoints if event_type_for(message.topic, message.payload, types)
                ]
        return routed

    def batch_begin(self, messages: Sequence[OutboxMessage]) -> None:
        pks = {int(message.destination.split(":", 1)[1]) for message in messages}
        self._local.batch = _Batch(WebhookEndpoint.objects.in_bulk(pks))

    def batch_end(self) -> None:
        batch, self._local.batch = getattr(self._local, "batch", None), None
        if batch is not None and batch.log:
            WebhookDelivery.objects.bulk_create(batch.log)

    def deliver(self, message: OutboxMessage) -> DeliveryResult:
        batch = getattr(self._local, "batch", None) or _Batch()  # outside a batch: read and write now
        endpoint = batch.endpoint(int(message.destination.split(":", 1)[1]))
        if endpoint is None:
            raise PermanentDeliveryError("endpoint deleted")
        if not endpoint.enabled:
            raise PermanentDeliveryError(f"endpoint disabled: {endpoint.disabled_reason}")
        if endpoint.rate_limit_per_minute and (wait := batch.rate_wait(endpoint)) is not None:
            raise DeferDelivery(wait)
        try:
            target = batch.target(endpoint.url)
        except ValidationError as exc:
            codes = {error.code for error in exc.error_dict["url"]}
            if codes & {"unresolvable", "lookup_timeout"}:
                _note_failure(endpoint, timezone.now())
                if "lookup_timeout" in codes:  # as a target that does not answer: its other rows wait
                    raise TargetUnreachableError("host name lookup timed out") from None
                raise TransientDeliveryError("host does not resolve") from None  # DNS may come back
            # Its host now resolves to an address we may not call: every row for it would die
            # the same way, silently. Switched off with a notice, as for a 410.
            endpoint_disable(
                endpoint=endpoint,
                reason="Its host resolves to a private or reserved address (SSRF guard)",
                actor=Actor.system("webhooks"),
                by_system=True,
            )
            raise PermanentDeliveryError("target address refused") from None
        payload = outbox_open(message.payload)
        event_type = event_type_for(message.topic, payload, endpoint.event_types) or message.topic
        phi_allowed = endpoint.phi_fields if endpoint.may_receive_phi else ()
        body = webhook_body(
            event_type=event_type,
            occurred_at=message.created_at,
            data=guard_payload(message.destination, payload, phi_allowed=phi_allowed),
        )
        try:
            delivery, retry_after = webhook_send(
                endpoint=endpoint,
                target=target,
                webhook_id=f"msg_{message.parent_id or message.pk}",
                event_type=event_type,
                body=body,
                message_id=message.pk,
                attempt=message.attempts + 1,
                log=batch.log,
            )
        except BaseException as exc:
            if task_stopping(exc):
                _note_failure(endpoint, timezone.now())  # stopped mid-send: logged as failed
            raise
        result = DeliveryResult(status_code=delivery.status_code, latency_ms=delivery.latency_ms)
        if delivery.succeeded:
            _note_success(endpoint)
            return result
        if delivery.status_code == 410:
            endpoint_disable(endpoint=endpoint, reason="410 Gone", actor=Actor.system("webhooks"), by_system=True)
            raise PermanentDeliveryError("410 Gone: endpoint disabled", status_code=410)
        _note_failure(endpoint, delivery.at)
        error = TargetUnreachableError if delivery.error in NO_ANSWER else TransientDeliveryError
        raise error(delivery.error, status_code=delivery.status_code, retry_after=retry_after)
