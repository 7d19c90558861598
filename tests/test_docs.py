from pathlib import Path

from exporter.agent_metrics import AGENT_METRICS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_agent_metric_is_documented_in_the_readme():
    for metric in AGENT_METRICS:
        assert f"| `{metric.name}` |" in README, metric.name


def test_the_exporters_own_metrics_are_documented():
    for name in ("autonomy_exporter_signals_total", "autonomy_exporter_agents",
                 "autonomy_exporter_agents_expired_total"):
        assert f"| `{name}` |" in README, name


def test_the_readme_gives_the_two_setup_commands():
    assert "make demo" in README and "make test" in README


def test_every_receiver_metric_is_documented_in_the_readme():
    from webhook_receiver.receiver_metrics import ReceiverMetrics

    names = set()
    for family in ReceiverMetrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    for name in sorted(names):
        assert f"`{name}`" in README, name


def test_the_readme_says_who_is_called_for_each_primitive_as_the_contract_does():
    from autonomy.primitives import PRIMITIVES

    for p in PRIMITIVES:
        assert f"| `{p.name}` | {p.called} | {p.asks} |" in README, p.name
