# One image for the serving API, the Dagster webserver and the Dagster daemon; the command
# chooses the role (see docker-compose.yml). No OSM extract is baked in: mount extracts at
# run time and import them with `perfect10k import`.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir -r /tmp/requirements.lock
WORKDIR /app
COPY pyproject.toml README.md workspace.yaml ./
COPY perfect10k ./perfect10k
COPY pipelines ./pipelines
COPY planner ./planner
COPY serving ./serving
COPY warehouse ./warehouse
# Editable, so the packages stay in /app beside workspace.yaml, where `perfect10k serve`
# looks for the Dagster workspace when it runs Dagster itself.
RUN pip install --no-cache-dir --no-deps -e . \
 && python -m compileall -q /app

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_DISABLE_TELEMETRY=1 \
    PERFECT10K_DATA_DIR=/var/lib/perfect10k \
    PERFECT10K_HOST=0.0.0.0 \
    PERFECT10K_PORT=8000
RUN groupadd --system --gid 10001 perfect10k \
 && useradd --system --uid 10001 --gid perfect10k --home-dir /app --shell /usr/sbin/nologin \
    perfect10k \
 && mkdir -p /var/lib/perfect10k/warehouse /var/lib/perfect10k/state \
    /var/lib/perfect10k/dagster /var/lib/perfect10k/dagster-storage /opt/dagster/home \
 && chown -R perfect10k:perfect10k /var/lib/perfect10k
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY dagster.yaml /opt/dagster/home/dagster.yaml
WORKDIR /app
# Numeric, so orchestrators can verify that the user is not root.
USER 10001:10001
EXPOSE 8000 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PERFECT10K_PORT', '8000') + '/api/health', timeout=4)"]
CMD ["perfect10k", "serve"]
