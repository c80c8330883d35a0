"""Reads of contacts: search, filtered lists, timelines, likely duplicates."""

from __future__ import annotations

import re

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Lower

from contacts.models import Activity, Contact

_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{6,}$")


def contact_search_q(query: str) -> Q:
    """A filter for `?q=`: an email (or its prefix), a phone (or its prefix), or name prefixes
    ("ann" matches first or last name; "ann lee" matches first and last). Every branch is
    served by a prefix index: no LIKE '%x%' scans."""
    query = query.strip()
    if not query:
        return Q()
    if "@" in query:
        return Q(email__startswith=query.lower())
    if _PHONE_LIKE.match(query):
        digits = re.sub(r"\D", "", query)
        return Q(phone__startswith=f"+{digits}") | Q(phone__startswith=f"+1{digits}")
    words = query.lower().split()
    if len(words) == 1:
        word = words[0]
        return Q(first_lower__startswith=word) | Q(last_lower__startswith=word) | Q(email__startswith=word)
    first, last = words[0], " ".join(words[1:])
    return Q(first_lower__startswith=first, last_lower__startswith=last) | Q(
        first_lower__startswith=last, last_lower__startswith=first
    )


def contact_search(queryset: QuerySet[Contact], query: str) -> QuerySet[Contact]:
    if not query.strip():
        return queryset
    return queryset.alias(first_lower=Lower("first_name"), last_lower=Lower("last_name")).filter(
        contact_search_q(query)
    )


def contact_list(*, include_archived: bool = False, related: bool = True) -> QuerySet[Contact]:
    queryset = Contact.objects.select_related("owner", "company") if related else Contact.objects.all()
    return queryset if include_archived else queryset.filter(is_archived=False)


def contact_timeline(*, contact: Contact) -> QuerySet[Activity]:
    return Activity.objects.filter(contact=contact).order_by("-occurred_at", "-id")


_DUPLICATE_PAIRS = {
    "same phone": "a.phone <> '' AND a.phone = b.phone",
    "same name and date of birth": (
        "a.date_of_birth IS NOT NULL AND a.last_name <> '' AND a.date_of_birth = b.date_of_birth "
        "AND lower(a.first_name) = lower(b.first_name) AND lower(a.last_name) = lower(b.last_name)"
    ),
}


def contact_duplicates(*, limit: int = 200) -> list[dict]:
    """Pairs that are likely one person: the same phone, or the same name and date of birth.
    Pairs staff dismissed are left out. One query per criterion, then one to load the rows."""
    from django.db import connection

    pairs: dict[tuple[int, int], set[str]] = {}
    with connection.cursor() as cursor:
        for reason, condition in _DUPLICATE_PAIRS.items():
            cursor.execute(
                f"""
                SELECT a.id, b.id FROM contacts_contact a
                  JOIN contacts_contact b ON a.id < b.id AND {condition}
                 WHERE NOT a.is_archived AND NOT b.is_archived
                   AND NOT EXISTS (SELECT 1 FROM contacts_contactduplicatedismissal d
                                    WHERE d.first_id = a.id AND d.second_id = b.id)
                 ORDER BY a.id, b.id LIMIT %s
                """,  # noqa: S608 - the conditions are the literals above
                [limit],
            )
            for first, second in cursor.fetchall():
                pairs.setdefault((first, second), set()).add(reason)
    contacts = Contact.objects.in_bulk({cid for pair in pairs for cid in pair})
    return [
        {"first": contacts[a], "second": contacts[b], "reasons": sorted(reasons)}
        for (a, b), reasons in sorted(pairs.items())
    ][:limit]


def lifecycle_stage_counts() -> list[tuple[str, int]]:
    """Contacts per lifecycle stage (not archived), in funnel order; cached five minutes, since
    on a million contacts this is a full index scan."""
    from django.core.cache import cache

    from contacts.lifecycle import Stage

    def compute():
        counts = dict(
            Contact.objects.filter(is_archived=False)
            .order_by()
            .values_list("lifecycle_stage")
            .annotate(n=Count("id"))
            .values_list("lifecycle_stage", "n")
        )
        return [(stage.label, counts.get(stage.value, 0)) for stage in Stage]

    try:
        return cache.get_or_set("dashboard:lifecycle_stage_counts", compute, timeout=300)
    except Exception:  # Redis down: compute without the cache
        return compute()


def activity_types() -> list[str]:
    """The distinct activity types, by a recursive skip scan of the (type, occurred_at) index."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE t(type) AS (
                (SELECT type FROM contacts_activity ORDER BY type LIMIT 1)
                UNION ALL
                SELECT (SELECT a.type FROM contacts_activity a WHERE a.type > t.type ORDER BY a.type LIMIT 1)
                  FROM t WHERE t.type IS NOT NULL
            )
            SELECT type FROM t WHERE type IS NOT NULL LIMIT 500
            """
        )
        return [row[0] for row in cursor.fetchall()]
