"""Every write in the leads app. Services take keyword-only arguments and an `actor`, run in
one transaction, write their audit row there, publish what the outside must hear through the
outbox, and raise ValidationError (400) or ConflictError (409) before writing anything."""

from leads.services.assignment import lead_owner_pick
from leads.services.config import (
    clv_settings_get,
    config_delete,
    config_save,
    stage_automations_set_enabled,
)
from leads.services.deals import (
    deal_create,
    deal_move_stage,
    deal_update,
    deals_assign,
    default_pipeline,
    pipeline_rollup_rebuild,
)
from leads.services.leads import (
    lead_assign,
    lead_capture,
    lead_set_status,
    lead_update,
    leads_merge_contacts,
)
from leads.services.scoring import clv_recompute, lead_score_recompute, lead_scores_recompute

__all__ = [
    "clv_recompute",
    "clv_settings_get",
    "config_delete",
    "config_save",
    "deal_create",
    "deal_move_stage",
    "deal_update",
    "deals_assign",
    "default_pipeline",
    "lead_assign",
    "lead_capture",
    "lead_owner_pick",
    "lead_score_recompute",
    "lead_scores_recompute",
    "lead_set_status",
    "lead_update",
    "leads_merge_contacts",
    "pipeline_rollup_rebuild",
    "stage_automations_set_enabled",
]
