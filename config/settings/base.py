"""Settings for every environment, read from the process environment.

One switch per integration (see README "Configuration"):
- ``DATABASE_URL`` unset  -> SQLite file under ``var/``; set -> that database (PostgreSQL in production).
- ``REDIS_URL`` unset     -> local-memory cache and Celery tasks run eagerly in-process;
                             set -> Redis cache and Redis as the Celery broker.
"""

from pathlib import Path

import environ

from config.beat import BEAT_SCHEDULE

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="spendguard-insecure-dev-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files for /api/v1/docs/, served locally
    "django_celery_beat",
    # Dependency direction: pricing <- costs <- budgets <- recommendations.
    "pricing",
    "costs",
    "budgets",
    "recommendations",
]

# Session, authentication and messages are Django's, except that they step aside for API-key calls
# to the plain budget-check views (config.api; ADR 0003 "Speed"): those never read them.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.api.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "config.api.AuthenticationMiddleware",
    "config.api.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# Paths served by plain Django views for API-key calls (budgets.api.checks).
SPENDGUARD_PLAIN_API_PATH_PREFIXES = ["/api/v1/budget-checks/"]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

VAR_DIR = Path(env("SPENDGUARD_VAR_DIR", default=str(BASE_DIR / "var")))

if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    # Persistent connections: a pooled-less WSGI worker would otherwise pay a
    # PostgreSQL connect (~2-5 ms) on every request, most of the ingest budget.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "spendguard.sqlite3",
            # The demo's web server and seed command write concurrently; wait instead of failing.
            "OPTIONS": {"timeout": 20},
        }
    }


def postgresql_tuned(database: dict) -> dict:
    """Server-side prepared statements for the few hot statements that ask for them (the budget
    check's reservation: planning it costs PostgreSQL more than running it). Django's own queries
    are unaffected (client-side binding). Behind a transaction-mode connection pooler that cannot
    keep prepared statements, set ``DATABASE_PREPARED_STATEMENTS=false``."""
    if "postgresql" in database.get("ENGINE", "") and env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        database.setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
    return database


DATABASES["default"] = postgresql_tuned(DATABASES["default"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="spendguard"),
        }
    }
    CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
    # Embedded mode: no broker, so tasks run in the calling process.
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_TASK_EAGER_PROPAGATES = True

CELERY_TIMEZONE = "UTC"
# A broker that drops packets must not hold a request: alert deliveries are queued from on_commit, and
# one that cannot be queued stays pending for the retry job (budgets.services.delivery).
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 2}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = BEAT_SCHEDULE

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

LOGIN_URL = "admin:login"

# Alerts go out by e-mail: the console in the embedded default; set EMAIL_BACKEND to
# django.core.mail.backends.smtp.EmailBackend and EMAIL_HOST / EMAIL_PORT / ... for a mail server.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="spendguard@localhost")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
# Seconds; a mail server that hangs delays one delivery attempt, never a request.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "costs.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["config.api.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.api.FastJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Spendguard API",
    "DESCRIPTION": "Usage ingestion, budget checks and reports for LLM agent spend. Money is a decimal string in USD.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/v1/docs/ loads Swagger UI from our own static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Stable names for choice sets that share a field name ("status", "scope") across components.
    "ENUM_NAME_OVERRIDES": {
        "AlertStatusEnum": "budgets.models.AlertStatus",
        "UsageStatusEnum": "costs.models.UsageStatus",
        "BudgetScopeEnum": "budgets.models.BudgetScope",
        # A recommendation's confidence and effort share one choice set.
        "LevelEnum": "recommendations.models.Confidence",
    },
}

