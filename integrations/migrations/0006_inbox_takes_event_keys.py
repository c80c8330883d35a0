"""The event routes' Idempotency-Keys move from crm_platform.IdempotencyRecord to the inbox.

Before the inbox, POST /api/v1/events, /api/v1/events/batch and /api/crm/webhooks/app-event kept
their keys (and the responses to replay) as IdempotencyRecords. The routes now look keys up in
the inbox only, so without this a retry of an event applied before the upgrade would be queued
and applied again. Each such record becomes an applied inbox row under the same owner and key:
a retry with the same body replays (the 202 rebuilt in today's shape), another body is a 422.
Batch events were fingerprinted with json.dumps then and orjson now, so a retried pre-upgrade
batch event is answered "rejected: reused with another body" instead of "replayed": never
applied twice. The records themselves stay until IDEMPOTENCY_TTL_DAYS purges them.
"""

from django.db import migrations

FORWARD = """
INSERT INTO integrations_inboundevent (owner, key, request_hash, route, type, user_external_id, user_email,
    creates_user, payload, actor, status, result, received_at, applied_at)
SELECT r.owner, r.key, r.request_hash, m.route, left(coalesce(r.response_body->>'type', ''), 50), '', '',
    false, NULL, '["system", "migration 0006", "", null]'::jsonb, 'applied', m.result,
    r.created_at, coalesce(r.completed_at, r.created_at)
FROM crm_platform_idempotencyrecord AS r
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN r.key LIKE 'event:%%' THEN 'batch'
        WHEN r.response_body ? 'idempotencyKey' THEN 'app_event'
        ELSE 'event' END AS route,
    CASE
        WHEN r.key LIKE 'event:%%' THEN r.response_body
        WHEN r.response_body ? 'idempotencyKey' THEN r.response_body->'result'->'data'
        ELSE r.response_body->'result' END AS result
) AS m
WHERE r.status = 'completed' AND jsonb_typeof(r.response_body) = 'object' AND (
    r.key LIKE 'event:%%'
    OR (r.response_body->>'status' = 'accepted' AND r.response_body ? 'result'
        AND (r.response_body ? 'type' OR r.response_body ? 'idempotencyKey'))
)
ON CONFLICT (owner, key) DO NOTHING
"""


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0005_inbound_event"),
        ("crm_platform", "0005_outbox_relay"),
    ]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=migrations.RunSQL.noop)]
