import pytest
from django.conf import settings
from django.test import override_settings

from crm_platform.api.throttling import (
    sliding_window_hit,
    sliding_window_hits,
    sliding_window_hits_members,
    sliding_window_refund,
)
from crm_platform.rates import parse_rate

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls")]


def rates(**overrides):
    return override_settings(
        REST_FRAMEWORK={
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **overrides},
        }
    )


def test_key_over_its_rate_gets_429_with_retry_after(key_client):
    client = key_client()
    with rates(api_key="3/min"):
        statuses = [client.get("/t/echo").status_code for _ in range(4)]
        response = client.get("/t/echo")
    assert statuses == [200, 200, 200, 429]
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60


def test_each_key_has_its_own_budget(key_client):
    first, second = key_client(name="one"), key_client(name="two")
    with rates(api_key="2/min"):
        assert [first.get("/t/echo").status_code for _ in range(3)] == [200, 200, 429]
        assert second.get("/t/echo").status_code == 200


def test_a_rotated_key_shares_its_predecessors_budget(make_key, system_actor):
    """During the overlap both keys work; they are one client, so one budget, not two."""
    from datetime import timedelta

    from rest_framework.test import APIClient

    from crm_platform.services import api_key_rotate

    old, old_raw = make_key()
    _, new_raw = api_key_rotate(api_key=old, actor=system_actor, overlap=timedelta(hours=1))
    clients = []
    for raw in (old_raw, new_raw):
        clients.append(APIClient())
        clients[-1].credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    with rates(api_key="3/min"):
        assert [c.get("/t/echo").status_code for c in clients * 2] == [200, 200, 200, 429]


def test_staff_users_are_limited_per_user(admin_client):
    with rates(user="2/min"):
        assert [admin_client.get("/t/echo").status_code for _ in range(3)] == [200, 200, 429]


def test_public_routes_are_limited_per_address(client):
    with rates(anon="2/min"):
        assert [client.get("/api/schema/").status_code for _ in range(3)] == [200, 200, 429]
        assert client.get("/api/schema/", REMOTE_ADDR="10.9.9.9").status_code == 200


def test_rate_limiter_fails_open_when_redis_is_down(key_client):
    client = key_client()
    with rates(api_key="1/min"), override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        assert [client.get("/t/echo").status_code for _ in range(3)] == [200, 200, 200]


def test_sliding_window_counts_the_previous_window():
    # 10/min: 10 hits late in one window still weigh on the start of the next.
    for _ in range(10):
        assert sliding_window_hit("unit", 10, 60, now=119.0) is None
    wait = sliding_window_hit("unit", 10, 60, now=121.0)
    assert wait is not None and wait >= 1
    assert sliding_window_hit("unit", 10, 60, now=175.0) is None


def test_a_groups_members_counted_many_at_once_share_their_one_at_a_time_windows():
    """sliding_window_hits_members (a batch's app users) admits each member's hits while they
    fit and counts those only, in the same counters a member window of sliding_window_hits (a
    single event's) counts, the previous window included (10 a minute here)."""
    assert sliding_window_hits_members("group", {"a": 6, "b": 1}, 10, 60, 119.0) == {}
    assert sliding_window_hits([("group", 10, 60, "a")], now=119.0) == [None]  # a: 7
    short = sliding_window_hits_members("group", {"a": 4, "b": 2, "c": 1}, 10, 60, 119.5)
    assert short.keys() == {"a"} and short["a"][0] == 3 and short["a"][1] >= 1  # a: 10, b: 3, c: 1
    # The next window still weighs the last one: a (10 then) is over, b (3 then) is not.
    a_wait, b_wait = sliding_window_hits([("group", 10, 60, "a"), ("group", 10, 60, "b")], now=121.0)
    assert a_wait is not None and a_wait >= 1 and b_wait is None
    # Late in that window the last one has faded: a (10 x 5/60 + 1 + 1) fits again.
    assert sliding_window_hits_members("group", {"a": 1}, 10, 60, 175.0) == {}
    assert sliding_window_hits_members("other", {"a": 11}, 10, 60, 119.0)["a"][0] == 10  # groups apart
    assert sliding_window_hits_members("other", {"a": 1}, 10, 60, 119.0)["a"][0] == 0  # full: none admitted


def test_hits_taken_back_free_their_places_in_the_window_they_were_counted_in():
    assert sliding_window_hits_members("group", {"a": 10}, 10, 60, 119.0) == {}
    assert sliding_window_hits_members("group", {"a": 1}, 10, 60, 119.1)["a"][0] == 0  # full
    sliding_window_refund("group", {"a": 4, "b": 3}, 60, 119.0)  # b had none: stays at 0, not -3
    short = sliding_window_hits_members("group", {"a": 5, "b": 10}, 10, 60, 119.2)
    assert short.keys() == {"a"} and short["a"][0] == 4


def test_batch_admission_agrees_with_one_at_a_time_at_whole_weights():
    """At a weighted previous count that is a whole number (108 x 35/60 = 63 exactly), the
    batch admits exactly as many as one-at-a-time hits would let in."""
    sliding_window_hits_members("w", {"m": 108}, 200, 60, 59.0)  # the previous window: 108
    sliding_window_hits_members("w", {"m": 29}, 200, 60, 61.0)  # this one: 29
    admitted = sliding_window_hits_members("w", {"m": 200}, 100, 60, 85.0)["m"][0]
    assert admitted == 100 - 63 - 29 == 8


def test_parse_rate():
    assert parse_rate("100/min") == (100, 60)
    assert parse_rate("5/s") == (5, 1)
    assert parse_rate("100000/minute") == (100000, 60)
    assert parse_rate(" 3 / Hours ") == (3, 3600)
    for bad in ("100", "x/min", "10/week", "10/m1n", "²/min", "10/"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_a_retry_with_a_used_idempotency_key_is_answered_as_then_not_429(key_client):
    """README (Idempotency): "A request over its rate limits whose key was used before is still
    answered as then, not 429": a client retrying a request whose answer it lost must get that
    answer. Only the event routes did so; the other idempotent POSTs (here the bulk upsert, 1,000
    an hour per key) answered the retry 429, although it costs nothing."""
    client = key_client(["contacts:write"])
    body = {"contacts": [{"email": "retry@example.com"}]}
    with rates(bulk="1/hour"):
        first = client.post("/api/v1/contacts/bulk-upsert", body, format="json", HTTP_IDEMPOTENCY_KEY="bulk-1")
        retry = client.post("/api/v1/contacts/bulk-upsert", body, format="json", HTTP_IDEMPOTENCY_KEY="bulk-1")
        other = client.post("/api/v1/contacts/bulk-upsert", body, format="json", HTTP_IDEMPOTENCY_KEY="bulk-2")
    assert first.status_code == 200
    assert retry.status_code == 200, retry.content[:300]
    assert retry["Idempotent-Replayed"] == "true" and retry.json() == first.json()
    assert other.status_code == 429  # a new key is new work: still limited
