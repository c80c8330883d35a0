"""compliance: tasks (layout in ../shared/STYLE.md). Thin: call a service, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task

from compliance.chain import audit_purge, audit_seal, audit_verify
from compliance.models import AdminNotice
from compliance.notices import admin_notice_post

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, time_limit=600, soft_time_limit=570, ignore_result=False)
def audit_seal_now() -> int:
    """Seal the audit rows written since the last run (every few seconds, and on demand)."""
    return audit_seal()


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3540, ignore_result=False)
def audit_seal_and_verify() -> dict:
    """Nightly: seal, then walk the whole chain. A break is logged as an error and posted as an
    admin notice for compliance officers (and administrators)."""
    sealed = audit_seal()
    result = audit_verify()
    if result.ok:
        # The head hash in the log anchors the chain outside the database: a later verify
        # that ends before this seq, or on another hash, shows rows cut from the end.
        logger.info(
            "audit chain intact",
            extra={"checked": result.checked, "head_seq": result.head_seq, "head_hash": result.head_hash},
        )
        return {"sealed": sealed, "checked": result.checked, "broken": None}
    message = str(result.broken)
    logger.error(message, extra={"seq": result.broken.seq, "audit_id": result.broken.id})
    admin_notice_post(
        source="audit_chain",
        title=f"Audit chain broken at seq {result.broken.seq} (id {result.broken.id})",
        body=message + ". Run `manage.py audit_verify` and investigate before anything else.",
        level=AdminNotice.Level.ERROR,
        permission="compliance.view_auditevent",
    )
    return {"sealed": sealed, "checked": result.checked, "broken": message}


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3540, ignore_result=False)
def audit_retention_purge() -> int:
    """Delete sealed audit rows past AUDIT_RETENTION_DAYS from the oldest end of the chain."""
    return audit_purge()


# ----------------------------------------------------------------------------- GDPR and retention


@shared_task(acks_late=True, time_limit=900, soft_time_limit=870, ignore_result=False)
def export_build(bundle_id: str) -> str:
    """Build one GDPR export bundle (safe to run twice: a built bundle is left alone)."""
    from compliance.gdpr import export_build as build
    from crm_platform.actor import Actor

    bundle = build(bundle_id=bundle_id, actor=Actor.system("compliance.export_build"))
    return bundle.status if bundle is not None else "missing"


@shared_task(acks_late=True, time_limit=120, soft_time_limit=110)
def export_sweep() -> dict:
    """Queue again the builds of export bundles whose job was lost; fail those pending a day."""
    from compliance.gdpr import export_sweep as sweep
    from crm_platform.actor import Actor

    return sweep(actor=Actor.system("compliance.export_sweep"))


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3540, ignore_result=False)
def retention_purge() -> dict:
    """Purge every registered kind of row past its retention (settings.RETENTION_DAYS)."""
    from compliance.retention import retention_purge as purge

    return purge()
