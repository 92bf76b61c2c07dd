"""Settings for the dump-site detection training platform. Everything comes from the environment.

See ``dumpsite/env.py`` for how a ``.env`` file beside manage.py is read. Nothing here exists only in production.
"""

import os
import socket
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from dumpsite.env import env_bool, env_int, env_list, env_str, load_env_file
from dumpsite.object_storage import bucket_from_env, storage_backend

BASE_DIR = Path(__file__).resolve().parent.parent
load_env_file(BASE_DIR / ".env")

# Development mode: verbose errors, and a throwaway secret key is allowed. Never on in production.
DEBUG = env_bool("DJANGO_DEBUG", False)

# Signing key for sessions and tokens. Required unless DEBUG; scripts/setup.sh generates one into .env.
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set (run scripts/setup.sh, or set DJANGO_DEBUG=1).")
    SECRET_KEY = "insecure-debug-only-key"

# Host names this site answers to (comma separated).
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
# Origins trusted for CSRF behind HTTPS, e.g. "https://train.example.org" (comma separated).
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# HTTPS in production (docs/security.md): behind a TLS-terminating proxy that sets X-Forwarded-Proto,
# set DJANGO_SECURE_PROXY_SSL=1; DJANGO_HTTPS=1 makes cookies secure-only, redirects plain HTTP and sends HSTS
# for DJANGO_HSTS_SECONDS (default one year once HTTPS is on).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_SECURE_PROXY_SSL", False) else None
_HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = _HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", _HTTPS)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", _HTTPS)
# Health checks and the like on plain HTTP inside the deployment may skip the redirect (regular expressions).
SECURE_REDIRECT_EXEMPT = env_list("DJANGO_SECURE_REDIRECT_EXEMPT", [])
SESSION_COOKIE_HTTPONLY = True
# Sign-in lasts this long (seconds; default two weeks).
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_AGE", 14 * 24 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.gis",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "django_q",
    "django_prometheus",
    "access",
    "datasets",
    "models_registry",
    "workers",
    "training",
    "detection",
    "labelling",
    "notifications",
    "monitoring",
    "scheduler",
    "audit",
]

