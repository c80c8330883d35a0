"""The conflict policy: which source may write which of a contact's fields, and when.

Fields fall into groups. Per group, sources have a rank: a higher rank wins over a lower one
whatever the time; between equal ranks the newer source timestamp wins. A write that loses is
*stale*: the caller records it on the timeline and does not apply it. What each group last
saw (source, rank, time) is kept in Contact.group_timestamps, and `stamp` is the one way a
write records itself there: contact_sync (through `resolve`) for what it applies, a staff edit
for what it changes, the inbound timeline batch (through `resolve`) for its events.

The identifiers a write names the contact by (email, external_id) are not weighed: they find
the contact whatever the policy says, one it lacks is filled in, and they stamp nothing (else
every event would stamp the identity group, and a login would make an older name change
stale). The identity group's stamp is moved by writes of its other fields, and staff edits.

Seed 002: the app wins engagement fields; the CRM side (staff, outside CRMs) wins the health
profile. Identity and marketing fields go to whoever wrote last.

Staff are the CRM itself. Their edits (contacts.services.contact_update and contact_create:
the admin, the contacts API) are source "staff", made at the time of the edit, and are always
applied: a person looked at the record and decided. They only stamp the groups of the fields
they change, so what the policy decides is what later writes may do to them:
- engagement: the app ranks above outside CRMs and marketing tools because it sees engagement
  live; a staff edit is a live correction made in the CRM, so it ranks with the app. Between
  them time decides: an app event older than the edit is stale for the group, a newer one wins
  as before. Outside CRMs and marketing tools overwrite neither.
- health_profile: staff rank with outside CRMs (the CRM side); time decides between them, and
  the app never overwrites either.
- identity, marketing: every source ranks the same; the newer write wins.

Staleness is per group, as issue 5 words it ("older than the stored state for a field group"):
one stamp stands for the whole group. So two events writing *different* fields of one group
close together end differently by arrival order: an onboarding at t-1 applied before a login
at t-2 makes the login stale (last_login_at stays as it was), the other order applies both.
Per-field stamps would remove that at the price of a stamp per field (and a merge comparing
them); the group rule is kept because it is the one specified and what staff are shown.

"staff" is not a source an API client can name on an event (integrations.inbound accepts
app, crm, marketing), so no event can claim a staff edit's rank; and only a key with the scope
events:sources (an outside tool's connector) may name crm or marketing, so the app's own key
cannot claim the CRM side's rank on the health profile.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

FIELD_GROUPS: dict[str, frozenset[str]] = {
    "identity": frozenset(
        {
            "email",
            "external_id",
            "first_name",
            "last_name",
            "phone",
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
    # Seed 002's "health profile (age, height): CRM data wins": the contact holds the age (its
    # date of birth); the coaching app's health profile registers its fields here when it arrives.
    "health_profile": frozenset({"date_of_birth"}),
}

# Sources: "app" (the company's app and website), "crm" (outside CRMs such as HubSpot or
# Salesforce), "marketing" (Klaviyo and other marketing tools), and STAFF (edits made in this
# CRM, in the admin or through the contacts API; see the module's docstring).
STAFF = "staff"
RANKS: dict[str, dict[str, int]] = {
    "identity": {},
    "engagement": {"app": 2, STAFF: 2},
    "marketing": {},
    "health_profile": {"crm": 2, STAFF: 2},
}
DEFAULT_RANK = 1


def group_of(field: str) -> str | None:
    for group, fields in FIELD_GROUPS.items():
        if field in fields:
            return group
    return None


def rank(group: str, source: str) -> int:
    return RANKS.get(group, {}).get(source, DEFAULT_RANK)


def stamp(stamps: dict[str, Any], *, source: str, occurred_at: dt.datetime, fields: Iterable[str]) -> dict[str, Any]:
    """A copy of `stamps` in which every group of `fields` was last written by `source` at
    `occurred_at`. Which fields a write stamps is its caller's: what it applied (a sync) or
    what it changed (a staff edit)."""
    new_stamps = dict(stamps)
    for group in {group_of(name) or "identity" for name in fields}:
        new_stamps[group] = {"source": source, "rank": rank(group, source), "at": occurred_at.isoformat()}
    return new_stamps


def resolve(
    *, stamps: dict[str, Any], source: str, occurred_at: dt.datetime, fields: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split `fields` into (applied, stale) by the policy and return the new stamps.

    `stamps` is Contact.group_timestamps: {group: {"source", "rank", "at"}}."""
    applied: dict[str, Any] = {}
    stale: dict[str, Any] = {}
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
    return applied, stale, stamp(stamps, source=source, occurred_at=occurred_at, fields=applied)
