"""Settings for crm_platform: one module, every value from the environment (django-environ).

Development (DJANGO_DEBUG=true) has safe defaults; production mode (the default when
DJANGO_DEBUG is unset) has no default for any secret and passes `manage.py check --deploy`.
`.env.example` documents every variable.
"""

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Real environment variables win; then the env file (.env, or DJANGO_ENV_FILE; empty: none, as
# the test suite runs); then the URLs scripts/services wrote.
ENV_FILE = os.environ.get("DJANGO_ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE:
    environ.Env.read_env(ENV_FILE, overwrite=False)
environ.Env.read_env(BASE_DIR / ".data" / "services.env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)

if DEBUG:
    SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key-change-me-0123456789")
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
else:
    SECRET_KEY = env("DJANGO_SECRET_KEY")
    ALLOWED_HOSTS = [host.strip() for host in env.list("DJANGO_ALLOWED_HOSTS") if host.strip()]
    # Set but empty (`DJANGO_SECRET_KEY=` left in a .env) is as good as unset: Django would start
    # and then fail every signed request (empty key) or refuse every host (empty list).
    for _name, _value in (("DJANGO_SECRET_KEY", SECRET_KEY.strip()), ("DJANGO_ALLOWED_HOSTS", ALLOWED_HOSTS)):
        if not _value:
            raise ImproperlyConfigured(f"Set the {_name} environment variable (it is empty; production needs it).")

CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Field encryption at rest (compliance/crypto.py). FIELD_ENCRYPTION_KEYS: comma-separated Fernet
# keys, the first encrypts, all decrypt (rotation: prepend a new key, run
# `manage.py rotate_encryption_keys`, then drop the old one). FIELD_HMAC_KEY keys the lookup
# hashes (suppression list, HMAC columns); changing it orphans every stored hash. In development
# both default to values derived from SECRET_KEY; production has no default, because data
# encrypted under a key nobody chose is data nobody can recover.
FIELD_ENCRYPTION_KEYS = [k.strip() for k in env.list("FIELD_ENCRYPTION_KEYS", default=[]) if k.strip()]
FIELD_HMAC_KEY = env("FIELD_HMAC_KEY", default="")
if DEBUG:
    import base64
    import hashlib

    def _derived_key(label: str) -> str:
        digest = hashlib.sha256(f"crm_platform:{label}:v1:{SECRET_KEY}".encode()).digest()
        return base64.urlsafe_b64encode(digest).decode()

    FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or [_derived_key("field-encryption")]
    FIELD_HMAC_KEY = FIELD_HMAC_KEY or _derived_key("field-hmac")
else:
    for _name, _value in (("FIELD_ENCRYPTION_KEYS", FIELD_ENCRYPTION_KEYS), ("FIELD_HMAC_KEY", FIELD_HMAC_KEY.strip())):
        if not _value:
            raise ImproperlyConfigured(
                f"Set the {_name} environment variable (production mode has no default). Generate one with: "
                'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            )


def _check_fernet_keys(keys: list[str]) -> None:
    """Every FIELD_ENCRYPTION_KEYS entry must be a Fernet key: checked here, so a mistyped key stops
    the process at start instead of failing the first write of a medical field. Names the
    position, never the value."""
    from cryptography.fernet import Fernet

    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"FIELD_ENCRYPTION_KEYS entry #{position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                'generate with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())").'
            ) from None


_check_fernet_keys(FIELD_ENCRYPTION_KEYS)

INSTALLED_APPS = [
    # django.contrib.admin, with our admin site: TOTP for staff in production (compliance/security.py).
    "compliance.admin_site.StaffAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "crm_platform",
    "compliance",
    "contacts",
    "leads",
    "campaigns",
    "scheduling",
    "coaching",
    "integrations",
]

MIDDLEWARE = [
    "crm_platform.middleware.RequestIdMiddleware",
    "crm_platform.middleware.HealthProbeMiddleware",
    "crm_platform.middleware.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "compliance.security.AdminContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "compliance.security.SessionIdleTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "crm_platform.middleware.JsonErrorMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "crm_platform.urls"
WSGI_APPLICATION = "crm_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --------------------------------------------------------------------------- data stores
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# libpq connection options. A value DATABASE_URL's query string gives (?connect_timeout=10,
# ?options=-c ...) wins over these; the other OPTIONS (sslmode, pool, ...) are kept.
_db_options = DATABASES["default"].setdefault("OPTIONS", {})
_db_options.setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=3))
# TCP keepalives: a connection whose peer vanished (a host gone, a network cut, a NAT that
# forgot it) is found dead after idle + interval x count seconds (the OS default is two hours),
# instead of a worker hanging on it.
if env.bool("DB_KEEPALIVES", default=True):
    _db_options.setdefault("keepalives", 1)
    _db_options.setdefault("keepalives_idle", env.int("DB_KEEPALIVES_IDLE", default=30))
    _db_options.setdefault("keepalives_interval", env.int("DB_KEEPALIVES_INTERVAL", default=10))
    _db_options.setdefault("keepalives_count", env.int("DB_KEEPALIVES_COUNT", default=3))
# The server ends a session that sits idle inside a transaction this long (seconds): a worker
# that hung or lost its host mid-transaction otherwise holds its row locks (an outbox claim,
# FOR UPDATE SKIP LOCKED) for good. The longest legitimate wait between two statements of one
# of our transactions: a relay batch sending webhooks (no statement between sends) for up to its
# 50 s budget plus one send's timeouts, in a task killed at 120 s. No statement_timeout: long
# set-based jobs (purges, recomputes, generate_data's COPY) are legitimate.
# 0: not sent (the server's or the role's setting applies; PgBouncer refuses `options`).
DB_IDLE_IN_TRANSACTION_TIMEOUT = env.int("DB_IDLE_IN_TRANSACTION_TIMEOUT", default=120)
if DB_IDLE_IN_TRANSACTION_TIMEOUT < 0:
    raise ImproperlyConfigured("DB_IDLE_IN_TRANSACTION_TIMEOUT is in seconds, 0 or more (0: not set).")
if DB_IDLE_IN_TRANSACTION_TIMEOUT and "idle_in_transaction_session_timeout" not in _db_options.get("options", ""):
    _idle = f"-c idle_in_transaction_session_timeout={DB_IDLE_IN_TRANSACTION_TIMEOUT}s"
    _db_options["options"] = f"{_db_options.get('options', '')} {_idle}".strip()
# Server-side prepared statements for the few hot statements the event inbox sends through its
# server-binding cursor (integrations.inbox._prepared_cursor), prepared at first use on each
# connection. Django's own queries are never prepared (psycopg's preparing stays off on the
# connection otherwise). Off behind a pooler in transaction mode that cannot keep them.
DB_PREPARED_STATEMENTS = env.bool("DB_PREPARED_STATEMENTS", default=True)
DATABASES["default"]["TEST"] = {"NAME": env("DATABASE_TEST_NAME", default="test_crm")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "crm",
        "TIMEOUT": 300,
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}

# --------------------------------------------------------------------------- auth & security
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Staff sessions end after SESSION_IDLE_TIMEOUT idle seconds, checked by
# compliance.security.SessionIdleTimeoutMiddleware, which refreshes the session at most once a
# minute (not SESSION_SAVE_EVERY_REQUEST, which rewrites the session row on every page).
SESSION_IDLE_TIMEOUT = env.int("SESSION_IDLE_SECONDS", default=15 * 60)
SESSION_COOKIE_AGE = SESSION_IDLE_TIMEOUT + 60
SESSION_SAVE_EVERY_REQUEST = False
# django-axes: after AXES_FAILURE_LIMIT failed logins for one username from one address, that
# pair is locked out for AXES_COOLOFF_MINUTES (a pair, so nobody can lock a colleague out from
# elsewhere by guessing their name).
AUTHENTICATION_BACKENDS = ["compliance.security.LockoutBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "compliance.security.axes_client_ip"
AXES_VERBOSE = False
# django-otp: staff must give a TOTP code at the admin login in production, always; in
# development only with OTP_REQUIRED_FOR_STAFF=true.
OTP_REQUIRED_FOR_STAFF = True if not DEBUG else env.bool("OTP_REQUIRED_FOR_STAFF", default=False)
OTP_TOTP_ISSUER = env("OTP_TOTP_ISSUER", default="crm_platform")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading binds the whole domain to HTTPS for years; its owner opts in, we do not.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # The load balancer terminates TLS and says so in this header.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # /healthz and /readyz are probed over plain HTTP from inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Number of reverse proxies in front of us whose X-Forwarded-For entries we trust (0: use REMOTE_ADDR).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# --------------------------------------------------------------------------- i18n & static
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --------------------------------------------------------------------------- API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "crm_platform.api.authentication.ApiKeyAuthentication",
        "crm_platform.api.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["crm_platform.api.permissions.ScopePermission"],
    "DEFAULT_THROTTLE_CLASSES": ["crm_platform.api.throttling.PrincipalRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env("API_THROTTLE_KEY_RATE", default="100000/min"),
        "user": env("API_THROTTLE_USER_RATE", default="600/min"),
        "anon": env("API_THROTTLE_ANON_RATE", default="1000/min"),
        "bulk": env("API_THROTTLE_BULK_RATE", default="1000/hour"),
        "app_user": env("API_THROTTLE_APP_USER_RATE", default="100/min"),
    },
    "DEFAULT_PAGINATION_CLASS": "crm_platform.api.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "crm_platform.api.schema.AutoSchema",  # errors, Idempotency-Key (its docstring)
    "EXCEPTION_HANDLER": "crm_platform.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # Strict JSON on every route (NaN, 1e400, lone surrogates, NUL and integers beyond 64 bits
    # refused with a 400): what DRF's parser lets through, the database or renderer chokes on.
    "DEFAULT_PARSER_CLASSES": ["crm_platform.api.fastjson.FastJSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}


def _check_rates(rates: dict[str, str]) -> None:
    """Each rate read as the throttles read it (crm_platform.rates), so a mistyped one stops the
    process at start instead of failing every request; empty: no limit."""
    from crm_platform.rates import parse_rate

    for name, rate in rates.items():
        try:
            if rate:
                parse_rate(rate)
        except ValueError:
            raise ImproperlyConfigured(
                f"Throttle rate {name!r} is {rate!r}: write <count>/<period>, the period second, minute, hour or "
                "day (e.g. 100/min)."
            ) from None


_check_rates(REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
# Seconds a verified API key is remembered in Redis; a revocation clears it at once.
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=30)
# ... and in each process for this long (no Redis round trip); a revocation reaches the other
# processes within it (0: every request asks Redis).
API_KEY_LOCAL_CACHE_SECONDS = env.int("API_KEY_LOCAL_CACHE_SECONDS", default=2)
API_KEY_ROTATION_OVERLAP_HOURS = env.int("API_KEY_ROTATION_OVERLAP_HOURS", default=24)
# Idempotency-Key records: kept this many days; a claim in flight longer than this many
# seconds (its process died) may be taken over by a retry.
IDEMPOTENCY_TTL_DAYS = env.int("IDEMPOTENCY_TTL_DAYS", default=7)
if IDEMPOTENCY_TTL_DAYS < 1:  # CONTRACTS.md: keys are kept at least 24 hours
    raise ImproperlyConfigured("IDEMPOTENCY_TTL_DAYS must be at least 1 (keys are kept at least 24 hours).")
IDEMPOTENCY_IN_FLIGHT_SECONDS = env.int("IDEMPOTENCY_IN_FLIGHT_SECONDS", default=300)

SPECTACULAR_SETTINGS = {
    "TITLE": "crm_platform API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "OAS_VERSION": "3.0.3",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per choice set that several serializers share.
    "ENUM_NAME_OVERRIDES": {
        "LifecycleStageEnum": "contacts.lifecycle.Stage",
        "TicketStatusEnum": "contacts.models.TicketStatus",
        "TicketPriorityEnum": "contacts.models.TicketPriority",
        "OrderStatusEnum": "contacts.models.OrderStatus",
        "SubscriptionStatusEnum": "contacts.models.SubscriptionStatus",
        "LeadStatusEnum": "leads.models.LeadStatus",
        "LeadSourceEnum": "leads.models.LeadSource",
        "ExportStatusEnum": "compliance.models_privacy.ExportBundle.Status",
        # One-word answers of the compliance and event routes (their `status`).
        "SuccessEnum": ["success"],
        "AcceptedEnum": ["accepted"],
        "QueuedEnum": ["queued"],
        "ErasedEnum": ["erased"],
        "EventStateEnum": ["queued", "applied", "failed"],
        "EventBatchResultStatusEnum": ["accepted", "replayed", "rejected"],
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKey": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <api key>`"}
        }
    },
    "SECURITY": [{"ApiKey": []}],
    "AUTHENTICATION_WHITELIST": [],
    "PREPROCESSING_HOOKS": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "crm_platform.api.schema.describe_scopes",
    ],
}

