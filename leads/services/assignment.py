"""Who owns a new lead: the assignment rules, tried in priority order."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from crm_platform.locking import locked_row
from leads.models import Lead, LeadAssignmentRule


def lead_owner_pick(*, source: str, region: str = "", country: str = ""):
    """The owner the first matching enabled rule gives a lead from `source` whose contact lives
    in `region`/`country`, or None when no rule matches or nobody has room.

    Call inside the capturing transaction: the rule that picks is locked (SELECT ... FOR UPDATE)
    while its round-robin pointer moves, so concurrent captures take turns instead of all
    landing on the same person. Owners are active staff whose profile accepts leads and who
    hold fewer open leads than their capacity."""
    places = {value.strip().lower() for value in (region, country) if value and value.strip()}
    for rule in LeadAssignmentRule.objects.filter(enabled=True).order_by("priority", "id"):
        if not _matches(rule, source=source, places=places):
            continue
        locked = locked_row(LeadAssignmentRule.objects.select_for_update(), rule.pk)
        candidates = list(_candidates(locked).values_list("pk", flat=True))
        if not candidates:
            continue
        after_last = [pk for pk in candidates if locked.last_assigned_id is not None and pk > locked.last_assigned_id]
        picked = after_last[0] if after_last else candidates[0]
        locked.last_assigned_id = picked
        locked.last_assigned_at = timezone.now()
        locked.save(update_fields=["last_assigned", "last_assigned_at"])
        return get_user_model().objects.get(pk=picked)
    return None


def _matches(rule: LeadAssignmentRule, *, source: str, places: set[str]) -> bool:
    if rule.kind == LeadAssignmentRule.Kind.SOURCE:
        return rule.match_value == source
    if rule.kind == LeadAssignmentRule.Kind.REGION:
        return rule.match_value.strip().lower() in places
    return True


def _candidates(rule: LeadAssignmentRule):
    """Staff this rule may give a lead to, under capacity, in a stable (id) order."""
    users = get_user_model().objects.filter(is_active=True, is_staff=True, staff_profile__accepts_leads=True)
    if rule.team:
        users = users.filter(staff_profile__team=rule.team)
    if rule.kind == LeadAssignmentRule.Kind.REGION:
        users = users.filter(staff_profile__regions__contains=[rule.match_value])
    elif rule.kind == LeadAssignmentRule.Kind.SOURCE:
        users = users.filter(staff_profile__sources__contains=[rule.match_value])
    open_leads = (
        Lead.objects.filter(owner=OuterRef("pk"), status__in=Lead.OPEN_STATUSES)
        .order_by()
        .values("owner")
        .annotate(n=Count("*"))
        .values("n")
    )
    return (
        users.annotate(open_leads=Coalesce(Subquery(open_leads, output_field=IntegerField()), Value(0)))
        .filter(open_leads__lt=F("staff_profile__capacity"))
        .order_by("pk")
    )
