"""The PHI guard: the one function every outbound payload passes through.

Each destination registers the top-level fields it may receive. A field not on its list never
leaves, and a medical field (registered as PHI in compliance.registry, or one of the medical
names below) is dropped at any depth unless the caller names it in `phi_allowed` (a
destination that was explicitly allowed to receive it) and the destination is registered as
covered by a business associate agreement (BAA). A destination with no registered list
receives nothing. Every drop is logged (field names only, never values) and counted per
destination and field in Redis (`guard_drop_counts`, shown on the admin dashboard).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from redis.exceptions import RedisError

from compliance.registry import PHI, personal_fields, registered_models

logger = logging.getLogger(__name__)
DROPS_KEY = "compliance:guard:drops"

# Names that mean medical data wherever they appear, whether or not a model registered them yet.
MEDICAL_FIELD_NAMES = frozenset(
    {
        "allergies",
        "assessment",
        "blood_pressure",
        "bmi",
        "conditions",
        "consultation",
        "diagnosis",
        "diagnoses",
        "health_profile",
        "height",
        "lab_results",
        "labs",
        "measurements",
        "medical_history",
        "medications",
        "notes",
        "prescription",
        "prescriptions",
        "symptoms",
        "treatment",
        "treatment_plan",
        "weight",
    }
)

_allow_lists: dict[str, frozenset[str]] = {}
_baa_covered: dict[str, bool] = {}


def register_allow_list(destination: str, fields: Iterable[str], *, baa_covered: bool = False) -> None:
    """Declare the top-level payload fields `destination` may receive. A destination name
    "webhook" also covers "webhook:<id>" rows. Only a destination registered `baa_covered` can
    ever be given medical fields (`phi_allowed`); for webhooks that is the family, and each
    endpoint's own may_receive_phi flag and field list decide which endpoint gets what."""
    _allow_lists[destination] = frozenset(fields)
    _baa_covered[destination] = baa_covered


def _family(destination: str) -> str:
    return destination if destination in _allow_lists else destination.split(":", 1)[0]


def allow_list(destination: str) -> frozenset[str]:
    return _allow_lists.get(_family(destination), frozenset())


def baa_covered(destination: str) -> bool:
    return _baa_covered.get(_family(destination), False)


def phi_field_names() -> frozenset[str]:
    """Every field name classified as PHI by some app, plus the well-known medical names."""
    registered = {name for model in registered_models() for name, cls in personal_fields(model).items() if cls == PHI}
    return MEDICAL_FIELD_NAMES | registered


def guard_payload(destination: str, payload: dict[str, Any], *, phi_allowed: Collection[str] = ()) -> dict[str, Any]:
    """Return the part of `payload` that may leave for `destination`: its allow-listed
    top-level fields, with medical fields removed at every depth. A medical field leaves only
    when the caller names it in `phi_allowed` and the destination is BAA-covered (a grant to
    one that is not is refused: dropped and logged as an error); `phi_allowed` cannot admit a
    non-medical field the list lacks. Drops are logged and counted. Never mutates `payload`."""
    medical = phi_field_names()
    extra = set(phi_allowed) & medical
    if extra and not baa_covered(destination):
        logger.error("PHI refused for %s (no business associate agreement): %s", destination, ", ".join(sorted(extra)))
        extra = set()
    allowed = allow_list(destination) | extra
    blocked = medical - extra
    dropped: set[str] = set()
    guarded = {}
    for key, value in payload.items():
        if key in allowed and key not in blocked:
            guarded[key] = _scrub(value, blocked, dropped)
        else:
            dropped.add(key)
    if dropped:
        _count_drops(destination, dropped)
    return guarded


def _scrub(value: Any, phi: frozenset[str] | set[str], dropped: set[str]) -> Any:
    if isinstance(value, dict):
        kept = {}
        for key, sub in value.items():
            if key in phi:
                dropped.add(key)
            else:
                kept[key] = _scrub(sub, phi, dropped)
        return kept
    if isinstance(value, list | tuple):
        return [_scrub(sub, phi, dropped) for sub in value]
    return value


def _count_drops(destination: str, fields: set[str]) -> None:
    """Log the dropped field names and add them to the per-destination counters (best effort:
    with Redis down the log line still says it)."""
    family = _family(destination)
    logger.info("guard dropped %s for %s", ", ".join(sorted(fields)), destination)
    try:
        from crm_platform.redis import get_redis

        pipe = get_redis().pipeline(transaction=False)
        for field in fields:
            pipe.hincrby(DROPS_KEY, f"{family}|{field}", 1)
        pipe.execute()
    except RedisError:  # counters must never stop a delivery
        logger.warning("guard drop counters unavailable (Redis)")


def guard_drop_counts() -> dict[tuple[str, str], int]:
    """{(destination, field): times dropped} since the counters began (empty when Redis is down)."""
    try:
        from crm_platform.redis import get_redis

        raw = get_redis().hgetall(DROPS_KEY)
    except RedisError:  # a dashboard panel, not a reason to fail the page
        return {}
    counts = {}
    for key, value in raw.items():
        destination, _, field = key.decode().partition("|")
        counts[(destination, field)] = int(value)
    return counts