# --------------------------------------------------------------------------- providers
# HubSpot app's client secret: verifies its webhooks (v3 signatures). Empty: they are refused.
HUBSPOT_CLIENT_SECRET = env("HUBSPOT_CLIENT_SECRET", default="")

# --------------------------------------------------------------------------- admin
# Admin bulk actions on more rows than this are queued as background jobs (bulk queue).
ADMIN_BULK_INLINE_LIMIT = env.int("ADMIN_BULK_INLINE_LIMIT", default=5000)

# --------------------------------------------------------------------------- reporting
# The currency contacts' lifetime values (CLV) are in: they count the paid orders in it only, as
# there is no exchange rate here to bring other currencies' orders into it.
CRM_REPORTING_CURRENCY = env("CRM_REPORTING_CURRENCY", default="USD").strip().upper()
if not (len(CRM_REPORTING_CURRENCY) == 3 and CRM_REPORTING_CURRENCY.isascii() and CRM_REPORTING_CURRENCY.isalpha()):
    raise ImproperlyConfigured("CRM_REPORTING_CURRENCY is a three-letter ISO 4217 code (e.g. USD).")

# --------------------------------------------------------------------------- outbox and webhooks
# Outbound webhooks may target private, loopback or link-local addresses only when this is on
# (development and tests); in production such endpoints are refused (SSRF).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", default=DEBUG)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_DNS_TIMEOUT_SECONDS = env.float("WEBHOOK_DNS_TIMEOUT_SECONDS", default=5.0)
# The CAs webhook receivers' certificates are checked against (default: certifi's public ones).
WEBHOOK_CA_BUNDLE = env.str("WEBHOOK_CA_BUNDLE", default="")
# After a webhook secret is rotated, the old one keeps signing (beside the new) this long.
WEBHOOK_SECRET_OVERLAP_HOURS = env.int("WEBHOOK_SECRET_OVERLAP_HOURS", default=24)
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)
WEBHOOK_DELIVERY_RETENTION_DAYS = env.int("WEBHOOK_DELIVERY_RETENTION_DAYS", default=30)
SYNC_EVENT_RETENTION_DAYS = env.int("SYNC_EVENT_RETENTION_DAYS", default=30)
# The inbox applier waits this long after a batch smaller than its limit, so that a stream of
# single events is applied a few dozen at a time (integrations/inbox.py); 0: never waits.
INBOX_APPLY_LINGER_MS = env.int("INBOX_APPLY_LINGER_MS", default=400)
# How far ahead of our clock an event's occurred_at may be (a device's clock runs fast): further
# is a 400, since a future stamp would make every later event stale for its fields.
EVENT_FUTURE_TOLERANCE_SECONDS = env.int("EVENT_FUTURE_TOLERANCE_SECONDS", default=300)

