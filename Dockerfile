# The platform in one image: the web app (behind your WSGI server) and workers (`manage.py worker`) run from
# the same image with different commands. PostgreSQL + PostGIS is a
# separate service; point POSTGRES_* at it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential gdal-bin libgdal32 libgeos-c1v5 libproj25 libgl1 libglib2.0-0 postgresql-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
# Same three stages as scripts/setup.sh: torch (CPU build here) first, then mmcv compiled against it, then the rest.
RUN pin() { grep -E "^($1)==" requirements.txt | sed 's/[[:space:]]*#.*//'; } \
    && pip install $(pin 'setuptools|wheel|numpy') \
    && pip install --index-url https://download.pytorch.org/whl/cpu $(pin 'torch') \
    && MMCV_WITH_OPS=1 pip install --no-build-isolation $(pin 'mmcv') \
    && pip install -r requirements.txt

COPY . .
RUN useradd --create-home dumpsite && mkdir -p var && chown -R dumpsite var
USER dumpsite
# DJANGO_SECRET_KEY and POSTGRES_PASSWORD must be given at run time; there is no default outside DEBUG.
CMD ["python", "manage.py", "worker"]
