# One image for the layer's Python services (exporter, receiver, fleet); the command picks the role:
#   docker run --rm autonomy-layer:0.1.0 receiver --host 0.0.0.0 --port 9818 --data-dir /data
#
# Why /app keeps the source tree and the project is installed editable (`pip install -e .`):
# autonomy/stack_config.py computes REPO_ROOT from __file__ (two levels up from the package), and the
# receiver serves runbooks/ from REPO_ROOT/runbooks (webhook_receiver/incidents_api.py), while
# `autonomy rules render|diff` and `autonomy check` read alert_rules/ (and the stack code prometheus/ and
# alertmanager/) relative to it. A plain `pip install .` copies the packages into site-packages, so
# REPO_ROOT becomes site-packages and every runbook_url in the alerts answers 404. Editable, the
# packages are imported from /app and REPO_ROOT is /app, next to runbooks/ and the rest.
FROM python:3.11.9-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed non-root user; /data (the receiver's ledger and lineage) belongs to it, so a named volume
# mounted there starts out writable by it.
RUN groupadd --system --gid 10001 autonomy \
 && useradd --system --uid 10001 --gid autonomy --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin autonomy \
 && install -d -o autonomy -g autonomy -m 0750 /data

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The packages (autonomy/ includes schemas/signal.schema.json), then the project itself, editable.
COPY autonomy ./autonomy
COPY exporter ./exporter
COPY webhook_receiver ./webhook_receiver
RUN pip install --no-deps -e . \
 && python -m compileall -q autonomy exporter webhook_receiver

# Data the services read at run time, relative to REPO_ROOT (= /app).
COPY playbooks.yaml ./
COPY runbooks ./runbooks
COPY alert_rules ./alert_rules
COPY prometheus ./prometheus
COPY alertmanager ./alertmanager

ENV AUTOREM_PLAYBOOKS_FILE=/app/playbooks.yaml \
    AUTOREM_DATA_DIR=/data

# /app stays root-owned and read-only to the service user.
USER autonomy:autonomy
EXPOSE 8080 9817 9818
# The services install no SIGTERM handler, and PID 1 ignores a signal it does not handle: `docker stop`
# would wait 10 s and kill. SIGINT stops waitress at once and runs the clean shutdown (the receiver's
# workers and ledger, the fleet's heartbeat).
STOPSIGNAL SIGINT
ENTRYPOINT ["autonomy"]
CMD ["--help"]
