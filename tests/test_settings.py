"""Production mode: `check --deploy` clean with a secret and hosts; no secret, no start."""

import subprocess

import pytest

from tests.support import PYTHON_BIN, ROOT, django_env, other_connection

# Production mode has no default for the field-encryption keys either (compliance/crypto.py).
FIELD_KEYS = {
    "FIELD_ENCRYPTION_KEYS": "Xb0l5qJm1e6rV8q2d3f4g5h6j7k8l9m0n1p2q3r4s5t=",
    "FIELD_HMAC_KEY": "hmac-key-for-the-production-mode-tests-0123456789",
}


def manage(*args, **env):
    child_env = django_env(**env)
    return subprocess.run(
        [str(PYTHON_BIN / "python"), "manage.py", *args], cwd=ROOT, env=child_env, capture_output=True, text=True
    )


@pytest.mark.integration
def test_production_mode_passes_check_deploy():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="x" * 30 + "Q7#kP2$wZ9!mN4&vB8^cL1*rT6@yH3%jF5",
        DJANGO_ALLOWED_HOSTS="crm.example.com",
        **FIELD_KEYS,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "FIELD_ENCRYPTION_KEYS", "FIELD_HMAC_KEY"]
)
def test_production_mode_refuses_to_start_without_secrets(missing):
    env = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "s" * 60, "DJANGO_ALLOWED_HOSTS": "crm.example.com"}
    env.update(FIELD_KEYS)
    env[missing] = ""
    child = django_env(**env)
    del child[missing]
    result = subprocess.run(
        [str(PYTHON_BIN / "python"), "manage.py", "check"], cwd=ROOT, env=child, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert missing in result.stderr


@pytest.mark.integration
def test_secret_key_never_appears_in_output():
    secret = "very-secret-value-" + "z" * 40
    result = manage(
        "check", DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secret, DJANGO_ALLOWED_HOSTS="a.example", **FIELD_KEYS
    )
    assert secret not in result.stdout + result.stderr
    assert FIELD_KEYS["FIELD_ENCRYPTION_KEYS"] not in result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(("value", "expected"), [("false", "False"), (None, "True")])
def test_db_prepared_statements_is_read_from_the_environment(value, expected):
    env = django_env()
    env.pop("DB_PREPARED_STATEMENTS", None)
    if value is not None:
        env["DB_PREPARED_STATEMENTS"] = value
    code = "from django.conf import settings; print(settings.DB_PREPARED_STATEMENTS)"
    command = [str(PYTHON_BIN / "python"), "manage.py", "shell", "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("API_THROTTLE_KEY_RATE", "100/fortnight", "api_key"),
        ("API_THROTTLE_APP_USER_RATE", "lots", "app_user"),
        ("IDEMPOTENCY_TTL_DAYS", "0", "IDEMPOTENCY_TTL_DAYS"),
        ("DB_IDLE_IN_TRANSACTION_TIMEOUT", "-1", "DB_IDLE_IN_TRANSACTION_TIMEOUT"),
        ("CRM_REPORTING_CURRENCY", "dollars", "CRM_REPORTING_CURRENCY"),
    ],
)
def test_a_mistyped_limit_stops_the_process_at_start_not_each_request(name, value, named):
    """A throttle rate DRF cannot read made every API request a 500; found by a review."""
    result = manage("check", **{name: value})
    assert result.returncode != 0 and named in result.stderr, result.stderr


@pytest.mark.integration
def test_a_rate_period_is_read_by_its_first_letter_as_drf_reads_it():
    code = (
        "from crm_platform.rates import parse_rate; "
        "from django.conf import settings; print(parse_rate(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['bulk']))"
    )
    result = manage("shell", "-c", code, API_THROTTLE_BULK_RATE="50/hours")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(50, 3600)"


@pytest.mark.integration
@pytest.mark.parametrize("empty", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"])
def test_production_mode_refuses_to_start_with_an_empty_secret_or_host_list(empty):
    """`DJANGO_SECRET_KEY=` left empty in a .env started the process (check clean), then every
    admin page was a 500 ("SECRET_KEY must not be empty"); an empty host list refused every request."""
    env = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "s" * 60, "DJANGO_ALLOWED_HOSTS": "crm.example.com"}
    env.update(FIELD_KEYS)
    env[empty] = " "
    result = manage("check", **env)
    assert result.returncode != 0, result.stdout
    assert empty in result.stderr


