"""The conflict policy: which source may write which of a contact's fields, and when.

Fields fall into groups. Per group, sources have a rank: a higher rank wins over a lower one
whatever the time; between equal ranks the newer source timestamp wins. A write that loses is
*stale*: the caller records it on the timeline and does not apply it. What each group last
saw (source, rank, time) is kept in Contact.group_timestamps.

Seed 002: the app wins engagement fields; the CRM side (staff, outside CRMs) wins the health
profile. Identity and marketing fields go to whoever wrote last.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

FIELD_GROUPS: dict[str, frozenset[str]] = {
    "identity": frozenset(
        {
            "email",
            "external_id",
            "first_name",
            "last_name",
            "phone",
            "date_of_birth",
            "address_line1",
            "address_line2",
            "city",
            "region",
            "postal_code",
            "country",
            "time_zone",
            "language",
        }
    ),
    "engagement": frozenset(
        {"last_login_at", "last_active_at", "engagement_tier", "onboarding_status", "is_paid", "churn_risk"}
    ),
    "marketing": frozenset({"source", "tags", "properties", "company", "company_id", "owner", "owner_id"}),
    # The coaching app's health profile registers its fields here when it arrives.
    "health_profile": frozenset(),
}

# Sources: "app" (the company's app and website), "crm" (staff in the admin or API, and outside
# CRMs such as HubSpot or Salesforce), "marketing" (Klaviyo and other marketing tools).
RANKS: dict[str, dict[str, int]] = {
    "identity": {},
    "engagement": {"app": 2},
    "marketing": {},
    "health_profile": {"crm": 2},
}
DEFAULT_RANK = 1


def group_of(field: str) -> str | None:
    for group, fields in FIELD_GROUPS.items():
        if field in fields:
            return group
    return None


def rank(group: str, source: str) -> int:
    return RANKS.get(group, {}).get(source, DEFAULT_RANK)


def resolve(
    *, stamps: dict[str, Any], source: str, occurred_at: dt.datetime, fields: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split `fields` into (applied, stale) by the policy and return the new stamps.

    `stamps` is Contact.group_timestamps: {group: {"source", "rank", "at"}}."""
    applied: dict[str, Any] = {}
    stale: dict[str, Any] = {}
    new_stamps = dict(stamps)
    by_group: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        by_group.setdefault(group_of(name) or "identity", {})[name] = value
    for group, values in by_group.items():
        incoming = rank(group, source)
        stored = stamps.get(group)
        if stored is not None:
            stored_at = dt.datetime.fromisoformat(stored["at"])
            if incoming < stored["rank"] or (incoming == stored["rank"] and occurred_at < stored_at):
                stale.update(values)
                continue
        applied.update(values)
        new_stamps[group] = {"source": source, "rank": incoming, "at": occurred_at.isoformat()}
    return applied, stale, new_stamps
