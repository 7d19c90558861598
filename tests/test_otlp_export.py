"""The receiver's spans over OTLP/HTTP, as compose sends them to its collector, decoded with opentelemetry-proto.

The receiver runs on the engine's fakes (tests/engine_harness.py) with OTEL_TRACES_EXPORTER=otlp and the
endpoint settings compose gives it; a small loopback server stands in for the collector and keeps every request.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from devstack.local_stack import free_port
from devstack.polling import wait_until
from tests.engine_harness import ESCALATION_TOKEN, WEBHOOK_TOKEN

SERVICE_NAME = "autonomy-receiver"
INSTANCE = "receiver-a"  # as compose names each receiver's spans


class Collector:
    """An OTLP/HTTP trace endpoint on loopback that answers every export with success and keeps its requests."""

    def __init__(self):
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # path, headers (lower case), body
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with collector.lock:
                    collector.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-collector", daemon=True)
        self.thread.start()

    def received(self) -> list[tuple[str, dict[str, str], bytes]]:
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def collector():
    served = Collector()
    yield served
    served.stop()


def failing_cmo(h):
    """CMO reports a TIMEOUT and a failed last task: TRANSIENT, fixed by its playbook."""
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5)


def otlp_receiver(h, monkeypatch, endpoint: str, **env: str):
    """H's receiver exporting its spans as compose configures it (the standard OTEL_* settings), not to memory."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", SERVICE_NAME)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"service.instance.id={INSTANCE}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    h.spans = None  # no exporter of the test's own: the receiver builds the OTLP one from the environment
    return h.build()


def value(any_value):
    return getattr(any_value, any_value.WhichOneof("value"))


def decoded(requests) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(resource attributes of every batch, every span as name/ids/attributes) of the export requests."""
    resources, spans = [], []
    for _, _, body in requests:
        export = ExportTraceServiceRequest.FromString(body)
        for batch in export.resource_spans:
            resources.append({a.key: value(a.value) for a in batch.resource.attributes})
            for scope in batch.scope_spans:
                for span in scope.spans:
                    spans.append({"name": span.name, "scope": scope.scope.name, "trace_id": span.trace_id.hex(),
                                  "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                  "attributes": {a.key: value(a.value) for a in span.attributes}})
    return resources, spans


def test_a_remediation_sends_its_spans_to_the_collector_over_otlp_http(h, monkeypatch, collector):
    otlp_receiver(h, monkeypatch, collector.url)
    failing_cmo(h)
    incident = h.run(h.fire())
    assert incident.state == "recovered"
    assert h.state.tracer_provider.force_flush(timeout_millis=30_000)
    requests = wait_until(lambda: collector.received() or None, 30, "an OTLP export request")

    for path, headers, _ in requests:
        assert path == "/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT is the base URL; traces go to /v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
    resources, spans = decoded(requests)
    assert resources and all(r["service.name"] == SERVICE_NAME for r in resources)
    assert all(r["service.instance.id"] == INSTANCE for r in resources)
    by_name: dict[str, list[dict]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert sorted(by_name) == ["attempt", "incident", "step", "verify"]
    [root], [attempt], steps, [verify] = by_name["incident"], by_name["attempt"], by_name["step"], by_name["verify"]
    assert {s["trace_id"] for s in spans} == {incident.trace_id}
    assert root["parent"] == "" and root["span_id"] == incident.span_id
    assert attempt["parent"] == root["span_id"] and verify["parent"] == attempt["span_id"]
    assert all(s["parent"] == attempt["span_id"] for s in steps)
    assert {s["scope"] for s in spans} == {"autonomy.receiver"}
    assert root["attributes"] == {"autonomy.incident_id": incident.id, "autonomy.agent": "CMO"}
    assert attempt["attributes"] == {"autonomy.attempt": 1, "autonomy.classification": "TRANSIENT",
                                     "autonomy.playbook": "RestartAndRetryTransient"}
    assert [(s["attributes"]["autonomy.action"], s["attributes"]["autonomy.ok"], s["attributes"]["autonomy.target"])
            for s in steps] == [("restartAgent", True, "CMO"), ("retryLastTask", True, "CMO")]
    assert verify["attributes"]["autonomy.ok"] is True


def test_no_secret_reaches_the_collector(h, monkeypatch, collector):
    otlp_receiver(h, monkeypatch, collector.url)
    failing_cmo(h)
    h.run(h.fire())
    assert h.state.tracer_provider.force_flush(timeout_millis=30_000)
    requests = wait_until(lambda: collector.received() or None, 30, "an OTLP export request")
    for _, headers, body in requests:
        sent = body + repr(headers).encode()
        for secret in (WEBHOOK_TOKEN, ESCALATION_TOKEN):
            assert secret.encode() not in sent
        assert b"Bearer" not in sent


def test_a_collector_that_is_down_costs_the_remediation_nothing(h, monkeypatch):
    otlp_receiver(h, monkeypatch, f"http://127.0.0.1:{free_port()}", OTEL_EXPORTER_OTLP_TIMEOUT="1")
    failing_cmo(h)
    incident = h.run(h.fire())
    h.state.tracer_provider.force_flush(timeout_millis=30_000)  # the export fails; nothing else does
    assert incident.state == "recovered" and incident.outcome == "auto_resolved"
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]
    [line] = h.lineage()
    assert line["ok"] is True and line["trace_id"] == incident.trace_id
