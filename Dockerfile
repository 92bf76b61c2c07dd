# The platform in one image: the web process (gunicorn), the workers (`manage.py worker`), migrations and any
# manage.py command, chosen by the first argument (docker/entrypoint.sh). PostgreSQL + PostGIS is a separate
# service (compose.yaml). Debian bookworm, as scripts/setup.sh: the same Python 3.11, GDAL, GEOS and PROJ.
#
#   docker build -t dumpsite .                                        # CPU (default)
#   docker build -t dumpsite-gpu --build-arg TORCH_FLAVOUR=cu128 .    # CUDA build of torch and of mmcv's ops
#
# Secrets (DJANGO_SECRET_KEY, POSTGRES_PASSWORD) come from the environment at run time; none is in the image.
# pip's own configuration (an index mirror, a folder of wheels) may be given as build arguments (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CONSTRAINT) or mounted by the builder; scripts/container-check.sh does so.

ARG BASE_IMAGE=debian:bookworm-slim

# --- builder: a virtual environment with torch, mmcv compiled against it, and the pinned requirements ------------
FROM ${BASE_IMAGE} AS builder
ARG TORCH_FLAVOUR=cpu
# Where pip finds that torch build (empty: only pip's own configuration, e.g. a folder of wheels).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_FLAVOUR}
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ARG PIP_CERT
ARG MAX_JOBS=4
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends ca-certificates python3 python3-venv python3-dev build-essential \
       libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
# A GPU build compiles mmcv's CUDA ops: NVIDIA's CUDA compiler for Debian 12, from NVIDIA's own repository.
RUN if [ "$TORCH_FLAVOUR" != cpu ]; then \
        apt-get update -q && apt-get install -y -q --no-install-recommends curl gnupg \
        && curl -fsSL https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
           -o /tmp/cuda-keyring.deb && dpkg -i /tmp/cuda-keyring.deb && apt-get update -q \
        && apt-get install -y -q --no-install-recommends cuda-nvcc-12-8 cuda-cudart-dev-12-8 libcublas-dev-12-8 \
           libcusparse-dev-12-8 libcusolver-dev-12-8 libcurand-dev-12-8 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
# The three stages of scripts/setup.sh; the test tools (after "# --- tests") stay out of the image.
RUN for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_CERT; do \
        eval "[ -n \"\${$v:-}\" ]" || unset "$v"; done \
    && pin() { grep -E "^($1)==" /tmp/requirements.txt | sed 's/[[:space:]]*#.*//'; } \
    && sed '/^# --- tests/,$d' /tmp/requirements.txt > /tmp/runtime-requirements.txt \
    && pip install -q $(pin 'setuptools|wheel|numpy') \
    && torch_spec="$(pin torch)" && if [ "$TORCH_FLAVOUR" = cpu ]; then torch_spec="$torch_spec+cpu"; fi \
    && pip install -q "$torch_spec" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
    && if [ "$TORCH_FLAVOUR" = cpu ]; then export FORCE_CUDA=0; \
       else export FORCE_CUDA=1 CUDA_HOME=/usr/local/cuda TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6;8.9;9.0"; fi \
    && MMCV_WITH_OPS=1 MAX_JOBS="$MAX_JOBS" pip install -q --no-build-isolation $(pin mmcv) \
    && grep -v -E '^(torch)==' /tmp/runtime-requirements.txt > /tmp/rest.txt \
    && pip install -q -r /tmp/rest.txt \
    && python -c "import mmcv, torch; from mmcv.ops import nms; print('mmcv', mmcv.__version__, 'torch', torch.__version__)" \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# --- runtime: the environment and the code, run by an unprivileged user; no compiler ------------------------------
FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends ca-certificates python3 libgdal32 libgeos-c1v5 libproj25 \
       libgl1 libglib2.0-0 libgomp1 tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 dumpsite \
    && useradd --system --uid 10001 --gid dumpsite --create-home --home-dir /home/dumpsite \
       --shell /usr/sbin/nologin dumpsite \
    && mkdir -p /data/media /data/runs /app \
    && chown dumpsite:dumpsite /data/media /data/runs
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DUMPSITE_MEDIA_ROOT=/data/media DUMPSITE_WORK_ROOT=/data/runs DJANGO_STATIC_ROOT=/app/staticfiles \
    MPLCONFIGDIR=/tmp/matplotlib PORT=8000
# Static files are collected at build time (DEBUG only for this command: it needs no secret).
RUN DJANGO_DEBUG=1 python manage.py collectstatic --noinput -v 0 && chmod +x /app/docker/entrypoint.sh
USER dumpsite
VOLUME ["/data/media", "/data/runs"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["/app/docker/entrypoint.sh", "health"]
ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["web"]
