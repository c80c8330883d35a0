"""Every non-trivial read of the leads app: lists, pipeline stats, funnels, and the set-based
computations behind lead scores and CLV."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Avg, BooleanField, Case, Count, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Lower
from django.http import Http404

from contacts import lifecycle
from contacts.models import Activity, Contact
from contacts.selectors import contact_search
from contacts.services import contact_find, normalize_email
from leads.models import (
    SCORABLE_FIELDS,
    Deal,
    DealStageChange,
    Lead,
    Pipeline,
    ScoringRule,
    Stage,
    StageRollup,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- lists


def lead_list() -> QuerySet[Lead]:
    """Leads with their contact (the API's filters narrow it: leads.filters)."""
    return Lead.objects.select_related("contact")


def leads_matching(leads: QuerySet[Lead], query: str) -> QuerySet[Lead]:
    """Leads whose contact matches a search (contacts' own search: email, phone or name prefix)."""
    if not query.strip():
        return leads
    return leads.filter(contact__in=contact_search(Contact.objects.all(), query).values("pk"))


def deal_ids_matching(query: str) -> QuerySet[Deal]:
    """The ids of the deals whose name starts with the search (case-blind), or whose contact
    matches it (contacts' own search: email, phone or name prefix); a non-empty search. Each side
    is read through its prefix indexes (deal_name_prefix; the contact's) and their ids united: an
    OR of the two sides is answered by reading deals newest first and testing each, the whole
    table when few match."""
    query = query.strip()
    by_name = Deal.objects.alias(name_lower=Lower("name")).filter(name_lower__startswith=query.lower())
    by_contact = Deal.objects.filter(contact__in=contact_search(Contact.objects.all(), query).values("pk"))
    return by_name.order_by().values_list("pk", flat=True).union(by_contact.order_by().values_list("pk", flat=True))


def deal_list() -> QuerySet[Deal]:
    """Deals with their stage (the API's filters narrow it: leads.filters)."""
    return Deal.objects.select_related("stage")


def lead_latest_for_email(*, email: str) -> Lead:
    """The open lead of the person with this email, else their latest lead, following merges
    to the surviving contact. Http404 when the email names no lead; ValidationError when it is
    not an email address."""
    contact = contact_find(email=normalize_email(email))
    lead = (
        Lead.objects.select_related("contact")
        .filter(contact=contact)
        .annotate(open=Case(When(status__in=Lead.OPEN_STATUSES, then=Value(True)), default=Value(False)))
        .order_by("-open", "-id")
        .first()
        if contact is not None
        else None
    )
    if lead is None:
        raise Http404("No lead for this email.")
    return lead


def activities_for_contact(*, contact_id: int) -> QuerySet[Activity]:
    return Activity.objects.filter(contact_id=contact_id).order_by("-occurred_at", "-id")


def stage_resolve(*, pipeline_id: int, value: Any) -> Stage:
    """A stage named by id or by key; a key is looked up in `pipeline_id`. ValidationError
    naming `stage` when there is no such stage."""
    text = str(value).strip() if value is not None else ""
    stage = None
    if text.isascii() and text.isdecimal():
        stage = Stage.objects.filter(pk=int(text)).first()
    elif text:
        stage = Stage.objects.filter(pipeline_id=pipeline_id, key=text).first()
    if stage is None:
        raise ValidationError({"stage": [f"No such stage: {text!r}."]})
    return stage


def staff_user_get(*, pk: int):
    """The active staff user with this id; ValidationError naming `owner` otherwise."""
    user = get_user_model().objects.filter(pk=pk, is_active=True, is_staff=True).first()
    if user is None:
        raise ValidationError({"owner": [f"No active staff user with id {pk}."]})
    return user


# ----------------------------------------------------------------------------- pipeline stats


def pipeline_stats(
    *,
    pipeline: Pipeline,
    owner: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> dict[str, Any]:
    """Per stage: deals, amounts, weighted amounts (amount * the stage's probability) and the
    average days deals spent in it before moving on; overall: win rate = won / (won + lost).

    Amounts in different currencies are never added: `amount` and `weighted_amount` (per stage
    and in the totals) count only the deals in `currency`, the pipeline's own; `by_currency`
    lists {currency, count, amount, weighted_amount} for every currency present, that one
    included, in code order. Counts and the win rate take every deal.

    `owner` narrows to one owner's deals; `since`/`until` to deals created in [since, until)
    and stage moves made in that range. Unfiltered, the figures come from `StageRollup` (two
    small queries whatever the number of deals); filtered, from two aggregate scans."""
    stages = list(pipeline.stages.order_by("order", "id"))
    if owner or since or until:
        totals, avg_days = _pipeline_scan(pipeline, stages, owner=owner, since=since, until=until)
    else:
        totals, avg_days = _pipeline_rollup(pipeline)
    currency = pipeline.currency
    rows = []
    won = lost = open_count = 0
    overall: dict[str, dict[str, Any]] = {}
    for stage in stages:
        by_currency = [
            {
                "currency": code,
                "count": figures["count"],
                "amount": figures["amount"],
                "weighted_amount": (figures["amount"] * stage.probability).quantize(Decimal("0.01")),
            }
            for code, figures in sorted(totals.get(stage.pk, {}).items())
        ]
        for part in by_currency:
            summed = overall.setdefault(
                part["currency"], {"count": 0, "amount": Decimal("0"), "weighted_amount": Decimal("0")}
            )
            for name in ("count", "amount", "weighted_amount"):
                summed[name] += part[name]
        count = sum(part["count"] for part in by_currency)
        mine = next((part for part in by_currency if part["currency"] == currency), None)
        days = avg_days.get(stage.pk)
        rows.append(
            {
                "id": stage.pk,
                "key": stage.key,
                "name": stage.name,
                "probability": stage.probability,
                "is_won": stage.is_won,
                "is_lost": stage.is_lost,
                "count": count,
                "amount": mine["amount"] if mine else Decimal("0"),
                "weighted_amount": mine["weighted_amount"] if mine else Decimal("0.00"),
                "by_currency": by_currency,
                "avg_days_in_stage": round(days, 2) if days is not None else None,
            }
        )
        won += count if stage.is_won else 0
        lost += count if stage.is_lost else 0
        open_count += 0 if stage.is_closed else count
    mine = overall.get(currency, {})
    return {
        "pipeline": {"id": pipeline.pk, "name": pipeline.name},
        "currency": currency,
        "stages": rows,
        "totals": {
            "count": sum(part["count"] for part in overall.values()),
            "amount": mine.get("amount", Decimal("0")),
            "weighted_amount": mine.get("weighted_amount", Decimal("0")),
            "open_count": open_count,
            "by_currency": [{"currency": code, **figures} for code, figures in sorted(overall.items())],
        },
        "won": won,
        "lost": lost,
        "win_rate": round(won / (won + lost), 4) if won + lost else None,
    }


def _pipeline_scan(pipeline: Pipeline, stages: list[Stage], *, owner, since, until) -> tuple[dict, dict]:
    """Per stage and currency totals {stage_id: {currency: {"count", "amount"}}} and average
    days {stage_id: days}, from the deals and their history themselves."""
    deals = Deal.objects.filter(pipeline=pipeline)
    moves = DealStageChange.objects.filter(from_stage_id__in=[s.pk for s in stages])
    if owner:
        deals = deals.filter(owner_id=owner)
        moves = moves.filter(deal__owner_id=owner)
    if since:
        deals = deals.filter(created_at__gte=since)
        moves = moves.filter(at__gte=since)
    if until:
        deals = deals.filter(created_at__lt=until)
        moves = moves.filter(at__lt=until)
    totals: dict[int, dict[str, dict]] = defaultdict(dict)
    # COUNT(*), not COUNT(id): the id is not in deal_owner_stage_cur_idx, which holds all else the
    # owner's figures need (an index-only scan).
    grouped = deals.order_by().values("stage_id", "currency").annotate(count=Count("*"), amount=Sum("amount"))
    for row in grouped:
        totals[row["stage_id"]][row["currency"]] = {"count": row["count"], "amount": row["amount"]}
    avg_days = {
        row["from_stage_id"]: row["days"]
        for row in moves.order_by().values("from_stage_id").annotate(days=Avg("days_in_previous_stage"))
    }
    return dict(totals), avg_days


def _pipeline_rollup(pipeline: Pipeline) -> tuple[dict, dict]:
    """The same two dicts as `_pipeline_scan`, read from the trigger-maintained rollup (whose
    moves sit under currency "", and deals under their own)."""
    totals: dict[int, dict[str, dict]] = defaultdict(dict)
    avg_days = {}
    for row in StageRollup.objects.filter(pipeline_id=pipeline.pk):
        if row.deals:
            totals[row.stage_id][row.currency] = {"count": row.deals, "amount": row.amount}
        if row.days_count:
            avg_days[row.stage_id] = float(row.days_sum) / row.days_count
    return dict(totals), avg_days


def pipeline_rollup_drift() -> list[dict[str, Any]]:
    """Rollup rows that disagree with a full scan of deals and their history (empty when all is
    well). A full scan: meant for the nightly check and tests, not for requests."""
    with connection.cursor() as cursor:
        cursor.execute(_ROLLUP_DIFF)
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


_ROLLUP_SCAN = """
    SELECT p, s, cur, sum(c) AS deals, sum(a) AS amount, sum(m) AS moves_out, sum(d) AS days_sum,
           sum(dc) AS days_count
    FROM (
        SELECT pipeline_id, stage_id, currency, 1, amount, 0, 0, 0 FROM leads_deal
        UNION ALL
        SELECT st.pipeline_id, c.from_stage_id, ''::varchar, 0, 0, 1,
               coalesce(c.days_in_previous_stage::numeric, 0), (c.days_in_previous_stage IS NOT NULL)::int
        FROM leads_dealstagechange c JOIN leads_stage st ON st.id = c.from_stage_id
    ) AS rows (p, s, cur, c, a, m, d, dc)
    GROUP BY p, s, cur
"""
# Built from constants only.
_ROLLUP_DIFF = f"""
    SELECT coalesce(r.pipeline_id, x.p) AS pipeline_id, coalesce(r.stage_id, x.s) AS stage_id,
           coalesce(r.currency, x.cur) AS currency,
           r.deals AS rollup_deals, x.deals AS scanned_deals, r.amount AS rollup_amount,
           x.amount AS scanned_amount, r.moves_out AS rollup_moves, x.moves_out AS scanned_moves
    FROM leads_stagerollup r
    FULL JOIN ({_ROLLUP_SCAN}) x ON x.p = r.pipeline_id AND x.s = r.stage_id AND x.cur = r.currency
    WHERE (coalesce(r.deals, 0), coalesce(r.amount, 0), coalesce(r.moves_out, 0), coalesce(r.days_count, 0))
          IS DISTINCT FROM (coalesce(x.deals, 0), coalesce(x.amount, 0), coalesce(x.moves_out, 0),
                            coalesce(x.days_count, 0))
       OR abs(coalesce(r.days_sum, 0) - coalesce(x.days_sum, 0)) > 0.001
"""  # noqa: S608
ROLLUP_REBUILD = f"""
    INSERT INTO leads_stagerollup (pipeline_id, stage_id, currency, deals, amount, moves_out, days_sum, days_count)
    SELECT * FROM ({_ROLLUP_SCAN}) AS scan
"""  # noqa: S608


def deals_latest_per_stage(*, pipeline: Pipeline, per_stage: int) -> dict[int, list[Deal]]:
    """The `per_stage` deals that most recently entered each stage of `pipeline`, by stage id.
    One query: a LIMIT per stage (each served by deal_stage_entered_idx), glued by UNION ALL."""
    parts = [
        Deal.objects.filter(stage_id=stage_id).order_by("-stage_entered_at", "-id")[:per_stage]
        for stage_id in pipeline.stages.values_list("id", flat=True)
    ]
    if not parts:
        return {}
    ids = parts[0].values_list("id", flat=True).union(*(p.values_list("id", flat=True) for p in parts[1:]), all=True)
    by_stage: dict[int, list[Deal]] = defaultdict(list)
    deals = Deal.objects.filter(pk__in=ids).select_related("contact", "owner").order_by("-stage_entered_at", "-id")
    for deal in deals:
        by_stage[deal.stage_id].append(deal)
    return dict(by_stage)


def lead_status_counts(*, owner: int | None = None) -> dict[str, int]:
    """How many leads are in each status (every status present, zeros included)."""
    leads = Lead.objects.all()
    if owner:
        leads = leads.filter(owner_id=owner)
    counts = dict(leads.order_by().values_list("status").annotate(n=Count("id")))
    return {status: counts.get(status, 0) for status in Lead.Status.values}


# ----------------------------------------------------------------------------- funnels


def funnels(
    *,
    name: str,
    since: dt.datetime,
    until: dt.datetime,
    source: str | None = None,
    owner: int | None = None,
) -> dict[str, Any]:
    """One of seed 004's funnels over [since, until): the contacts who entered the from-stage in
    that range (a Visitor enters when the contact is created), how many of them later reached
    the to-stage or a funnel stage past it (whenever that was; contacts may skip ahead), the
    rate, and the median days between the two. One query. `source` and `owner` narrow to
    contacts with that source or owner. Http404 for an unknown funnel."""
    if name not in lifecycle.FUNNELS:
        raise Http404(f"No funnel {name!r}; there are {', '.join(lifecycle.FUNNELS)}.")
    from_stage, to_stage = lifecycle.FUNNELS[name]
    params: dict[str, Any] = {
        "from": str(from_stage),
        "to": lifecycle.reached(to_stage),
        "since": since,
        "until": until,
    }
    narrow = ""
    if source:
        narrow += " AND c.source = %(source)s"
        params["source"] = source
    if owner:
        narrow += " AND c.owner_id = %(owner)s"
        params["owner"] = owner
    if from_stage == lifecycle.Stage.VISITOR:
        # Contacts start as Visitors: no transition row marks their entry, their creation does.
        # The cohort is read from the contacts once (joining them again cost a scan of them all).
        cohort = (
            "SELECT c.id AS contact_id, c.created_at AS entered_at FROM contacts_contact c "  # noqa: S608 - literals
            f"WHERE c.created_at >= %(since)s AND c.created_at < %(until)s AND c.merged_into_id IS NULL{narrow}"
        )
    else:
        cohort = (
            "SELECT e.contact_id, e.entered_at FROM ("  # noqa: S608 - literals above; values are parameters
            "SELECT t.contact_id, MIN(t.occurred_at) AS entered_at FROM contacts_lifecycletransition t "
            "WHERE t.to_stage = %(from)s AND t.occurred_at >= %(since)s AND t.occurred_at < %(until)s "
            "GROUP BY t.contact_id) e "
            f"JOIN contacts_contact c ON c.id = e.contact_id WHERE c.merged_into_id IS NULL{narrow}"
        )
    sql = f"""
        WITH cohort AS ({cohort}),
        reached AS (
            SELECT co.contact_id, MIN(t.occurred_at) - co.entered_at AS took
            FROM cohort co
            JOIN contacts_lifecycletransition t
              ON t.contact_id = co.contact_id AND t.to_stage = ANY(%(to)s) AND t.occurred_at >= co.entered_at
            GROUP BY co.contact_id, co.entered_at
        )
        SELECT
            (SELECT COUNT(*) FROM cohort),
            COUNT(*),
            percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM took) / 86400.0)
        FROM reached
    """  # noqa: S608 - the fragments are literals above; values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        entered_count, converted, median_days = cursor.fetchone()
    return {
        "funnel": name,
        "from_stage": str(from_stage),
        "to_stage": str(to_stage),
        "since": since,
        "until": until,
        "entered": entered_count,
        "converted": converted,
        "rate": round(converted / entered_count, 4) if entered_count else None,
        "median_days": round(float(median_days), 2) if median_days is not None else None,
    }


# ----------------------------------------------------------------------------- scoring and CLV


def contact_id_batches(*, contact_ids: Iterable[int] | None = None, size: int = 5000) -> Iterator[list[int]]:
    """Contact ids in ascending batches: the given ones, or every contact not merged away
    (keyset pagination, so a million contacts never sit in memory at once)."""
    if contact_ids is not None:
        ids = sorted(set(contact_ids))
        for start in range(0, len(ids), size):
            yield ids[start : start + size]
        return
    last = 0
    while True:
        batch = list(
            Contact.objects.filter(pk__gt=last, merged_into__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)[:size]
        )
        if not batch:
            return
        yield batch
        last = batch[-1]


def lead_score_rows(
    *, contact_ids: list[int], rules: list[ScoringRule], now: dt.datetime
) -> list[tuple[int, int, list[dict[str, Any]]]]:
    """(contact id, score, explanation) for each of `contact_ids`, from the enabled `rules`.

    Two queries: the profile rules as one CASE per rule over the contacts, and the event
    rules as one aggregate over their activities, each weighted 0.5 ** (age in days /
    half-life). Events older than eight half-lives (under 0.4% of their points) are not read.
    Score = the sum, rounded, within 0..100; the explanation lists each rule that gave
    points: {"rule": name, "points": p}, largest first."""
    points: dict[int, dict[int, float]] = defaultdict(dict)
    by_id = {rule.pk: rule for rule in rules}
    profile = []
    for rule in rules:
        if rule.kind != ScoringRule.Kind.PROFILE:
            continue
        try:
            profile.append((rule, profile_rule_q(rule)))
        except (ValidationError, ValueError, KeyError):
            logger.warning("scoring rule %s cannot be evaluated; skipped", rule.pk)
    if profile and contact_ids:
        annotations = {
            f"r{rule.pk}": Case(When(q, then=Value(True)), default=Value(False), output_field=BooleanField())
            for rule, q in profile
        }
        for row in Contact.objects.filter(pk__in=contact_ids).annotate(**annotations).values("pk", *annotations):
            for rule, _ in profile:
                if row[f"r{rule.pk}"]:
                    points[row["pk"]][rule.pk] = float(rule.points)
    events = [rule for rule in rules if rule.kind == ScoringRule.Kind.EVENT]
    if events and contact_ids:
        sql = """
            SELECT a.contact_id, r.id,
                   SUM(r.points * CASE WHEN r.half_life IS NULL THEN 1.0 ELSE power(
                       0.5, GREATEST(EXTRACT(EPOCH FROM (%s - a.occurred_at)), 0) / 86400.0 / r.half_life) END)
            FROM contacts_activity a
            JOIN unnest(%s::bigint[], %s::text[], %s::float8[], %s::float8[]) AS r(id, event_type, points, half_life)
              ON a.type = r.event_type
            WHERE a.contact_id = ANY(%s::bigint[])
              AND (r.half_life IS NULL OR a.occurred_at > %s - make_interval(days => (r.half_life * 8)::int))
            GROUP BY a.contact_id, r.id
        """
        params = [
            now,
            [rule.pk for rule in events],
            [rule.event_type for rule in events],
            [float(rule.points) for rule in events],
            [float(rule.half_life_days) if rule.half_life_days else None for rule in events],
            list(contact_ids),
            now,
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for contact_id, rule_id, value in cursor.fetchall():
                cap = by_id[rule_id].max_points
                value = float(value)
                if cap is not None and abs(value) > cap:
                    value = cap if value > 0 else -cap
                points[contact_id][rule_id] = value
    rows = []
    for contact_id in contact_ids:
        given = points.get(contact_id, {})
        explanation = [
            {"rule": by_id[rule_id].name, "points": round(value, 1)}
            for rule_id, value in given.items()
            if round(value, 1) != 0
        ]
        explanation.sort(key=lambda item: (-item["points"], item["rule"]))
        score = max(0, min(100, round(sum(given.values()))))
        rows.append((contact_id, score, explanation))
    return rows


def profile_rule_q(rule: ScoringRule) -> Q:
    """The condition a profile rule states, as a Q over Contact. ValidationError when the
    rule's value does not fit the field."""
    field, operator = rule.field, rule.operator
    kind = SCORABLE_FIELDS[field]
    model_field = Contact._meta.get_field(field)
    if operator == ScoringRule.Operator.PRESENT:
        if kind == "text":
            return Q(**{f"{field}__isnull": False}) & ~Q(**{field: ""})
        if kind == "array":
            return Q(**{f"{field}__len__gt": 0})
        if kind == "boolean":
            return Q(**{field: True})
        return Q(**{f"{field}__isnull": False})
    if operator == ScoringRule.Operator.CONTAINS:
        return Q(**{f"{field}__contains": [rule.value.strip().lower()]})
    if kind == "boolean":
        value: Any = rule.value.strip().lower() in ("true", "1", "yes", "t")
    elif kind == "text":
        value = rule.value
    else:
        value = model_field.to_python(rule.value)
    if operator == ScoringRule.Operator.GTE:
        return Q(**{f"{field}__gte": value})
    if operator == ScoringRule.Operator.LTE:
        return Q(**{f"{field}__lte": value})
    equals = Q(**{f"{field}__iexact": value}) if kind == "text" else Q(**{field: value})
    return ~equals if operator == ScoringRule.Operator.NOT_EQUALS else equals


def clv_row_batches(
    *,
    lifetime_years: Decimal,
    currency: str,
    now: dt.datetime,
    contact_ids: Iterable[int] | None = None,
    size: int = 5000,
) -> Iterator[list[tuple[int, Decimal]]]:
    """(contact id, CLV in `currency`) in batches, computed in SQL from the paid orders in
    `currency`:

        CLV = average order value * purchase frequency * expected lifetime (years)

    where purchase frequency = paid orders per year since the first paid order (that span
    counted as at least a month). Then (contact id, 0) for contacts holding a CLV but no paid
    order in `currency` any more (refunded, cancelled). Orders in other currencies are left out
    entirely (their amounts, their count, their dates): with no exchange rate, adding them would
    mix currencies in one figure."""
    ids = sorted(set(contact_ids)) if contact_ids is not None else None
    only = " AND o.contact_id = ANY(%(ids)s::bigint[])" if ids is not None else ""
    sql = f"""
        SELECT o.contact_id,
               LEAST(ROUND(
                   AVG(o.amount)
                   * (COUNT(*) / GREATEST(
                         EXTRACT(EPOCH FROM (%(now)s - MIN(COALESCE(o.paid_at, o.created_at)))) / 31557600.0,
                         1.0 / 12))
                   * %(lifetime)s, 2), 9999999999.99)
        FROM contacts_order o
        WHERE o.status = 'paid' AND o.currency = %(currency)s AND o.contact_id > %(after)s{only}
        GROUP BY o.contact_id
        ORDER BY o.contact_id
        LIMIT %(size)s
    """  # noqa: S608 - the fragment is a literal above; values are parameters
    yield from _keyset(sql, {"now": now, "lifetime": lifetime_years, "currency": currency, "ids": ids, "size": size})
    only = " AND c.id = ANY(%(ids)s::bigint[])" if ids is not None else ""
    sql = f"""
        SELECT c.id, 0::numeric FROM contacts_contact c
        WHERE c.clv <> 0 AND c.id > %(after)s{only}
          AND NOT EXISTS (
              SELECT 1 FROM contacts_order o
              WHERE o.contact_id = c.id AND o.status = 'paid' AND o.currency = %(currency)s
          )
        ORDER BY c.id
        LIMIT %(size)s
    """  # noqa: S608 - the fragment is a literal above; values are parameters
    yield from _keyset(sql, {"currency": currency, "ids": ids, "size": size})


def _keyset(sql: str, params: dict[str, Any]) -> Iterator[list[tuple[int, Decimal]]]:
    after = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, "after": after})
            rows = [(contact_id, Decimal(value)) for contact_id, value in cursor.fetchall()]
        if not rows:
            return
        yield rows
        if len(rows) < params["size"]:
            return
        after = rows[-1][0]