# --- Spendguard -----------------------------------------------------------------
# Largest batch accepted by POST /api/v1/usage/.
SPENDGUARD_INGEST_MAX_BATCH = env.int("SPENDGUARD_INGEST_MAX_BATCH", default=1000)
# How far in the future occurred_at may be (clock skew between agents and us), in seconds.
SPENDGUARD_MAX_FUTURE_SKEW_SECONDS = env.int("SPENDGUARD_MAX_FUTURE_SKEW_SECONDS", default=300)
# last_used_at on API keys is written at most this often per key (seconds): a write per request would
# turn every ingest into two writes on one hot row.
SPENDGUARD_API_KEY_TOUCH_SECONDS = env.int("SPENDGUARD_API_KEY_TOUCH_SECONDS", default=60)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"skip_budget_denials": {"()": "budgets.log_filters.SkipBudgetDenials"}},
    # The level on the handler too: Django's own loggers (django.request: a warning per 4xx) keep
    # their INFO level and propagate here, so the root level alone would not quiet them.
    "handlers": {"console": {"class": "logging.StreamHandler", "level": env("LOG_LEVEL", default="INFO")}},
    "loggers": {"django.request": {"filters": ["skip_budget_denials"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

# --- Budgets: pre-call checks and reservations (budgets.services.enforcement, ADR 0003) ---
# A reservation not settled by usage within this many seconds is released by the expiry job.
SPENDGUARD_RESERVATION_TTL_SECONDS = env.int("SPENDGUARD_RESERVATION_TTL_SECONDS", default=600)
# How long a check waits for a budget period's row lock (PostgreSQL lock_timeout, ms) before the
# spend store counts as unavailable.
SPENDGUARD_BUDGET_LOCK_TIMEOUT_MS = env.int("SPENDGUARD_BUDGET_LOCK_TIMEOUT_MS", default=2000)
# Spend store unavailable (lock timeout, database error): "closed" answers 503 budget_store_unavailable
# when a hard budget covers the request; "open" allows it with a warning and reserves nothing.
SPENDGUARD_BUDGET_STORE_FAILURE = env.str("SPENDGUARD_BUDGET_STORE_FAILURE", default="closed")
# Where live spend is enforced (ADR 0008): "postgresql" (the reference: counters in the period rows,
# one guarded statement per check) or "redis" (reserved amounts and held reservations in Redis,
# settled spend copied from the period rows; needs PostgreSQL as the database).
SPENDGUARD_BUDGET_STORE = env.str("SPENDGUARD_BUDGET_STORE", default="postgresql")
SPENDGUARD_BUDGET_REDIS_URL = env.str("SPENDGUARD_BUDGET_REDIS_URL", default=REDIS_URL or "redis://127.0.0.1:6379/0")
SPENDGUARD_BUDGET_REDIS_PREFIX = env.str("SPENDGUARD_BUDGET_REDIS_PREFIX", default="spendguard:budgets:")
# How long a call to the Redis store may take before the store counts as unavailable (ms).
SPENDGUARD_BUDGET_REDIS_TIMEOUT_MS = env.int("SPENDGUARD_BUDGET_REDIS_TIMEOUT_MS", default=1000)
# How long a closed reservation stays in Redis (a repeated request_id answers 409 meanwhile). About
# 250 bytes each: at 1,000 checks/s, 600 s keep ~150 MB.
SPENDGUARD_BUDGET_REDIS_CLOSED_RETENTION_SECONDS = env.int(
    "SPENDGUARD_BUDGET_REDIS_CLOSED_RETENTION_SECONDS", default=600
)
# Each web process listens for check context changes (PostgreSQL NOTIFY) and forgets what it cached
# as they commit, so the Redis store's cached checks need no version query each (ADR 0008). False:
# every cached check on the Redis store confirms the version with a query.
SPENDGUARD_CHECK_CONTEXT_LISTEN = env.bool("SPENDGUARD_CHECK_CONTEXT_LISTEN", default=True)
# Spend being settled counts as reserved until its ledger transaction commits; past this the expiry
# job drops it and copies the periods' spend again (an ingest rolled back, or its process died).
SPENDGUARD_BUDGET_REDIS_PENDING_SECONDS = env.int("SPENDGUARD_BUDGET_REDIS_PENDING_SECONDS", default=60)
# Per-process cache of catalog prices used to price checks, seconds (0 disables). Staleness only
# affects the reserved estimate; settlement books the actual cost with the price in effect.
SPENDGUARD_CHECK_PRICE_CACHE_SECONDS = env.int("SPENDGUARD_CHECK_PRICE_CACHE_SECONDS", default=60)
# API-key checks answered in front of Django's WSGI handler (budgets.api.wsgi_fast_path, config/wsgi.py):
# the same answers without the handler, middleware chain and URL resolving (~0.3 ms of CPU per check).
# False: Django's handler answers them, as every other request.
SPENDGUARD_CHECK_WSGI_FAST_PATH = env.bool("SPENDGUARD_CHECK_WSGI_FAST_PATH", default=True)

# --- Alerts (budgets.services.alerts / delivery, ADR 0005) ---
# Where people open Spendguard: links in alert e-mails and webhook messages start with it.
SPENDGUARD_BASE_URL = env.str("SPENDGUARD_BASE_URL", default="http://127.0.0.1:8000")
# A failed delivery is retried after base x 2^(attempts - 1) seconds, capped, up to this many attempts.
SPENDGUARD_ALERT_DELIVERY_MAX_ATTEMPTS = env.int("SPENDGUARD_ALERT_DELIVERY_MAX_ATTEMPTS", default=15)
SPENDGUARD_ALERT_RETRY_BASE_SECONDS = env.int("SPENDGUARD_ALERT_RETRY_BASE_SECONDS", default=60)
SPENDGUARD_ALERT_RETRY_MAX_SECONDS = env.int("SPENDGUARD_ALERT_RETRY_MAX_SECONDS", default=3600)
# Seconds to wait for a webhook endpoint.
SPENDGUARD_ALERT_WEBHOOK_TIMEOUT_SECONDS = env.int("SPENDGUARD_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=10)

# --- Forecast and anomaly alerts (budgets.services.forecasts / anomalies, ADR 0005) ---
# Anomaly cutoff = median + max(K x MAD, MIN_EXCESS_USD, (MIN_RATIO - 1) x median) over the baseline
# windows: the same hour on the previous BASELINE_WINDOWS days / the previous BASELINE_WINDOWS days,
# of which at least MIN_HISTORY must lie after the subject's first spend (new agents never alert).
SPENDGUARD_ANOMALY_MAD_K = env.int("SPENDGUARD_ANOMALY_MAD_K", default=6)
SPENDGUARD_ANOMALY_MIN_EXCESS_USD = env.str("SPENDGUARD_ANOMALY_MIN_EXCESS_USD", default="1")
SPENDGUARD_ANOMALY_MIN_RATIO = env.int("SPENDGUARD_ANOMALY_MIN_RATIO", default=2)
SPENDGUARD_ANOMALY_BASELINE_WINDOWS = env.int("SPENDGUARD_ANOMALY_BASELINE_WINDOWS", default=14)
SPENDGUARD_ANOMALY_MIN_HISTORY = env.int("SPENDGUARD_ANOMALY_MIN_HISTORY", default=7)

# Rollups (ADR 0006): the rollup watermark trails the clock by this much, longer than any ingest
# transaction, because received_at is stamped before the row commits.
SPENDGUARD_ROLLUP_LAG_SECONDS = env.int("SPENDGUARD_ROLLUP_LAG_SECONDS", default=60)

# Recommendations (ADR 0007): the window of ledger history a generator learns from, and the smallest
# estimated monthly saving worth a recommendation (USD, decimal string).
SPENDGUARD_RECOMMENDATION_WINDOW_DAYS = env.int("SPENDGUARD_RECOMMENDATION_WINDOW_DAYS", default=30)
SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = env.str(
    "SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD", default="1.00"
)
# Days of traffic after a recommendation is implemented before its realized saving is measured.
SPENDGUARD_RECOMMENDATION_MIN_VERIFY_DAYS = env.int("SPENDGUARD_RECOMMENDATION_MIN_VERIFY_DAYS", default=1)
# A budget threshold alert queues generation for its scope at most once per this many seconds.
SPENDGUARD_RECOMMENDATION_ALERT_DEBOUNCE_SECONDS = env.int(
    "SPENDGUARD_RECOMMENDATION_ALERT_DEBOUNCE_SECONDS", default=600
)
