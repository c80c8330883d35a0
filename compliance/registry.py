"""The data classification registry.

Each app declares, in its AppConfig.ready(), which model fields hold personal data and of
which class. Compliance reads this registry and imports no domain app. The audit log uses
it to keep personal values out of audit rows; the PHI guard, export and erasure (compliance
issue) walk it too.
"""

from __future__ import annotations

PHI = "phi"
PII = "pii"
CLASSES = (PHI, PII)

_fields: dict[str, dict[str, str]] = {}


def register_personal_fields(model_label: str, fields: dict[str, str]) -> None:
    """Declare `{field_name: PHI|PII}` for a model given as "app_label.ModelName"."""
    for name, cls in fields.items():
        if cls not in CLASSES:
            raise ValueError(f"{model_label}.{name}: unknown data class {cls!r}")
    _fields.setdefault(model_label.lower(), {}).update(fields)


def personal_fields(model_label: str) -> dict[str, str]:
    return dict(_fields.get(model_label.lower(), {}))


def is_personal(model_label: str, field_name: str) -> bool:
    return field_name in _fields.get(model_label.lower(), {})


def registered_models() -> list[str]:
    return sorted(_fields)
