"""Settings of notifications (webhooks and e-mail) and monitoring (``/metrics``), read from the environment;
imported by ``settings``."""

from __future__ import annotations

from dumpsite.env import env_bool, env_int, env_list, env_str

# Where the platform is reached from outside: the links of webhook bodies and e-mails.
DUMPSITE_PUBLIC_URL = env_str("DUMPSITE_PUBLIC_URL", "http://localhost:8000")

# Webhooks. Targets must resolve to public addresses; these networks (CIDRs) are allowed besides (an in-house
# receiver; the tests' receiver on 127.0.0.1).
DUMPSITE_WEBHOOK_ALLOWED_NETWORKS = env_list("DUMPSITE_WEBHOOK_ALLOWED_NETWORKS", [])
DUMPSITE_WEBHOOK_CONNECT_TIMEOUT = float(env_str("DUMPSITE_WEBHOOK_CONNECT_TIMEOUT", "3"))
DUMPSITE_WEBHOOK_READ_TIMEOUT = float(env_str("DUMPSITE_WEBHOOK_READ_TIMEOUT", "5"))
# A failed delivery is tried again after RETRY_BASE seconds, doubled each time up to RETRY_CAP, for RETRY_FOR
# seconds after its event; a subscription whose deliveries all failed for DISABLE_AFTER seconds is disabled.
DUMPSITE_WEBHOOK_RETRY_BASE = float(env_str("DUMPSITE_WEBHOOK_RETRY_BASE", "10"))
DUMPSITE_WEBHOOK_RETRY_CAP = float(env_str("DUMPSITE_WEBHOOK_RETRY_CAP", "3600"))
DUMPSITE_WEBHOOK_RETRY_FOR = env_int("DUMPSITE_WEBHOOK_RETRY_FOR", 24 * 3600)
DUMPSITE_WEBHOOK_DISABLE_AFTER = env_int("DUMPSITE_WEBHOOK_DISABLE_AFTER", 24 * 3600)
# Sends at once per dispatcher, and how often it looks for retries that became due (new events wake it at once).
DUMPSITE_WEBHOOK_THREADS = env_int("DUMPSITE_WEBHOOK_THREADS", 4)
DUMPSITE_DISPATCH_POLL = float(env_str("DUMPSITE_DISPATCH_POLL", "1.0"))
# Whether this host's worker runs a dispatcher (every host may: they share the outbox).
DUMPSITE_DISPATCHER = env_bool("DUMPSITE_DISPATCHER", True)

# E-mail: printed to the worker's output unless an SMTP server is set.
EMAIL_BACKEND = env_str(
    "DJANGO_EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if env_str("DJANGO_EMAIL_HOST", "")
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env_str("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("DJANGO_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("DJANGO_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("DJANGO_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("DJANGO_EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("DJANGO_EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("DJANGO_EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "dumpsite@localhost")

# /metrics: open to a scraper with this bearer token, or from these networks (CIDRs); closed when neither is set.
DUMPSITE_METRICS_TOKEN = env_str("DUMPSITE_METRICS_TOKEN", "")
DUMPSITE_METRICS_ALLOWED_NETWORKS = env_list("DUMPSITE_METRICS_ALLOWED_NETWORKS", [])

# Experiment tracking. Every training run writes TensorBoard event files (stored with the run). With a tracking URI
# (an MLflow server, or a local store such as sqlite:////var/lib/mlflow/mlflow.db), runs are MLflow runs too, and a
# published model is registered as a version of the MLflow registered model "<prefix><model name>". The training
# child gets the MLFLOW_* variables named in DUMPSITE_MLFLOW_CHILD_ENV (a server's credentials) besides.
DUMPSITE_TENSORBOARD = env_bool("DUMPSITE_TENSORBOARD", True)
DUMPSITE_MLFLOW_TRACKING_URI = env_str("DUMPSITE_MLFLOW_TRACKING_URI", "")
DUMPSITE_MLFLOW_EXPERIMENT = env_str("DUMPSITE_MLFLOW_EXPERIMENT", "dumpsite")
DUMPSITE_MLFLOW_ARTIFACT_LOCATION = env_str("DUMPSITE_MLFLOW_ARTIFACT_LOCATION", "")
DUMPSITE_MLFLOW_MODEL_PREFIX = env_str("DUMPSITE_MLFLOW_MODEL_PREFIX", "")
DUMPSITE_MLFLOW_CHILD_ENV = env_list(
    "DUMPSITE_MLFLOW_CHILD_ENV",
    ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS"],
)