# --------------------------------------------------------------------------- audit (compliance/README.md)
# Audit rows are kept this long (the database refuses to delete any younger than 2190 days);
# rows about a contact under legal hold are kept longer.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=2190)
# Break-glass access to one contact's medical fields lasts this many minutes.
BREAK_GLASS_MINUTES = env.int("BREAK_GLASS_MINUTES", default=30)

# --------------------------------------------------------------------------- retention and GDPR (compliance/README.md)
# Days each kind of row is kept before the nightly `compliance.retention_purge` job deletes it
# (keys: the names apps register with compliance.retention; None: kept forever).
RETENTION_DAYS = {
    "crm_platform.outboxmessage": OUTBOX_RETENTION_DAYS,  # delivered and routed rows only
    "integrations.webhookdelivery": WEBHOOK_DELIVERY_RETENTION_DAYS,
    "integrations.syncevent": SYNC_EVENT_RETENTION_DAYS,
    "crm_platform.idempotencyrecord": IDEMPOTENCY_TTL_DAYS,
    "integrations.inboundevent": IDEMPOTENCY_TTL_DAYS,  # applied and failed inbound events (the inbox)
    "compliance.exportbundle": 0,  # days after the download link expired
    "integrations.webhookendpoint.previous_secret": 0,  # days after its rotation overlap ended
    # Timeline entries: kept for good unless ACTIVITY_RETENTION_DAYS is set.
    "contacts.activity": env.int("ACTIVITY_RETENTION_DAYS", default=None),
}
# GDPR/CCPA export bundles: the signed download link (and the bundle) last this many hours.
GDPR_EXPORT_TTL_HOURS = env.int("GDPR_EXPORT_TTL_HOURS", default=72)

# --------------------------------------------------------------------------- Celery
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=270)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Each queue has its own exchange and routing key (Celery's default binds them all to the key
# "default"), so routing by key reaches exactly one queue on any broker.
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in ("default", "sync", "messaging", "ai", "bulk")
]
CELERY_TASK_DEFAULT_EXCHANGE = "default"
CELERY_TASK_DEFAULT_ROUTING_KEY = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis hands a message not yet acknowledged (acks_late) to another worker after this long: it
# must outlast the longest task (an hour) even when its message waited behind another in the
# worker, or a long nightly job would start a second time. The cost: the messages of a worker
# killed outright come back after two hours (the sweeps and beat cover the urgent work).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --------------------------------------------------------------------------- logging
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("LOG_JSON", default=not DEBUG)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "crm_platform.logging.RequestIdFilter"},
        "request_path": {"()": "crm_platform.logging.RequestPathFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "text",
            "filters": ["request_id", "request_path"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own request logger repeats what our access line says, with less care for secrets.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
    },
}

ADMIN_SITE_HEADER = env("ADMIN_SITE_HEADER", default="crm_platform · Health CRM")
