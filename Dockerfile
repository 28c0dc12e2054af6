# syntax=docker/dockerfile:1
# The sink's image: the package and its runtime dependencies only (no dev extras, no
# embedded services, nothing of dev/ or tests/). Configure it with OMNISINK_* environment
# variables.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY handlers ./handlers
COPY migrations ./migrations
RUN python -m pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --no-create-home omnisink
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY alembic.ini /app/alembic.ini
WORKDIR /app
USER 10001
# /metrics and /health/* (OMNISINK_HTTP_PORT)
EXPOSE 8080
ENTRYPOINT ["omnisink"]
CMD ["run"]
