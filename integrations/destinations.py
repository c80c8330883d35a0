"""The destination registry: where outbox messages go.

A destination adapter says which topics it wants, how to fan a message out (one target for
most providers, one per endpoint for webhooks), how to deliver one row, and its retry policy.
Adding a provider (HubSpot, Klaviyo, ...) is a new adapter and one `register_destination` line
in its AppConfig.ready().
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from celery.exceptions import SoftTimeLimitExceeded

if TYPE_CHECKING:
    from crm_platform.models import OutboxMessage

# Seconds to wait after the 1st, 2nd, ... failed attempt; after the last one fails: dead.
DEFAULT_RETRY_SCHEDULE: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 300, 1800, 7200, 18000, 36000, 36000)


@dataclass(frozen=True)
class DeliveryResult:
    status_code: int | None = None
    latency_ms: int | None = None
    detail: str = ""


class DeliveryError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class TransientDeliveryError(DeliveryError):
    """Worth retrying: network error, timeout, 429, 5xx. `retry_after` (seconds) lengthens the wait."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: int | None = None):
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class TargetUnreachableError(TransientDeliveryError):
    """The target did not answer (a timeout, a refused connection): retried like any transient
    error, and the relay leaves the target's other rows alone until this row's next attempt
    (outbox_deliver_batch), so a hanging target costs one timeout, not one per queued row."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help (4xx, target gone or refused): the row goes dead at once."""


class DeferDelivery(Exception):
    """Not now (e.g. the target's rate limit): try again in `seconds`, without counting an attempt."""

    def __init__(self, seconds: int):
        super().__init__(f"deferred {seconds}s")
        self.seconds = seconds


@runtime_checkable
class Destination(Protocol):
    name: str
    topics: frozenset[str] | None  # None: every topic
    retry_schedule: Sequence[int]

    def targets(self, messages: Sequence[OutboxMessage]) -> dict[int, list[str]]:
        """For a batch of unrouted messages: message id -> the destination values of the rows
        to write for it (missing or empty: this destination does not want it)."""

    def deliver(self, message: OutboxMessage) -> DeliveryResult:
        """Deliver one routed row. Raises TransientDeliveryError (TargetUnreachableError when the
        target did not answer), PermanentDeliveryError or DeferDelivery; lets through whatever
        stops the task (task_stopping)."""


class BaseDestination:
    """One target per wanted topic: the adapter's own name.

    Optional batch hooks: the relay calls `batch_begin(rows)` before delivering a claimed batch
    and `batch_end()` after, in the batch's transaction, so an adapter can load what its rows
    need in one query and write its own records (delivery logs) in one INSERT.
    `savepoint_per_attempt`: each attempt runs under a savepoint, so an adapter that breaks
    half-way through its own writes loses them and fails only its row. An adapter that writes
    nothing per row on its common path may turn it off to spare two round trips a row; a
    database error inside it then fails the whole batch, whose rows come back (at-least-once)."""

    name = ""
    topics: frozenset[str] | None = None
    retry_schedule: Sequence[int] = DEFAULT_RETRY_SCHEDULE
    savepoint_per_attempt = True

    def targets(self, messages: Sequence[OutboxMessage]) -> dict[int, list[str]]:
        return {m.pk: [self.name] for m in messages if self.topics is None or m.topic in self.topics}

    def batch_begin(self, messages: Sequence[OutboxMessage]) -> None:
        """Before a batch of this adapter's rows is delivered."""

    def batch_end(self) -> None:
        """After the batch, in its transaction (also when some rows failed)."""


def task_stopping(exc: BaseException) -> bool:
    """Whether `exc` stops the running task rather than reports a delivery or an adapter's bug:
    Celery's soft time limit (an Exception, raised by a signal handler wherever the task happens
    to be) and every BaseException that is no Exception (shutdown, Ctrl-C). The relay then ends
    its batch, keeps what it did, and lets the stop go on; an adapter must never swallow one."""
    return isinstance(exc, SoftTimeLimitExceeded) or not isinstance(exc, Exception)


_registry: dict[str, Destination] = {}


def register_destination(destination: Destination) -> None:
    """Add (or replace, by name) a destination. Names hold no colon: "webhook:12" means the
    "webhook" adapter, target 12."""
    if not destination.name or ":" in destination.name:
        raise ValueError(f"bad destination name {destination.name!r}")
    _registry[destination.name] = destination


def unregister_destination(name: str) -> None:
    _registry.pop(name, None)


def destinations() -> list[Destination]:
    return list(_registry.values())


def destination_for(value: str) -> Destination | None:
    """The adapter behind a row's destination value ("webhook:12" -> the webhook adapter)."""
    return _registry.get(value.split(":", 1)[0])


def retry_schedule(destination: Destination | None) -> Sequence[int]:
    """The waits (seconds) between a destination's attempts; the default for one unregistered."""
    return destination.retry_schedule if destination is not None else DEFAULT_RETRY_SCHEDULE


def retry_delay(destination: Destination | None, attempts: int) -> int | None:
    """Seconds before the next attempt after `attempts` failed ones; None when the schedule is spent."""
    schedule = retry_schedule(destination)
    return schedule[attempts - 1] if 1 <= attempts <= len(schedule) else None
