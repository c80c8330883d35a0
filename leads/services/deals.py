"""Deals: create, change, move along the pipeline, and the stage automations (seed 001)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from compliance.services import audit_record
from contacts import lifecycle
from contacts.services import (
    SUBSCRIPTION_DIFFERS,
    contact_survivor,
    is_currency_code,
    lifecycle_transition,
    subscription_start,
)
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from crm_platform.locking import locked_row
from crm_platform.models import StaffProfile
from crm_platform.outbox import outbox_publish
from leads.models import Deal, DealStageChange, Pipeline, Stage, StageAutomation

EDITABLE_FIELDS = frozenset({"name", "amount", "currency", "close_date", "owner", "contact", "company", "plan"})
_RELATIONS = ("owner", "contact", "company")


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate deal fields with the model's own field checks; ValidationError names each bad one."""
    errors: dict[str, list[str]] = {}
    unknown = set(fields) - EDITABLE_FIELDS
    if {"stage", "pipeline"} & unknown:
        errors["stage"] = ["A deal changes stage by moving it (deal_move_stage, POST /deals/{id}/move)."]
        unknown -= {"stage", "pipeline"}
    errors.update({name: ["Unknown or read-only field."] for name in sorted(unknown)})
    cleaned = {k: v for k, v in fields.items() if k in EDITABLE_FIELDS}
    if "name" in cleaned:
        cleaned["name"] = str(cleaned["name"] or "").strip()
        if not cleaned["name"]:
            errors["name"] = ["A deal needs a name."]
    if "currency" in cleaned:
        currency = str(cleaned["currency"] or "")
        if not is_currency_code(currency):
            errors["currency"] = ["A three-letter ISO 4217 code."]
        cleaned["currency"] = currency.upper()
    if "plan" in cleaned:
        cleaned["plan"] = str(cleaned["plan"] or "").strip()
    if cleaned.get("amount") is None and "amount" in cleaned:
        cleaned["amount"] = Decimal("0")
    if cleaned.get("contact") is not None:
        cleaned["contact"] = contact_survivor(cleaned["contact"])  # a merged-away contact's deal is the survivor's
    owner = cleaned.get("owner")
    if owner is not None and not (owner.is_active and owner.is_staff):
        errors["owner"] = ["Deals go to active staff users."]
    probe = Deal(**{k: v for k, v in cleaned.items() if k not in _RELATIONS})
    checked = [name for name in cleaned if name not in _RELATIONS and name not in errors]
    try:
        probe.clean_fields(exclude=[f.name for f in Deal._meta.fields if f.name not in checked])
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            errors.setdefault(name, messages)
    if "amount" in checked and "amount" not in errors and probe.amount < 0:
        errors["amount"] = ["An amount cannot be negative."]
    if errors:
        raise ValidationError(errors)
    for name in checked:
        cleaned[name] = getattr(probe, name)  # the model's conversions: "12.5" -> Decimal, text -> date
    return cleaned


def default_pipeline() -> Pipeline:
    pipeline = Pipeline.objects.filter(is_default=True).first()
    if pipeline is None:
        raise ValidationError({"pipeline": ["There is no default pipeline; name one."]})
    return pipeline


def deal_create(
    *,
    actor: Actor,
    name: str,
    amount: Decimal | str | int = Decimal("0"),
    pipeline: Pipeline | None = None,
    stage: Stage | None = None,
    **fields: Any,
) -> Deal:
    """Open a deal in `stage` (default: the first stage of `pipeline`, default: the default
    pipeline), in `currency` (default, or None: the pipeline's). Entering the stage records
    history and fires its enabled automations, as a move would. ValidationError for bad fields
    or a stage of another pipeline."""
    if fields.get("currency") is None:
        fields.pop("currency", None)
    cleaned = _clean({"name": name, "amount": amount, **fields})
    if pipeline is None:
        pipeline = stage.pipeline if stage is not None else default_pipeline()
    # Not the model's USD: a deal given no currency is in its pipeline's, the one whose amounts
    # that pipeline's stats headline.
    cleaned.setdefault("currency", pipeline.currency)
    if stage is None:
        stage = pipeline.stages.order_by("order", "id").first()
        if stage is None:
            raise ValidationError({"stage": [f"The pipeline {pipeline.name!r} has no stages."]})
    if stage.pipeline_id != pipeline.pk:
        raise ValidationError({"stage": [f"The stage {stage.key!r} is not in the pipeline {pipeline.name!r}."]})
    with transaction.atomic():
        now = timezone.now()
        deal = Deal.objects.create(pipeline=pipeline, stage=stage, stage_entered_at=now, **cleaned)
        DealStageChange.objects.create(
            deal=deal, from_stage=None, to_stage=stage, actor_kind=actor.kind, actor_id=str(actor.id)[:64], at=now
        )
        audit_record(
            actor=actor,
            action="deal.create",
            obj=deal,
            changes={"pipeline": pipeline.pk, "stage": stage.key, **_audit_values(cleaned)},
        )
        outbox_publish(topic="deal.created", obj=deal, payload=deal_payload(deal), actor=actor)
        _run_automations(deal=deal, stage=stage, actor=actor)
    return deal


