# One image for every long-running part of the deployment (see README "Production"): the Dagster
# code server, dagster-webserver, dagster-daemon, fks-api, and each run's container (the
# DockerRunLauncher starts runs from this same image). No secret is baked in: settings and keys
# come from the environment at run time.
#
#   docker compose build            (or: docker build -t fks-pipelines:latest .)
#
# The environment is exactly uv.lock's (frozen, no dev group), installed by the pinned uv that
# scripts/bootstrap.sh uses; the project itself is installed as a wheel (no source tree needed).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
# The base image's python3 (never a downloaded one); compiled bytecode, because the runtime user
# cannot write __pycache__ into /opt/venv and every run container would otherwise compile its
# imports again (seconds of each run's start).
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY fks_pipelines ./fks_pipelines
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable \
 # The test suites that pandas, numpy and pyarrow ship (~75 MB with their bytecode): nothing
 # imports them at run time.
 && find /opt/venv/lib/python3*/site-packages/pandas /opt/venv/lib/python3*/site-packages/numpy \
      /opt/venv/lib/python3*/site-packages/pyarrow -depth -type d -name tests -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
# A fixed uid, so that volume ownership is the same on every host.
RUN groupadd --system --gid 10001 fks \
 && useradd --system --uid 10001 --gid fks --home-dir /opt/dagster --no-create-home fks \
 && mkdir -p /opt/dagster/dagster_home /var/lib/fks \
 && chown fks:fks /opt/dagster/dagster_home /var/lib/fks
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/entrypoint.sh /usr/local/bin/fks-entrypoint
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    FKS_DATA_DIR=/var/lib/fks
USER fks
WORKDIR /opt/dagster
ENTRYPOINT ["/usr/local/bin/fks-entrypoint"]
CMD ["fks-api"]
