# syntax=docker/dockerfile:1
# The sink's image: the package and its runtime dependencies at the versions of
# constraints.txt, in a virtualenv copied from the build stage (no pip, no build tools, no dev
# extras, nothing of dev/ or tests/). Configure it with OMNISINK_* environment variables.
#
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" -t omnisink:0.1.0 .
#
# Migrations ship inside the package (migrations/ is installed with it): `omnisink migrate`
# finds them wherever it runs, so the image carries no alembic.ini.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# A virtualenv without pip: the base image's pip installs into it (--python).
RUN python -m venv --without-pip /opt/omnisink
COPY constraints.txt pyproject.toml README.md ./
COPY consumer ./consumer
COPY handlers ./handlers
COPY migrations ./migrations
RUN python -m pip --python /opt/omnisink/bin/python install --constraint constraints.txt . \
    && /opt/omnisink/bin/omnisink --version \
    && /opt/omnisink/bin/python -c \
       "from consumer.migrate import head_revision; print('migrations: head', head_revision())"

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="omnisink" \
      org.opencontainers.image.description="Effectively-once Kafka to PostgreSQL sink for OmniNode platform events" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PATH=/opt/omnisink/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# uid/gid 10001: the numbers Kubernetes' runAsUser and runAsGroup name
# (deploy/kubernetes/statefulset.yaml). The base image's own pip, setuptools and wheel go:
# the sink runs from its virtualenv, which never sees them, and nothing installs at run time.
RUN groupadd --system --gid 10001 omnisink \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin omnisink \
    && python -m pip uninstall --yes --no-cache-dir pip setuptools wheel
COPY --from=build /opt/omnisink /opt/omnisink
WORKDIR /app
USER 10001:10001
# /metrics, /health/live, /health/ready on OMNISINK_HTTP_PORT (default 8080).
EXPOSE 8080
# Live while the worker loop turns: urllib raises on a refused connection or any status >= 400,
# so the exit status is 1 then (slim images have no curl). Only `omnisink run` serves it
# (with OMNISINK_HTTP_ENABLED true and OMNISINK_HTTP_HOST reachable on 127.0.0.1, as by
# default); where a one-shot command (migrate, produce) runs as a service,
# deploy/docker-compose.yml turns the check off.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('OMNISINK_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["omnisink"]
CMD ["run"]