def deal_update(*, deal: Deal, actor: Actor, **fields: Any) -> Deal:
    """Change a deal's fields (not its stage: see deal_move_stage)."""
    cleaned = _clean(fields)
    with transaction.atomic():
        locked = locked_row(Deal.objects.select_for_update(), deal.pk)
        changes = {}
        for name, value in cleaned.items():
            attribute = f"{name}_id" if name in _RELATIONS else name
            current = getattr(locked, attribute)
            new = value.pk if name in _RELATIONS and value is not None else value
            if current != new:
                changes[name] = (current, new)
                setattr(locked, name, value)
        if changes:
            locked.save()
            audit_record(actor=actor, action="deal.update", obj=locked, changes=_audit_values(changes))
            outbox_publish(
                topic="deal.updated",
                obj=locked,
                payload={**deal_payload(locked), "changed": sorted(changes)},
                actor=actor,
            )
    return locked


def deal_move_stage(*, deal: Deal, stage: Stage, actor: Actor) -> Deal:
    """Move a deal to `stage` of its own pipeline: record the history row (with the days spent
    in the stage it leaves) and fire the stage's enabled automations, all in one transaction,
    so a failing automation undoes the move. Moving to the stage it is in does nothing; a
    stage of another pipeline is a ValidationError."""
    with transaction.atomic():
        locked = locked_row(Deal.objects.select_for_update().select_related("stage"), deal.pk)
        if stage.pipeline_id != locked.pipeline_id:
            raise ValidationError({"stage": [f"The stage {stage.key!r} belongs to another pipeline."]})
        if stage.pk == locked.stage_id:
            return locked
        now = timezone.now()
        previous = locked.stage
        days = (now - locked.stage_entered_at).total_seconds() / 86400
        locked.stage, locked.stage_entered_at = stage, now
        locked.save(update_fields=["stage", "stage_entered_at", "updated_at"])
        DealStageChange.objects.create(
            deal=locked,
            from_stage=previous,
            to_stage=stage,
            actor_kind=actor.kind,
            actor_id=str(actor.id)[:64],
            at=now,
            days_in_previous_stage=round(days, 4),
        )
        fired = _run_automations(deal=locked, stage=stage, actor=actor)
        audit_record(
            actor=actor,
            action="deal.move_stage",
            obj=locked,
            changes={"stage": (previous.key, stage.key), "automations": fired},
        )
        outbox_publish(
            topic="deal.stage_changed",
            obj=locked,
            payload={**deal_payload(locked), "from_stage": previous.key, "days_in_previous_stage": round(days, 2)},
            actor=actor,
        )
    return locked


def deals_assign(*, deals, owner, actor: Actor) -> int:
    """Give several deals to `owner` (the admin's bulk action); returns how many changed."""
    changed = 0
    with transaction.atomic():
        for deal in deals:
            if deal.owner_id != (owner.pk if owner else None):
                deal_update(deal=deal, actor=actor, owner=owner)
                changed += 1
    return changed


def deal_payload(deal: Deal) -> dict[str, Any]:
    stage = deal.stage
    return {
        "id": deal.pk,
        "name": deal.name,
        "pipeline": deal.pipeline_id,
        "stage": stage.key,
        "won": stage.is_won,
        "lost": stage.is_lost,
        "amount": str(deal.amount),
        "currency": deal.currency,
        "close_date": deal.close_date.isoformat() if deal.close_date else None,
        "owner": deal.owner_id,
        "contact": deal.contact_id,
        "company": deal.company_id,
        "plan": deal.plan,
    }


def _audit_values(changes: dict[str, Any]) -> dict[str, Any]:
    """Relations by id, the rest as they are (audit_record keeps scalars and drops personal values)."""
    out = {}
    for name, value in changes.items():
        if name in _RELATIONS and not isinstance(value, tuple):
            value = value.pk if value is not None else None
        out[name] = value
    return out


# ----------------------------------------------------------------------------- automations


def _run_automations(*, deal: Deal, stage: Stage, actor: Actor) -> list[str]:
    """Fire the enabled automations of `stage` for `deal`, in StageAutomation.ORDER; returns
    the actions that did something (an automation with nothing to act on is skipped)."""
    enabled = set(StageAutomation.objects.filter(stage=stage, enabled=True).values_list("action", flat=True))
    fired = []
    for action in StageAutomation.ORDER:
        if action in enabled and _ACTIONS[action](deal=deal, stage=stage, actor=actor):
            fired.append(str(action))
    return fired


