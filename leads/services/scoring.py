"""Lead scores and CLV, recomputed set-based and written through the contacts services."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.utils import timezone

from contacts.models import Contact
from contacts.services import contacts_set_clv, contacts_set_scores
from crm_platform.actor import Actor
from leads.models import ScoringRule
from leads.selectors import clv_row_batches, contact_id_batches, lead_score_rows
from leads.services.config import clv_settings_get

BATCH = 5000


def lead_scores_recompute(*, actor: Actor, contact_ids: Iterable[int] | None = None, batch_size: int = BATCH) -> int:
    """Recompute the lead score and its explanation of the given contacts (default: all),
    from the enabled scoring rules, a batch of contacts per statement. Safe to run twice and
    to stop half way: each batch commits on its own. Returns how many contacts changed."""
    rules = list(ScoringRule.objects.filter(enabled=True))
    now = timezone.now()
    changed = 0
    for batch in contact_id_batches(contact_ids=contact_ids, size=batch_size):
        changed += contacts_set_scores(rows=lead_score_rows(contact_ids=batch, rules=rules, now=now), actor=actor)
    return changed


def lead_score_recompute(*, contact: Contact, actor: Actor) -> tuple[int, list[dict[str, Any]]]:
    """Recompute one contact's score now (on demand); returns (score, explanation)."""
    rules = list(ScoringRule.objects.filter(enabled=True))
    rows = lead_score_rows(contact_ids=[contact.pk], rules=rules, now=timezone.now())
    contacts_set_scores(rows=rows, actor=actor)
    _, score, explanation = rows[0]
    return score, explanation


def clv_recompute(*, actor: Actor, contact_ids: Iterable[int] | None = None, batch_size: int = BATCH) -> int:
    """Recompute customer lifetime values from the paid orders in CRM_REPORTING_CURRENCY (see
    selectors.clv_row_batches), with the expected lifetime staff set in CLV settings. Returns
    how many contacts changed."""
    lifetime = clv_settings_get().expected_lifetime_years
    batches = clv_row_batches(
        lifetime_years=lifetime,
        currency=settings.CRM_REPORTING_CURRENCY,
        now=timezone.now(),
        contact_ids=contact_ids,
        size=batch_size,
    )
    changed = 0
    for rows in batches:
        changed += contacts_set_clv(rows=rows, actor=actor)
    return changed