@pytest.mark.integration
def test_production_mode_refuses_to_start_with_a_malformed_encryption_key():
    """A mistyped FIELD_ENCRYPTION_KEYS passed `check --deploy`; the first medical field written failed."""
    second = "not-a-fernet-key-but-a-secret-0123"
    result = manage(
        "check",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="s" * 60,
        DJANGO_ALLOWED_HOSTS="crm.example.com",
        FIELD_ENCRYPTION_KEYS=FIELD_KEYS["FIELD_ENCRYPTION_KEYS"] + "," + second,
        FIELD_HMAC_KEY=FIELD_KEYS["FIELD_HMAC_KEY"],
    )
    assert result.returncode != 0, result.stdout
    assert "FIELD_ENCRYPTION_KEYS entry #2 is not a Fernet key" in result.stderr
    assert second not in result.stdout + result.stderr


# --------------------------------------------------------------------------- database connections
# A worker that hung or lost its host inside a transaction held its row locks (an outbox claim)
# for good, and a connection whose server vanished hung its worker for the OS's two hours.


def _test_database_url(query: str = "") -> str:
    """DATABASE_URL for a child process: the test database, as this process reaches it."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    auth = f"{quote(db['USER'], safe='')}:{quote(db['PASSWORD'], safe='')}"
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}{query}"


@pytest.mark.django_db
def test_django_connections_have_tcp_keepalives_and_an_idle_in_transaction_timeout(settings):
    """A half-open connection is found dead within 30 + 3 x 10 s (the OS default is two hours)."""
    from django.db import connection

    connection.ensure_connection()
    parameters = connection.connection.info.get_parameters()
    keepalives = ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count")
    assert [parameters.get(name) for name in keepalives] == ["1", "30", "10", "3"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting::int FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'")
        assert cursor.fetchone()[0] == settings.DB_IDLE_IN_TRANSACTION_TIMEOUT * 1000 == 120_000
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone()[0] == "2min"


# Run by a child process against the test database: a transaction left idle past the timeout.
IDLE_IN_TRANSACTION = """
import time
from django.db import DatabaseError, connection, transaction
with connection.cursor() as cursor:
    cursor.execute("SHOW idle_in_transaction_session_timeout")
    print("timeout", cursor.fetchone()[0])
try:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        time.sleep(2.5)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    print("survived")
except DatabaseError as exc:
    print("ended:", exc)
"""


@pytest.mark.integration
@pytest.mark.django_db
def test_a_session_left_idle_in_a_transaction_is_ended_by_the_server():
    result = manage(
        "shell", "-c", IDLE_IN_TRANSACTION, DATABASE_URL=_test_database_url(), DB_IDLE_IN_TRANSACTION_TIMEOUT="1"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "timeout 1s"
    assert lines[-1].startswith("ended:") and "idle-in-transaction timeout" in lines[-1], lines[-1]


SHOW_CONNECTION = """
from django.db import connection
connection.ensure_connection()
with connection.cursor() as cursor:
    cursor.execute("SELECT current_setting('search_path'), current_setting('idle_in_transaction_session_timeout')")
    print(*cursor.fetchone(), connection.connection.info.get_parameters().get("connect_timeout"), sep="|")
"""


@pytest.mark.integration
@pytest.mark.django_db
def test_database_url_options_are_kept_beside_ours():
    """env.db() turns DATABASE_URL's query string into OPTIONS: its own `options` and
    connect_timeout stay, and the idle timeout is added to them."""
    query = "?options=-c%20search_path%3Dpublic,extra&connect_timeout=9"
    result = manage(
        "shell", "-c", SHOW_CONNECTION, DATABASE_URL=_test_database_url(query), DB_IDLE_IN_TRANSACTION_TIMEOUT="45"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "public,extra|45s|9"


@pytest.mark.integration
@pytest.mark.django_db
def test_an_idle_in_transaction_timeout_of_zero_leaves_the_servers_own():
    """Behind PgBouncer, which refuses the `options` startup parameter, the role's setting is used."""
    with other_connection() as plain:  # a session without our options
        search_path, server_own = plain.execute(
            "SELECT current_setting('search_path'), current_setting('idle_in_transaction_session_timeout')"
        ).fetchone()
    result = manage(
        "shell", "-c", SHOW_CONNECTION, DATABASE_URL=_test_database_url(), DB_IDLE_IN_TRANSACTION_TIMEOUT="0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{search_path}|{server_own}|3"
