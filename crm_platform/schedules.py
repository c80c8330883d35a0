"""The periodic jobs, declared once in code.

`manage.py setup_periodic_tasks` writes them to django-celery-beat's tables (upsert by name,
keeping the `enabled` flag staff set in the admin). Each entry: task, queue, either `every`
(seconds) or `crontab` (fields as in celery.schedules.crontab), and `expires` (seconds after
which a queued run is dropped instead of running late).
"""

SCHEDULE: dict[str, dict] = {
    "platform.clear_expired_sessions": {
        "task": "crm_platform.tasks.clear_expired_sessions",
        "crontab": {"minute": "17", "hour": "3"},
        "queue": "bulk",
        "expires": 3600,
        "description": "Delete expired staff sessions.",
    },
    "leads.lead_scores_recompute_all": {
        "task": "leads.tasks.lead_scores_recompute_all",
        "crontab": {"minute": "5"},
        "queue": "bulk",
        "expires": 3000,
        "description": "Recompute every contact's lead score (scores decay with time).",
    },
    "leads.clv_recompute_all": {
        "task": "leads.tasks.clv_recompute_all",
        "crontab": {"minute": "40", "hour": "2"},
        "queue": "bulk",
        "expires": 4 * 3600,
        "description": "Recompute every customer's lifetime value from paid orders.",
    },
    "leads.pipeline_rollup_check": {
        "task": "leads.tasks.pipeline_rollup_check",
        "crontab": {"minute": "55", "hour": "2"},
        "queue": "bulk",
        "expires": 3600,
        "description": "Check the pipeline stats rollup against a full scan; rebuild it on drift.",
    },
    "contacts.lifecycle_sweep": {
        "task": "contacts.tasks.lifecycle_sweep",
        "crontab": {"minute": "20", "hour": "4"},
        "queue": "bulk",
        "expires": 4 * 3600,
        "description": "Move contacts to At-Risk (churn risk over the threshold) and Churned (inactive too long).",
    },
}
SCHEDULE["integrations.outbox_sweep"] = {
    "task": "integrations.tasks.outbox_relay",
    "every": 5,
    "queue": "sync",
    "expires": 5,
    "description": "Route and deliver due outbox rows (catches what the on-commit kick missed, e.g. broker down).",
}
SCHEDULE["integrations.inbox_sweep"] = {
    "task": "integrations.tasks.inbox_apply",
    "every": 5,
    "queue": "sync",
    "expires": 5,
    "description": "Apply queued inbound events (catches what the per-request kick missed, e.g. broker down).",
}
SCHEDULE["compliance.retention_purge"] = {
    "task": "compliance.tasks.retention_purge",
    "crontab": {"minute": "35", "hour": "3"},
    "queue": "bulk",
    "expires": 3600,
    "description": "Purge rows past their retention (settings.RETENTION_DAYS): delivered outbox rows, webhook "
    "deliveries, sync events, Idempotency-Key records, expired export bundles, old activities when configured.",
}
SCHEDULE["compliance.export_sweep"] = {
    "task": "compliance.tasks.export_sweep",
    "every": 300,
    "queue": "default",
    "expires": 300,
    "description": "Queue again GDPR export builds whose job was lost (broker down, Redis restarted); "
    "fail exports still pending a day after their request.",
}
# Compliance: the audit hash chain (compliance/README.md).
SCHEDULE["compliance.audit_seal"] = {
    "task": "compliance.tasks.audit_seal_now",
    "every": 5,
    "queue": "default",
    "expires": 5,
    "description": "Seal new audit rows into the hash chain.",
}
SCHEDULE["compliance.audit_seal_and_verify"] = {
    "task": "compliance.tasks.audit_seal_and_verify",
    "crontab": {"minute": "10", "hour": "1"},
    "queue": "bulk",
    "expires": 6 * 3600,
    "description": "Seal, then verify the whole audit chain; a break is logged and posted as an admin notice.",
}
SCHEDULE["compliance.audit_retention_purge"] = {
    "task": "compliance.tasks.audit_retention_purge",
    "crontab": {"minute": "25", "hour": "1"},
    "queue": "bulk",
    "expires": 6 * 3600,
    "description": "Delete audit rows past AUDIT_RETENTION_DAYS (oldest first; legal holds keep theirs).",
}
