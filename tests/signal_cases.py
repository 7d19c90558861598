"""Valid and malformed signals shared by the contract, CLI and HTTP tests."""
import copy
import json
from pathlib import Path

EXAMPLE_PATH = Path(__file__).resolve().parent.parent / "examples" / "signal.json"


def example() -> dict:
    """The pack's section 2 example with its placeholders filled."""
    return json.loads(EXAMPLE_PATH.read_text())


def changed(path: str, value=None, delete: bool = False) -> bytes:
    """The example with one field (dotted path) set to VALUE or deleted, as a JSON body."""
    doc = copy.deepcopy(example())
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return json.dumps(doc).encode()


# (id, body, expected fragment of an error line: the field path and the reason)
MALFORMED = [
    ("ratio-above-one", changed("metrics.successRate", 1.7),
     "metrics.successRate: 1.7 is greater than the maximum of 1"),
    ("ratio-below-zero", changed("metrics.alignment", -0.1), "metrics.alignment: -0.1 is less than the minimum of 0"),
    ("ratio-as-string", changed("metrics.successRate", "0.9"), "metrics.successRate: '0.9' is not of type 'number'"),
    ("ratio-as-bool", changed("metrics.alignment", True), "metrics.alignment: True is not of type 'number'"),
    ("negative-backlog", changed("metrics.backlogAgeMinutes", -5),
     "metrics.backlogAgeMinutes: -5 is less than the minimum of 0"),
    ("negative-cost", changed("metrics.costBurnRatePerHour", -1),
     "metrics.costBurnRatePerHour: -1 is less than the minimum of 0"),
    ("missing-metric", changed("metrics.costBurnRatePerHour", delete=True), "metrics.costBurnRatePerHour: is required"),
    ("unknown-status", changed("status", "sick"), "status: 'sick' is not one of healthy, degraded, error"),
    ("placeholder-status", changed("status", "healthy | degraded | error"), "status: 'healthy | degraded | error'"),
    ("unknown-error-code", changed("context.errorCode", "KABOOM"), "context.errorCode: 'KABOOM' is not one of"),
    ("missing-agent", changed("agent", delete=True), "agent: is required"),
    ("agent-not-string", changed("agent", 42), "agent: 42 is not of type 'string'"),
    ("agent-reserved-name", changed("agent", "fleet"), "agent: 'fleet' is reserved for the layer's own alerts"),
    ("agent-with-slash", changed("agent", "../CEO"), "agent: '../CEO' is not a valid name"),
    ("ts-without-zone", changed("ts", "2025-08-18T15:02:11"), "ts: '2025-08-18T15:02:11' is not an ISO-8601"),
    ("ts-placeholder", changed("ts", "ISO-8601"), "ts: 'ISO-8601' is not an ISO-8601"),
    ("ts-garbage-date", changed("ts", "2025-13-45T99:00:00Z"), "ts: '2025-13-45T99:00:00Z' is not an ISO-8601"),
    ("queue-depth-fraction", changed("context.queueDepth", 2.5), "context.queueDepth: 2.5 is not of type 'integer'"),
    ("negative-queue-depth", changed("context.queueDepth", -1), "context.queueDepth: -1 is less than the minimum"),
    ("dependencies-not-list", changed("context.dependencies", "MarketIntel"),
     "context.dependencies: 'MarketIntel' is not of type 'array'"),
    ("open-conflicts-not-integer", changed("context", {"openConflicts": "none"}),
     "context.openConflicts: 'none' is not of type 'integer'"),
    ("check-not-bool", changed("checks", {"inputsValid": "yes"}), "checks.inputsValid: 'yes' is not of type 'boolean'"),
    ("unknown-field", changed("metrics.succesRate", 0.9), "metrics.succesRate: unexpected property"),
    ("non-object-json", b'"healthy"', "(root): 'healthy' is not of type 'object'"),
    ("number-json", b"42", "(root): 42 is not of type 'object'"),
    ("empty-list", b"[]", "(root): empty list"),
    ("empty-body", b"", "(body): empty body"),
    ("whitespace-body", b"  \n", "(body): empty body"),
    ("not-json", b"{agent: CMO}", "(body): not valid JSON"),
    ("nan-literal", changed("metrics.successRate", 0.5).replace(b"0.5", b"NaN"), "(body): NaN is not valid JSON"),
    ("huge-number", changed("metrics.backlogAgeMinutes", 1).replace(b'"backlogAgeMinutes": 1', b'"backlogAgeMinutes": 1e400'),
     "(body): number 1e400 is out of range"),
    ("not-utf8", b"\xff\xfe{}", "(body): not UTF-8"),
]