MIDDLEWARE = [
    # Requests, their latency and answers by view, for /metrics (first and last: they time the rest).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "dumpsite.body_limits.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "access.auth.LoginThrottleMiddleware",
    "audit.services.AuditInterfaceMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "dumpsite.urls"

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

WSGI_APPLICATION = "dumpsite.wsgi.application"
ASGI_APPLICATION = "dumpsite.asgi.application"

# PostgreSQL + PostGIS. Defaults point at a local server; the password comes from the environment (.env).
DATABASES = {
    "default": {
        # PostGIS, its queries counted and timed for /metrics (django-prometheus's wrapper of Django's backend).
        "ENGINE": "django_prometheus.db.backends.postgis",
        "NAME": env_str("POSTGRES_DB", "dumpsite"),
        "USER": env_str("POSTGRES_USER", "dumpsite"),
        "PASSWORD": env_str("POSTGRES_PASSWORD", ""),
        "HOST": env_str("POSTGRES_HOST", "127.0.0.1"),
        "PORT": env_str("POSTGRES_PORT", "5432"),
        "CONN_MAX_AGE": env_int("POSTGRES_CONN_MAX_AGE", 0),
        # A kept connection is checked before a request uses it: after a database restart the web reconnects.
        "CONN_HEALTH_CHECKS": True,
        # Test database name; a worker started by the tests is pointed at it through POSTGRES_DB.
        "TEST": {"NAME": env_str("POSTGRES_TEST_DB", "test_dumpsite")},
    }
}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Where collectstatic gathers files; WhiteNoise serves them from there (no CDN, no separate web server needed).
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "var" / "staticfiles")))
# Files: the local folder MEDIA_ROOT, or an S3-compatible bucket (DUMPSITE_STORAGE_URL=s3://BUCKET/PREFIX with
# DUMPSITE_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; dumpsite/object_storage.py). Downloads from a
# bucket may redirect to a presigned URL valid DUMPSITE_S3_PRESIGN_SECONDS (DUMPSITE_S3_PRESIGNED_DOWNLOADS=1).
DUMPSITE_BUCKET = bucket_from_env()
DUMPSITE_S3_PRESIGN_SECONDS = env_int("DUMPSITE_S3_PRESIGN_SECONDS", 300)
DUMPSITE_S3_PRESIGNED_DOWNLOADS = env_bool("DUMPSITE_S3_PRESIGNED_DOWNLOADS", False)
STORAGES = {
    "default": storage_backend(DUMPSITE_BUCKET, presign_seconds=DUMPSITE_S3_PRESIGN_SECONDS),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

MEDIA_URL = "media/"
# Uploaded images and model artifacts (checkpoints, configs).
MEDIA_ROOT = Path(env_str("DUMPSITE_MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
# Scratch space of training runs: exported COCO files, logs, intermediate checkpoints.
TRAINING_WORK_ROOT = Path(env_str("DUMPSITE_WORK_ROOT", str(BASE_DIR / "var" / "runs")))

# Background tiles of the admin's dataset map, e.g. "https://tile.openstreetmap.org/{z}/{x}/{y}.png". Empty: no
# background (offline); the image points and footprints render either way.
DUMPSITE_MAP_TILES_URL = env_str("DUMPSITE_MAP_TILES_URL", "")

# Largest request body read into memory (JSON bodies, form fields), in bytes; larger ones are refused with 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
# Request bodies are refused (413) by their declared length before they are read: the sign-in doors take this
# many bytes, each upload endpoint what its files may weigh (the DUMPSITE_*_MAX_BYTES of those files, plus 1 MiB
# of form fields), every other request DUMPSITE_MAX_REQUEST_BYTES.
DUMPSITE_SIGN_IN_MAX_BYTES = env_int("DUMPSITE_SIGN_IN_MAX_BYTES", 16 * 1024)
DUMPSITE_MAX_REQUEST_BYTES = env_int("DUMPSITE_MAX_REQUEST_BYTES", 4 * 2**20)
# Zip archives of annotated images (COCO upload): most members, most uncompressed bytes, and the highest
# compression ratio accepted (JPEG and PNG barely compress; COCO JSON reaches 10-30x; a bomb reaches thousands).
DUMPSITE_ZIP_MAX_MEMBERS = env_int("DUMPSITE_ZIP_MAX_MEMBERS", 200_000)
DUMPSITE_ZIP_MAX_BYTES = env_int("DUMPSITE_ZIP_MAX_BYTES", 50 * 2**30)
DUMPSITE_ZIP_MAX_RATIO = float(env_str("DUMPSITE_ZIP_MAX_RATIO", "100"))
# Threads that decode, hash and store images during an import or a tiling (the import's own thread reads the files
# and writes the rows meanwhile).
DUMPSITE_IMPORT_THREADS = env_int("DUMPSITE_IMPORT_THREADS", min(4, os.cpu_count() or 1))
# The most bytes of orthophotos one tiling upload may bring.
DUMPSITE_MAX_ORTHOPHOTO_BYTES = env_int("DUMPSITE_MAX_ORTHOPHOTO_BYTES", 50 * 2**30)
# Bounds of one orthophoto tiling (each refusal names its limit and value): pixels of one orthophoto (the default
# holds 100,000 x 100,000 px, 10 km x 10 km at 10 cm), tile windows of the whole upload, and the annotated sites'
# GeoJSON: bytes, features, vertices of one site and of all sites together.
DUMPSITE_ORTHOPHOTO_MAX_PIXELS = env_int("DUMPSITE_ORTHOPHOTO_MAX_PIXELS", 10_000_000_000)
DUMPSITE_TILING_MAX_WINDOWS = env_int("DUMPSITE_TILING_MAX_WINDOWS", 1_000_000)
DUMPSITE_GEOJSON_MAX_BYTES = env_int("DUMPSITE_GEOJSON_MAX_BYTES", 50 * 2**20)
DUMPSITE_GEOJSON_MAX_FEATURES = env_int("DUMPSITE_GEOJSON_MAX_FEATURES", 100_000)
DUMPSITE_GEOJSON_MAX_SITE_VERTICES = env_int("DUMPSITE_GEOJSON_MAX_SITE_VERTICES", 10_000)
DUMPSITE_GEOJSON_MAX_VERTICES = env_int("DUMPSITE_GEOJSON_MAX_VERTICES", 500_000)
# The COCO JSON file of an import (inside a zip or in a folder): it is parsed whole, so its size is capped.
DUMPSITE_COCO_MAX_JSON_BYTES = env_int("DUMPSITE_COCO_MAX_JSON_BYTES", 512 * 2**20)
# A running zip import whose worker has not reported for this long is failed (its transaction died with it).
DUMPSITE_IMPORT_STALE_SECONDS = env_int("DUMPSITE_IMPORT_STALE_SECONDS", 60)
# Largest accepted image file, in bytes.
DUMPSITE_MAX_IMAGE_BYTES = env_int("DUMPSITE_MAX_IMAGE_BYTES", 50 * 1024 * 1024)
# Largest accepted image, in pixels (width x height): a small compressed file can decode to gigabytes. The default
# holds a 10,000 x 10,000 orthophoto tile.
DUMPSITE_MAX_IMAGE_PIXELS = env_int("DUMPSITE_MAX_IMAGE_PIXELS", 100_000_000)

# Cache shared by every process (the database's): login and API throttling count here.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "dumpsite_cache"}}

# API tokens expire this many seconds after they were made (default 30 days; 0: never). A new one comes from
# POST /api/auth/token/ (username + password), `manage.py drf_create_token -r NAME` or the admin's Tokens page.
DUMPSITE_TOKEN_TTL = env_int("DUMPSITE_TOKEN_TTL", 30 * 24 * 3600)
# Sign-in attempts (admin and API login pages, token endpoint) per client address and per username.
DUMPSITE_LOGIN_RATE = env_str("DUMPSITE_LOGIN_RATE", "10/minute")
# Queued runs one user may have waiting at once (0: no limit).
TRAINING_MAX_QUEUED_PER_USER = env_int("DUMPSITE_MAX_QUEUED_PER_USER", 10)
# Largest checkpoint file accepted for registration (upload, API or command line).
DUMPSITE_MAX_CHECKPOINT_BYTES = env_int("DUMPSITE_MAX_CHECKPOINT_BYTES", 2 * 2**30)
# Days a predict check (its uploaded image, preview and record) is kept after it was made; the scheduled clean-up
# removes older ones.
DUMPSITE_PREDICTION_RETENTION_DAYS = env_int("DUMPSITE_PREDICTION_RETENTION_DAYS", 7)
# Bytes each cache of rendered pictures (thumbnails; evaluation gallery pictures) may hold; the scheduled clean-up
# removes the oldest pictures past it (they are drawn again when next viewed).
DUMPSITE_PICTURE_CACHE_MAX_BYTES = env_int("DUMPSITE_PICTURE_CACHE_MAX_BYTES", 2 * 2**30)
# Seconds the checkpoint inspection (a child process, on registration) may take: below the web's own request
# time-out (WEB_TIMEOUT, 120 s), so a stuck inspection ends with a clear refusal rather than a killed worker.
DUMPSITE_INSPECT_TIMEOUT = env_int("DUMPSITE_INSPECT_TIMEOUT", 90)
# Seconds a predict check (one model on uploaded images, in a worker or `manage.py predict`) may take.
DUMPSITE_PREDICT_TIMEOUT = env_int("DUMPSITE_PREDICT_TIMEOUT", 600)
# Predict checks in a worker run in a long-lived child of each worker process that keeps the last models it ran
# loaded (engine.warm): at most this many (0: a new child per check), and it is restarted when its memory passes
# DUMPSITE_WARM_MEMORY_MB.
DUMPSITE_WARM_MODELS = env_int("DUMPSITE_WARM_MODELS", 2)
DUMPSITE_WARM_MEMORY_MB = env_int("DUMPSITE_WARM_MEMORY_MB", 3072)
# Detection runs of at most this many windows (on the CPU, orthophotos in the local folder) run in that warm child
# too: the model load is most of a small run's time (0: every run starts a child of its own).
DUMPSITE_WARM_DETECT_WINDOWS = env_int("DUMPSITE_WARM_DETECT_WINDOWS", 64)
# This host's identity among the hosts sharing the database: a reaper only ever signals processes of runs recorded on
# its own host identity. Give each host (and each container of a worker) its own.
DUMPSITE_HOST_ID = env_str("DUMPSITE_HOST_ID", socket.gethostname())[:255]
# What a worker cluster (`manage.py worker`) declares it has: GPU ids ("0,1"; empty: none) and CPU slots (training
# processes it runs at once on its CPUs). A run asks for `processes` of a `device`; a worker takes only runs that fit
# what it has free, and gives each its own GPUs (CUDA_VISIBLE_DEVICES).
TRAINING_WORKER_GPUS = env_list("DUMPSITE_WORKER_GPUS", [])
TRAINING_WORKER_CPU_SLOTS = env_int("DUMPSITE_WORKER_CPU_SLOTS", os.cpu_count() or 1)
# Whether this site's workers have GPUs (default: this host declares some): runs then train on a GPU unless they ask
# for device "cpu". Mixed precision (amp) needs a GPU run.
TRAINING_GPU_WORKERS = env_bool("DUMPSITE_GPU_WORKERS", bool(TRAINING_WORKER_GPUS))
# Seconds between two beats of a worker cluster's agent (its heartbeat, and the offer of idle capacity to runs that
# wait). A worker not seen for DUMPSITE_WORKER_FORGET seconds no longer counts in what the site can run.
TRAINING_WORKER_TICK = float(env_str("DUMPSITE_WORKER_TICK", "2.0"))
TRAINING_WORKER_FORGET = env_int("DUMPSITE_WORKER_FORGET", 7 * 24 * 3600)
# Seconds a worker cluster has, after SIGTERM or SIGINT, to stop its processes and fail the runs it held; then what is
# left of it is killed and it exits (a stop never hangs: systemd and container runtimes wait only so long).
DUMPSITE_WORKER_STOP_LIMIT = float(env_str("DUMPSITE_WORKER_STOP_LIMIT", "25"))
# The niceness of `manage.py worker` and everything it starts (trainings, imports, detection): batch work yields the
# CPU to a web process or database on the same host while it waits for it, and runs at full speed when nothing does.
DUMPSITE_WORKER_NICE = env_int("DUMPSITE_WORKER_NICE", 10)
# Runs across several hosts (`nodes` > 1): the address the other hosts reach this one on (empty: this host takes no
# part in such runs), the ports the first host's rendezvous may listen on, the seconds the hosts of a run have to
# gather (a host that reserved a run is free again after it), and the seconds of silence after which a host of a
# running run counts as lost (every host then stops its processes of that run).
DUMPSITE_HOST_ADDRESS = env_str("DUMPSITE_HOST_ADDRESS", "")
_low, _dash, _high = env_str("DUMPSITE_RENDEZVOUS_PORTS", "29400-29499").strip().partition("-")
if not (_low.isdigit() and (_high.isdigit() or not _dash)):
    raise ImproperlyConfigured("DUMPSITE_RENDEZVOUS_PORTS must be a port or a range of ports, e.g. 29400-29499.")
DUMPSITE_RENDEZVOUS_PORTS = (int(_low), int(_high or _low))
if not 1024 <= DUMPSITE_RENDEZVOUS_PORTS[0] <= DUMPSITE_RENDEZVOUS_PORTS[1] <= 65535:
    raise ImproperlyConfigured("DUMPSITE_RENDEZVOUS_PORTS must lie within 1024-65535, the lower port first.")
DUMPSITE_GANG_TIMEOUT = float(env_str("DUMPSITE_GANG_TIMEOUT", "60"))
DUMPSITE_NODE_SILENCE = float(env_str("DUMPSITE_NODE_SILENCE", "10"))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Names of environment variables the training child may inherit on top of the basics (PATH, locale, thread
# counts, CUDA device selection: engine/supervisor.py); e.g. "HTTPS_PROXY,MY_LICENSE_FILE". The child
# never sees the rest of the worker's environment (database password, secret key).
TRAINING_CHILD_ENV = env_list("DUMPSITE_CHILD_ENV", [])

# Minimum seconds between two progress writes of one run to the database.
TRAINING_PROGRESS_INTERVAL = float(env_str("DUMPSITE_PROGRESS_INTERVAL", "1.0"))
# Keep a finished run's scratch folder on its worker's disk for debugging; off: it is removed when the run ends
# (its log, events, result and last checkpoint are in the storage by then: runs/<id>/).
TRAINING_KEEP_SCRATCH = env_bool("DUMPSITE_KEEP_SCRATCH", False)
# Seconds between two pushes of a training run's log and progress events to the storage (what the web shows of a
# run that trains comes from there); a checkpoint is pushed once it is written, whatever this says.
DUMPSITE_RUN_SYNC_SECONDS = float(env_str("DUMPSITE_RUN_SYNC_SECONDS", "5"))
# A worker host's cache of dataset pictures fetched from a bucket (keyed by their sha256): where, and how many bytes
# it keeps between runs (least recently used go first; a run may exceed it by its own dataset while it trains).
DUMPSITE_HOST_CACHE_ROOT = Path(env_str("DUMPSITE_HOST_CACHE_ROOT", str(BASE_DIR / "var" / "host-cache")))
DUMPSITE_HOST_CACHE_MAX_BYTES = env_int("DUMPSITE_HOST_CACHE_MAX_BYTES", 50 * 2**30)
# Wall-clock limit of one training run, in seconds.
TRAINING_RUN_TIMEOUT = env_int("DUMPSITE_RUN_TIMEOUT", 24 * 3600)

# django-q2 with the database as broker. A task may run as long as a training run may, plus a margin; the broker
# re-delivers an unacknowledged task only after `retry` seconds, which must exceed `timeout`, so a run still training
# is never handed to a second worker. `max_attempts=1`: a run is re-tried by the operator, never by the broker.
Q_CLUSTER = {
    "name": "dumpsite",
    "orm": "default",
    "workers": env_int("DUMPSITE_Q_WORKERS", 1),
    "timeout": TRAINING_RUN_TIMEOUT + 600,
    "retry": TRAINING_RUN_TIMEOUT + 1200,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "poll": float(env_str("DUMPSITE_Q_POLL", "0.2")),
    "save_limit": 1000,
    "label": "Task queue",
}

REST_FRAMEWORK = {
    # Browser sessions (with CSRF) and tokens for scripts (`manage.py drf_create_token <user>`).
    # Token first: an anonymous request then gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.auth.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "core.api.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Dump-site detection training API",
    "DESCRIPTION": "Datasets, training runs and trained models of the dump-site detection platform.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page describe the API; they hold no data, so anyone may read them.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI from drf-spectacular-sidecar's files under STATIC_URL: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "TrainingRunStatusEnum": "training.models.TrainingRun.Status",
        "TrainingRunKindEnum": "training.models.TrainingRun.Kind",
        "EvaluationKindEnum": "models_registry.models.Evaluation.Kind",
        # Predictions and dataset imports share these states (queued, running, succeeded, failed).
        "JobStatusEnum": "datasets.models.DatasetImport.Status",
        # A model's origin (trained, registered) and a detection's (model, reviewer) are different choice sets.
        "DetectionOriginEnum": "detection.models.Detection.Origin",
        "OriginEnum": "models_registry.models.TrainedModel.Origin",  # its name before detections had an origin
        "WebhookEventEnum": "notifications.models.Event",
        "DeliveryStatusEnum": "notifications.models.WebhookDelivery.Status",
    },
}

# Object permissions: anonymous users get nothing.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
}

# A run refuses to start when the work area has less free disk than this (bytes).
TRAINING_MIN_FREE_BYTES = env_int("DUMPSITE_MIN_FREE_BYTES", 2 * 1024**3)

# gis.W001 warns that GDAL < 3.9 (Debian 12 ships 3.6) cannot block file/network access while parsing spatial
# references. Geometries here come from our own code or GeoJSON/WKT parsed by GEOS, never user SRS strings.
SILENCED_SYSTEM_CHECKS = ["gis.W001"]

# A running run whose worker sent no heartbeat for this many seconds is marked failed by the reaper (every worker
# agent's tick, and a django-q2 schedule every minute), which also kills its training processes if the run was on
# the reaper's own host. A run whose worker process is gone on a host with a live agent fails within a tick.
TRAINING_HEARTBEAT_LIMIT = env_int("DUMPSITE_HEARTBEAT_LIMIT", 60)
# The reaper's schedule, in minutes.
TRAINING_REAPER_MINUTES = env_int("DUMPSITE_REAPER_MINUTES", 1)

# Webhooks, e-mail and the public URL their links start with.
from dumpsite.settings_notify import *  # noqa: E402, F403
