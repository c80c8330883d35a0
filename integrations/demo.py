"""Demo data of the integrations app: the company app's API key, a few dozen app events sent
under it and applied at once, and one webhook endpoint, disabled.

The events take the batch route's own path (`batch_queue`: the door's checks, one idempotency
key per event, one INSERT into the inbox), then the applier (`inbox_apply`) runs here, as the
worker would, so the inbox, the sync log, tickets and timelines show applied rows without a
worker. They name the leads app's demo people (leads runs earlier) and a few new app sign-ups.
Two go wrong on purpose, as some do in real life: one names a user nobody knows (refused at
the door: a failed sync event) and one cancels a subscription that does not exist (applied and
failed: a failed inbox row, which staff may apply again).

The endpoint is disabled (the relay routes only to enabled endpoints, so nothing is sent to
it) and its host is under example.com, reserved for documentation. Its deliveries page stays
empty: a delivery row records a real HTTP attempt, and a seed should make none.

Idempotent: the events are skipped when the app's key exists, the endpoint when its URL does.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.utils import timezone

from contacts.models import Contact
from crm_platform.models import ApiKey
from crm_platform.services import api_key_create
from integrations.inbound_apis import batch_queue
from integrations.inbox import inbox_apply
from integrations.models import WebhookEndpoint
from integrations.services import webhook_endpoint_create, webhook_endpoint_disable
from leads.demo import DOMAIN as LEADS_DOMAIN

APP_KEY_NAME = "Demo app (seed_demo)"
ENDPOINT_URL = "https://hooks.example.com/crm"
ENDPOINT_EVENTS = ["contact.created", "lead.captured", "deal.won", "order.placed", "assessment.completed"]
# New app users: app user id, first, last, country, time zone.
SIGN_UPS = [
    ("demo-app-1001", "Maya", "Patel", "US", "America/New_York"),
    ("demo-app-1002", "Lucas", "Meyer", "DE", "Europe/Berlin"),
    ("demo-app-1003", "Zoe", "Campbell", "GB", "Europe/London"),
    ("demo-app-1004", "Ethan", "Nakamura", "US", "America/Los_Angeles"),
]
APP_DOMAIN = "app.demo.example"
LEAD_PEOPLE = 10  # of the leads app's demo people, this many use the app too
FOODS = [("Greek yogurt", "breakfast"), ("Chicken salad", "lunch"), ("Lentil soup", "dinner"), ("Apple", "snack")]
TICKETS = [
    ("Cannot sync my step counter", "The app stopped reading steps from my watch yesterday.", "normal"),
    ("Charged twice this month", "My card shows two payments for the same plan.", "high"),
]


def seed(*, actor, rng, stdout) -> str:
    return f"{_app_events(actor=actor, rng=rng)}; {_endpoint(actor=actor)}"


def _app_events(*, actor, rng) -> str:
    if ApiKey.objects.filter(name=APP_KEY_NAME).exists():
        return "demo app events already loaded"
    # The raw key is dropped unseen: no one can send with it; the inbox names it as the sender.
    key, _ = api_key_create(
        name=APP_KEY_NAME,
        scopes=["events:read", "events:write"],
        description="The company app, as the demo data has it (its key was never shown).",
        actor=actor,
    )
    emails = list(
        Contact.objects.filter(email__endswith=f"@{LEADS_DOMAIN}", merged_into__isnull=True, is_archived=False)
        .order_by("pk")
        .values_list("email", flat=True)[:LEAD_PEOPLE]
    )
    items = _events(emails=emails, rng=rng, now=timezone.now())
    results = batch_queue(items, actor=actor, owner=key.owner)
    queued = sum(result["status"] == "accepted" for result in results)
    counts = inbox_apply(budget_seconds=30)
    return (
        f"{queued} app events queued ({len(items) - queued} refused at the door); "
        f"{counts['applied']} applied, {counts['failed']} failed"
    )


def _events(*, emails: list[str], rng, now: dt.datetime) -> list[dict]:
    """The events as the app would send them in a batch, oldest first for each user."""
    events: list[dict] = []

    def add(kind: str, user: dict, hours_ago: float, **properties) -> None:
        occurred_at = now - dt.timedelta(hours=hours_ago)
        events.append(
            {
                "id": f"seed-demo-{len(events) + 1:03d}",
                "type": kind,
                "occurred_at": occurred_at.isoformat(),
                "user": user,
                "properties": properties,
            }
        )

    for n, (external_id, first, last, country, time_zone) in enumerate(SIGN_UPS):
        user = {"external_id": external_id}
        start = rng.randint(72, 200)
        add(
            "account_created",
            {**user, "email": f"{first}.{last}@{APP_DOMAIN}".lower()},
            start,
            first_name=first,
            last_name=last,
            country=country,
            time_zone=time_zone,
        )
        add("onboarding_completed", user, start - 1, steps_completed=6, duration_seconds=rng.randint(120, 600))
        add("user_logged_in", user, start - 20, method=rng.choice(["password", "apple", "google"]), platform="ios")
        for hours in (start - 21, start - 30):
            food, meal = rng.choice(FOODS)
            add("food_logged", user, hours, food_name=food, meal=meal, calories=rng.randint(90, 650))
        add(
            "goal_progress",
            user,
            start - 40,
            goal_id=f"goal-{external_id}",
            goal_type="activity",
            goal_value=8000,
            goal_unit="steps",
            progress_pct=rng.randint(20, 95),
            streak_days=rng.randint(1, 9),
        )
        if n == 0:
            add("order_placed", user, start - 45, order_id="demo-order-1001", amount="79.00", currency="USD")
            add(
                "subscription_started",
                user,
                start - 45,
                subscription_id="demo-sub-1001",
                plan="Foundation monthly",
                amount="79.00",
            )
            # The same order id again with another amount: the applier fails this one.
            add("order_placed", user, start - 44, order_id="demo-order-1001", amount="99.00", currency="USD")
        if n == 1:
            add(
                "assessment_completed",
                user,
                start - 2,
                assessment_id="demo-assessment-1002",
                assessmentType="sleep",
                readinessScore=rng.randint(40, 90),
            )
        if n == 2:
            subject, body, priority = TICKETS[0]
            add("support_ticket_created", user, start - 48, subject=subject, body=body, priority=priority)
    for n, email in enumerate(emails):
        user = {"email": email}
        hours = rng.randint(2, 60)
        add("user_logged_in", user, hours + 1, method="password", platform=rng.choice(["ios", "android", "web"]))
        kind = ["page_viewed", "food_logged", "goal_progress", "review_left", "referral_made"][n % 5]
        if kind == "page_viewed":
            add(kind, user, hours, path="/programmes/sleep", title="Sleep programme", utm_source="newsletter")
        elif kind == "food_logged":
            food, meal = rng.choice(FOODS)
            add(kind, user, hours, food_name=food, meal=meal, calories=rng.randint(90, 650))
        elif kind == "goal_progress":
            add(kind, user, hours, goal_type="water", goal_value=2, goal_unit="l", progress_pct=rng.randint(30, 100))
        elif kind == "review_left":
            add(kind, user, hours, rating=rng.choice([4, 5]), title="Helpful coaching", platform="app_store")
        else:
            add(kind, user, hours, referral_code=f"REF{rng.randint(1000, 9999)}", channel="share_sheet")
        if n == 1:
            subject, body, priority = TICKETS[1]
            add("support_ticket_created", user, hours - 1, subject=subject, body=body, priority=priority)
    # An app user the CRM does not know (a sign-up that never reached us): refused at the door.
    add("food_logged", {"external_id": "demo-app-0999"}, 3, food_name="Banana", meal="snack", calories=105)
    return events


def _endpoint(*, actor) -> str:
    if WebhookEndpoint.objects.filter(url=ENDPOINT_URL).exists():
        return "demo webhook endpoint already there"
    try:
        endpoint, _ = webhook_endpoint_create(
            url=ENDPOINT_URL,
            description="Demo endpoint (seed_demo), disabled: nothing is sent to it",
            event_types=ENDPOINT_EVENTS,
            actor=actor,
        )
    except ValidationError as exc:  # production settings look the host up, and it may not resolve
        return f"demo webhook endpoint not made ({' '.join(exc.messages)})"
    # In the same transaction as its creation: no relay ever sees it enabled.
    webhook_endpoint_disable(endpoint=endpoint, reason="demo endpoint: never sends", actor=actor)
    return "1 webhook endpoint (disabled)"
