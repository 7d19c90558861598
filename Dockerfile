# The layer's Python services (exporter, receiver) in one image; the command picks the role:
#   docker run --rm autonomy-layer:0.1.0 receiver --host 0.0.0.0 --port 9818 --data-dir /data
#
# Two stages. `production` installs the production packages only, as a regular (non-editable) install:
# the contract (autonomy/), the exporter, the receiver and the CLI module. The receiver's runbooks and the
# signal schema are package data, found with importlib.resources, so nothing is read from a source tree.
# `demo` adds the development stack (devstack/: the simulated fleet) for `docker compose --profile demo`;
# nothing in production imports it.
FROM python:3.11.9-slim-bookworm AS production

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

WORKDIR /build

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them: among them the
# PostgreSQL driver (AUTOREM_STORE_URL) and the OTLP exporter (OTEL_TRACES_EXPORTER=otlp), which the receiver
# imports only when configured, hence the import check below.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The production packages (their package data included), installed into site-packages; the sources go.
COPY autonomy ./autonomy
COPY exporter ./exporter
COPY webhook_receiver ./webhook_receiver
COPY autonomy_cli.py ./
RUN pip install --no-deps . \
 && cd / && rm -rf /build \
 && python -c "import autonomy_cli, exporter.app, webhook_receiver.app" \
 && python -c "import psycopg, psycopg_pool, opentelemetry.exporter.otlp.proto.http.trace_exporter"

WORKDIR /app
# The playbook table the receiver validates at start-up (compose mounts the repo's over it).
COPY playbooks.yaml ./

ENV AUTOREM_PLAYBOOKS_FILE=/app/playbooks.yaml \
    AUTOREM_DATA_DIR=/data

# /app stays root-owned and read-only to the service user.
USER autonomy:autonomy
EXPOSE 9817 9818
# The services install no SIGTERM handler, and PID 1 ignores a signal it does not handle: `docker stop`
# would wait 10 s and kill. SIGINT stops waitress at once and runs the clean shutdown (the receiver's
# workers and ledger, the fleet's heartbeat).
STOPSIGNAL SIGINT
ENTRYPOINT ["autonomy"]
CMD ["--help"]

# The simulated fleet for the demo profile: the production image plus the development stack.
FROM production AS demo
USER root
WORKDIR /build
COPY pyproject.toml README.md ./
COPY autonomy ./autonomy
COPY exporter ./exporter
COPY webhook_receiver ./webhook_receiver
COPY autonomy_cli.py ./
COPY devstack ./devstack
RUN pip install --no-deps . \
 && cd / && rm -rf /build \
 && python -c "import devstack.fleet"
WORKDIR /app
USER autonomy:autonomy
EXPOSE 8080
