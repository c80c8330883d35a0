"""The PHI guard: the one function every outbound payload passes through.

Each destination registers the top-level fields it may receive. A field not on its list never
leaves, and a medical field (registered as PHI in compliance.registry, or one of the medical
names below) is dropped at any depth unless the caller names it in `phi_allowed` (a
destination that was explicitly allowed to receive it). A destination with no registered list
receives nothing. The compliance issue extends this (PII redaction for LLM prompts, admin-edited
lists); the contract stays: payload in, allowed payload out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from compliance.registry import PHI, personal_fields, registered_models

# Names that mean medical data wherever they appear, whether or not a model registered them yet.
MEDICAL_FIELD_NAMES = frozenset(
    {
        "allergies",
        "assessment",
        "blood_pressure",
        "bmi",
        "conditions",
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


def register_allow_list(destination: str, fields: Iterable[str]) -> None:
    """Declare the top-level payload fields `destination` may receive. A destination name
    "webhook" also covers "webhook:<id>" rows."""
    _allow_lists[destination] = frozenset(fields)


def allow_list(destination: str) -> frozenset[str]:
    if destination in _allow_lists:
        return _allow_lists[destination]
    return _allow_lists.get(destination.split(":", 1)[0], frozenset())


def phi_field_names() -> frozenset[str]:
    """Every field name classified as PHI by some app, plus the well-known medical names."""
    registered = {name for model in registered_models() for name, cls in personal_fields(model).items() if cls == PHI}
    return MEDICAL_FIELD_NAMES | registered


def guard_payload(destination: str, payload: dict[str, Any], *, phi_allowed: Collection[str] = ()) -> dict[str, Any]:
    """Return the part of `payload` that may leave for `destination`: its allow-listed
    top-level fields, with medical fields removed at every depth. A medical field leaves only
    when the caller names it in `phi_allowed` (the destination was explicitly allowed that
    field); `phi_allowed` cannot admit a non-medical field the list lacks. Never mutates `payload`."""
    medical = phi_field_names()
    extra = set(phi_allowed) & medical
    allowed = allow_list(destination) | extra
    blocked = medical - extra
    return {key: _scrub(value, blocked) for key, value in payload.items() if key in allowed and key not in blocked}


def _scrub(value: Any, phi: frozenset[str] | set[str]) -> Any:
    if isinstance(value, dict):
        return {key: _scrub(sub, phi) for key, sub in value.items() if key not in phi}
    if isinstance(value, list | tuple):
        return [_scrub(sub, phi) for sub in value]
    return value
