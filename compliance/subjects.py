"""The data-subject registry: where each app says which of its rows are about a person, and
how to export and erase them.

Compliance imports no domain app: each app declares, in its AppConfig.ready(),

    register_subject_model("contacts.Contact", email="email", phone="phone",
                           external_id="external_id", merged_into="merged_into")
    register_subject_data("contacts.Activity")                          # contact FK, delete
    register_subject_data("leads.Deal", erase="anonymise")              # keep the amount, drop the person
    register_subject_data("leads.LeadStatusChange", contact_path="lead__contact")
    register_subject_data("contacts.ExternalRef", erase=my_callable, export=my_exporter)

`contact_path` is the ORM path from a row to the contact's id ("contact" by default). `erase`:
- "delete": one set-based DELETE of the person's rows;
- "anonymise": the model's personal fields (compliance.registry) are blanked and the link to
  the contact is set to NULL (it must be nullable), one UPDATE;
- a callable `erase(*, contact_ids, actor)` for anything else (generic relations, files),
  returning the rows it erased: a number, or {"app_label.model": rows} when it erases in more
  than one table (an object and the provider ids pointing at it).
`export`: True (the rows' concrete fields), False (nothing: the rows hold nothing about the
person beyond what other tables export), or a callable `export(*, contact_ids) -> list[dict]`.
Erasure runs the registrations in order (register children before their parents when a
CASCADE would otherwise do the work row by row) and deletes the contact rows last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ERASE_DELETE = "delete"
ERASE_ANONYMISE = "anonymise"


@dataclass(frozen=True)
class SubjectData:
    model_label: str
    contact_path: str = "contact"
    erase: str | Callable[..., int | dict[str, int]] = ERASE_DELETE
    export: bool | Callable[..., list[dict[str, Any]]] = True


@dataclass(frozen=True)
class SubjectModel:
    model_label: str
    email: str = "email"
    phone: str = "phone"
    external_id: str = "external_id"
    merged_into: str | None = None
    # refs(*, contact_ids) -> [{"provider", "object_type", "external_id"}]: the person's ids at
    # providers, sent (encrypted) with contact.deleted so each provider can find its copy.
    refs: Callable[..., list[dict[str, str]]] | None = None
    # payload(contact) -> dict: what destinations hear of the person (the `contact.updated`
    # payload), sent when a restriction of processing is lifted (compliance.consent).
    payload: Callable[[Any], dict[str, Any]] | None = None


_data: dict[str, SubjectData] = {}
_subject: list[SubjectModel] = []


def register_subject_model(
    model_label: str,
    *,
    email: str = "email",
    phone: str = "phone",
    external_id: str = "external_id",
    merged_into: str | None = None,
    refs: Callable[..., list[dict[str, str]]] | None = None,
    payload: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """Declare the model whose rows are the people (one per installation: contacts.Contact)
    and the fields that identify them (hashed into the suppression list on erasure)."""
    _subject[:] = [SubjectModel(model_label.lower(), email, phone, external_id, merged_into, refs, payload)]


def register_subject_data(
    model_label: str,
    *,
    contact_path: str = "contact",
    erase: str | Callable[..., int | dict[str, int]] = ERASE_DELETE,
    export: bool | Callable[..., list[dict[str, Any]]] = True,
) -> None:
    """Declare rows of `model_label` ("app_label.ModelName") as being about the contact they
    reach through `contact_path`, with their erasure and export handlers."""
    if isinstance(erase, str) and erase not in (ERASE_DELETE, ERASE_ANONYMISE):
        raise ValueError(f"{model_label}: erase is 'delete', 'anonymise' or a callable, not {erase!r}")
    _data[model_label.lower()] = SubjectData(model_label.lower(), contact_path, erase, export)


def subject_model() -> SubjectModel:
    if not _subject:
        raise LookupError("no app registered the data-subject model (register_subject_model)")
    return _subject[0]


def subject_data() -> list[SubjectData]:
    """Every registration, in registration order."""
    return list(_data.values())


def is_registered(model_label: str) -> bool:
    label = model_label.lower()
    return label in _data or any(s.model_label == label for s in _subject)