def _contact_active_customer(*, deal: Deal, stage: Stage, actor: Actor) -> bool:
    contact = deal.contact
    if contact is None:
        return False
    contact.refresh_from_db(fields=["lifecycle_stage"])
    target, reason = lifecycle.Stage.ACTIVE_CUSTOMER, f"deal {deal.pk} {stage.key}"
    if contact.lifecycle_stage == lifecycle.Stage.CHURNED:
        # Only Won-Back leaves Churned: a churned person who signs is won back, then a customer.
        contact = lifecycle_transition(contact=contact, to_stage=lifecycle.Stage.WON_BACK, reason=reason, actor=actor)
    if not lifecycle.is_allowed(contact.lifecycle_stage, target):
        return False  # already further along (Subscriber, Advocate): winning does not move them back
    lifecycle_transition(contact=contact, to_stage=target, reason=reason, actor=actor)
    return True


def _create_subscription(*, deal: Deal, stage: Stage, actor: Actor) -> bool:
    if deal.contact is None or not deal.plan:
        return False
    # Keyed by the deal: winning it again after a reopening does not start a second subscription,
    # whatever was repriced meanwhile (the first win's subscription stands; staff change it).
    try:
        _, created = subscription_start(
            contact=deal.contact,
            plan=deal.plan,
            amount=deal.amount,
            currency=deal.currency,
            external_id=f"deal-{deal.pk}",
            actor=actor,
        )
    except ConflictError as exc:
        if exc.code != SUBSCRIPTION_DIFFERS:
            raise
        return False
    return created


def _request_onboarding(*, deal: Deal, stage: Stage, actor: Actor) -> bool:
    # Once per deal: a deal reopened and won again (its history holds an earlier win) was onboarded.
    if DealStageChange.objects.filter(deal=deal, to_stage__is_won=True).count() > 1:
        return False
    outbox_publish(
        topic="onboarding.requested",
        obj=deal,
        payload={"deal": deal.pk, "contact": deal.contact_id, "plan": deal.plan, "owner": deal.owner_id},
        actor=actor,
    )
    return True


def _feedback_survey(*, deal: Deal, stage: Stage, actor: Actor) -> bool:
    if deal.contact_id is None:
        return False  # nobody to ask
    outbox_publish(
        topic="feedback_survey.requested",
        obj=deal,
        payload={"deal": deal.pk, "contact": deal.contact_id, "stage": stage.key, "owner": deal.owner_id},
        actor=actor,
    )
    return True


def _notify_manager(*, deal: Deal, stage: Stage, actor: Actor) -> bool:
    if deal.owner_id is None:
        return False
    profile = StaffProfile.objects.filter(user_id=deal.owner_id).select_related("manager").first()
    manager = profile.manager if profile else None
    if manager is None:
        return False
    outbox_publish(
        topic="deal.manager_notification",
        obj=deal,
        payload={
            "deal": deal.pk,
            "deal_name": deal.name,
            "stage": stage.key,
            "amount": str(deal.amount),
            "currency": deal.currency,
            "owner": deal.owner_id,
            "manager": manager.pk,
            "manager_name": manager.get_full_name() or manager.get_username(),
            "manager_email": manager.email,
        },
        actor=actor,
    )
    return True


_ACTIONS = {
    StageAutomation.Action.CONTACT_ACTIVE_CUSTOMER: _contact_active_customer,
    StageAutomation.Action.CREATE_SUBSCRIPTION: _create_subscription,
    StageAutomation.Action.REQUEST_ONBOARDING: _request_onboarding,
    StageAutomation.Action.FEEDBACK_SURVEY: _feedback_survey,
    StageAutomation.Action.NOTIFY_MANAGER: _notify_manager,
}


def pipeline_rollup_rebuild(*, actor: Actor) -> int:
    """Recompute `StageRollup` from the deals and their history; returns the rows written.

    Deal writes wait (SHARE lock) for the second or so this takes, so the rollup is exact when it
    commits. Audited. The triggers keep it exact otherwise: this is the repair, not the way."""
    from leads.selectors import ROLLUP_REBUILD

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE leads_deal, leads_dealstagechange IN SHARE MODE")
            cursor.execute("DELETE FROM leads_stagerollup")
            cursor.execute(ROLLUP_REBUILD)
            written = cursor.rowcount
        audit_record(
            actor=actor, action="pipeline.rollup_rebuilt", object_type="leads.stagerollup", changes={"rows": written}
        )
    return written
