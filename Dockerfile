# One image for the layer's Python services (exporter, receiver, fleet); the command picks the role.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY autonomy ./autonomy
COPY exporter ./exporter
COPY webhook_receiver ./webhook_receiver
COPY playbooks.yaml ./
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["autonomy"]
