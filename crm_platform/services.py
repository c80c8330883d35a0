from __future__ import annotations

import ipaddress
import secrets
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from compliance.services import audit_record
from crm_platform.actor import Actor
from crm_platform.api.scopes import unknown_scopes
from crm_platform.locking import locked_row
from crm_platform.models import ApiKey
from crm_platform.selectors import KEY_PREFIX, api_key_forget, hash_key


def _new_secret() -> tuple[str, str]:
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def api_key_validate(*, scopes: list[str], allowed_ips: list[str]) -> None:
    """Raise ValidationError naming the fields when scopes or allowed IPs are not acceptable."""
    errors = {}
    unknown = unknown_scopes(scopes)
    if unknown:
        errors["scopes"] = [f"Unknown scope(s): {', '.join(unknown)}."]
    if not scopes:
        errors["scopes"] = ["Give the key at least one scope."]
    bad_ips = [ip for ip in allowed_ips if not _is_network(ip)]
    if bad_ips:
        errors["allowed_ips"] = [f"Not an address or network: {', '.join(bad_ips)}."]
    if errors:
        raise ValidationError(errors)


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


@transaction.atomic
def api_key_create(
    *,
    name: str,
    scopes: list[str],
    actor: Actor,
    description: str = "",
    expires_at: datetime | None = None,
    allowed_ips: list[str] | None = None,
    created_by=None,
    rotated_from: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Make a key and return it with the raw key, which is shown once and never stored.

    Raises ValidationError for unknown scopes or malformed IP networks."""
    allowed_ips = list(allowed_ips or [])
    scopes = sorted(set(scopes))
    api_key_validate(scopes=scopes, allowed_ips=allowed_ips)
    if not name.strip():
        raise ValidationError({"name": ["A key needs a name."]})
    max_name = ApiKey._meta.get_field("name").max_length
    if len(name.strip()) > max_name:
        raise ValidationError({"name": [f"A key's name has at most {max_name} characters."]})
    for _ in range(5):
        prefix, raw = _new_secret()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    name=name.strip(),
                    description=description,
                    prefix=prefix,
                    hashed_key=hash_key(raw),
                    scopes=scopes,
                    allowed_ips=allowed_ips,
                    expires_at=expires_at,
                    created_by=created_by,
                    rotated_from=rotated_from,
                    lineage=(rotated_from.lineage or rotated_from.pk) if rotated_from else None,
                )
            break
        except IntegrityError:  # prefix collision: draw again
            continue
    else:  # pragma: no cover - 5 collisions in 2**32 is not going to happen
        raise RuntimeError("could not draw a unique key prefix")
    audit_record(actor=actor, action="api_key.create", obj=key, changes={"scopes": scopes, "name": key.name})
    return key, raw


@transaction.atomic
def api_key_update(*, api_key: ApiKey, actor: Actor, **fields) -> ApiKey:
    """Change name, description, scopes, allowed IPs or expiry of a key. Raises ValidationError."""
    editable = {"name", "description", "scopes", "allowed_ips", "expires_at"}
    unknown = set(fields) - editable
    if unknown:
        raise ValidationError(f"Not editable: {', '.join(sorted(unknown))}")
    api_key_validate(
        scopes=fields.get("scopes", api_key.scopes), allowed_ips=fields.get("allowed_ips", api_key.allowed_ips)
    )
    # Compare with the stored row: the caller's instance may already carry the new values (the admin's does).
    key = locked_row(ApiKey.objects.select_for_update(), api_key.pk)
    before = {name: getattr(key, name) for name in fields}
    for name, value in fields.items():
        setattr(key, name, value)
    key.save(update_fields=list(fields))
    changed = {name: (before[name], value) for name, value in fields.items() if before[name] != value}
    if changed:
        audit_record(actor=actor, action="api_key.update", obj=key, changes=changed)
    _forget(key)
    return key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: Actor) -> ApiKey:
    """Stop a key: at once in this process, within API_KEY_LOCAL_CACHE_SECONDS in the others
    (each remembers a verified key that long). Idempotent: revoking a revoked key changes nothing."""
    key = locked_row(ApiKey.objects.select_for_update(), api_key.pk)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="api_key.revoke", obj=key)
    _forget(key)
    return key


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, actor: Actor, overlap: timedelta, created_by=None) -> tuple[ApiKey, str]:
    """Issue a successor with the same scopes; the old key keeps working for `overlap`, then stops.

    Raises ValidationError when the key is revoked or was already rotated."""
    old = locked_row(ApiKey.objects.select_for_update(), api_key.pk)
    now = timezone.now()
    if not old.is_active_at(now):
        raise ValidationError("Only an active key can be rotated.")
    if ApiKey.objects.filter(rotated_from=old).exists():
        raise ValidationError("This key was already rotated; rotate its successor instead.")
    new, raw = api_key_create(
        name=old.name,
        description=old.description,
        scopes=old.scopes,
        allowed_ips=old.allowed_ips,
        expires_at=old.expires_at,
        actor=actor,
        created_by=created_by,
        rotated_from=old,
    )
    ends = now + overlap
    if old.expires_at is None or old.expires_at > ends:
        old.expires_at = ends
        old.save(update_fields=["expires_at"])
    audit_record(actor=actor, action="api_key.rotate", obj=old, changes={"successor": new.pk, "expires_at": ends})
    _forget(old)
    return new, raw


def _forget(key: ApiKey) -> None:
    """Drop the cached verification once the change is committed (a request in between would
    otherwise cache the old row again)."""
    transaction.on_commit(lambda: api_key_forget(key.hashed_key))


MANAGED_MARK = "[managed] "


@transaction.atomic
def periodic_tasks_sync(*, actor: Actor, schedule: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """Write the declared schedule (crm_platform.schedules) to django-celery-beat's tables.

    Upserts by name and never touches `enabled`, so a deploy does not resume a job staff
    paused in the admin. Managed jobs no longer declared are deleted; jobs staff made by hand
    are left alone. Idempotent: a second run changes nothing."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from crm_platform.schedules import SCHEDULE

    schedule = SCHEDULE if schedule is None else schedule
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "deleted": []}
    for name, spec in schedule.items():
        wanted = {
            "task": spec["task"],
            "queue": spec.get("queue", "default"),
            "expire_seconds": spec.get("expires"),
            "description": MANAGED_MARK + spec.get("description", ""),
            "interval": None,
            "crontab": None,
        }
        if "every" in spec:
            wanted["interval"], _ = IntervalSchedule.objects.get_or_create(
                every=spec["every"], period=IntervalSchedule.SECONDS
            )
        else:
            fields = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}
            fields.update(spec["crontab"])
            wanted["crontab"], _ = CrontabSchedule.objects.get_or_create(timezone="UTC", **fields)
        task = PeriodicTask.objects.filter(name=name).first()
        if task is None:
            PeriodicTask.objects.create(name=name, enabled=True, **wanted)
            report["created"].append(name)
            continue
        changed = [field for field, value in wanted.items() if getattr(task, field) != value]
        if changed:
            for field in changed:
                setattr(task, field, wanted[field])
            task.save()
            report["updated"].append(name)
        else:
            report["unchanged"].append(name)
    stale = PeriodicTask.objects.filter(description__startswith=MANAGED_MARK).exclude(name__in=list(schedule))
    report["deleted"] = sorted(stale.values_list("name", flat=True))
    stale.delete()
    if report["created"] or report["updated"] or report["deleted"]:
        audit_record(
            actor=actor,
            action="schedule.sync",
            object_type="django_celery_beat.periodictask",
            changes={key: value for key, value in report.items() if key != "unchanged" and value},
        )
    return report
