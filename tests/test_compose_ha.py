"""The compose stack's shared ledger, its two receivers behind two clustered Alertmanagers, and its span
collector, checked without Docker (tests/test_compose.py checks the rest of the stack)."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.compose_model import (
    ALERTMANAGERS,
    COLLECTOR_IMAGES,
    COMPOSE,
    RAW,
    RECEIVERS,
    REPO,
    SECRETS_README,
    SERVICES,
    address,
    collector_config,
    collector_http_endpoint,
    command,
    environment,
    flag,
    healthcheck_command,
    image_name,
    listening_port,
    mount_target,
    mounted_file,
    named_volumes,
    netlocs,
    prometheus_alertmanagers,
    prometheus_targets,
    published_ports,
    secret_example,
    service_secrets,
    webhook_configs,
)

COLLECTOR = "otel-collector"
# The settings in which the two receivers may differ: who they are, where they listen, what they keep locally.
PER_RECEIVER = {"OTEL_RESOURCE_ATTRIBUTES"}


# ------------------------------------------------------------------------------------- PostgreSQL

def test_postgres_is_a_pinned_bookworm_image_of_the_major_the_tests_run():
    """Debian bookworm's `postgresql` package (scripts/ensure-binaries.sh) is 15: the store's tests run that."""
    image = SERVICES["postgres"]["image"]
    assert re.fullmatch(r"postgres:15\.\d+-bookworm", image), f"{image}: pin 15.<minor>-bookworm exactly"


def test_postgres_keeps_its_data_in_a_named_volume_and_reads_its_password_from_a_file_secret():
    env = environment("postgres")
    assert "POSTGRES_PASSWORD" not in env, "never a password in the environment"
    assert env["POSTGRES_PASSWORD_FILE"] == service_secrets("postgres")["postgres_password"]
    assert COMPOSE["secrets"]["postgres_password"] == {"file": "./secrets/postgres_password"}
    data = env.get("PGDATA", "/var/lib/postgresql/data")
    assert [t for _, t in named_volumes("postgres")] == [data], "the database lives in a named volume"


def test_postgres_has_a_pg_isready_healthcheck_on_its_own_port_and_database():
    test = healthcheck_command("postgres")
    assert test[:2] == ["CMD", "pg_isready"], test
    env = environment("postgres")
    assert flag(test, "--host") == "127.0.0.1" and flag(test, "--port") == str(listening_port("postgres"))
    assert flag(test, "--username") == env["POSTGRES_USER"] and flag(test, "--dbname") == env["POSTGRES_DB"]


def test_the_store_url_secret_names_the_postgres_service_its_user_database_and_password():
    """The committed examples agree, as secrets/README.md's commands write the real files."""
    url = urlsplit(secret_example("store_url").strip())
    env = environment("postgres")
    assert url.scheme == "postgresql"
    assert f"{url.hostname}:{url.port}" == address("postgres")
    assert url.username == env["POSTGRES_USER"] and url.path == f"/{env['POSTGRES_DB']}"
    assert url.password == secret_example("postgres_password").strip()


def readme_commands(text: str) -> str:
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "token_urlsafe" in b]
    return block


def test_secrets_readme_creates_every_secret_file_and_writes_the_store_url_from_the_password():
    block = readme_commands(SECRETS_README.read_text())
    generated = set(re.search(r"for name in ([^;]+);", block)[1].split())
    written = set(re.findall(r"> secrets/(\w+)", block))
    declared = {spec["file"].removeprefix("./secrets/") for spec in COMPOSE["secrets"].values()}
    assert generated | written == declared, f"created {sorted(generated | written)}, declared {sorted(declared)}"
    made_readable = set(re.findall(r"secrets/(\w+)", block.split("chmod 644", 1)[1]))
    assert made_readable == declared, "every file must be readable by the containers' users"
    url_line = next(line for line in block.splitlines() if "> secrets/store_url" in line)
    assert "$(cat secrets/postgres_password)" in url_line
    template = re.search(r"'(postgresql://[^']+)'", url_line)[1].replace("%s", "PASSWORD")
    example = urlsplit(secret_example("store_url").strip())
    assert urlsplit(template)._replace(netloc="") == example._replace(netloc="")
    assert urlsplit(template).hostname == example.hostname and urlsplit(template).port == example.port


def test_the_readme_creates_the_secrets_as_secrets_readme_does():
    assert readme_commands((REPO / "README.md").read_text()) == readme_commands(SECRETS_README.read_text())


# -------------------------------------------------------------------------------- the two receivers

@pytest.mark.parametrize("receiver", RECEIVERS)
def test_each_receiver_reads_the_store_url_from_a_file_secret_and_waits_for_a_healthy_postgres(receiver):
    env = environment(receiver)
    assert "AUTOREM_STORE_URL" not in env, "the URL holds the password: only as a file"
    assert env["AUTOREM_STORE_URL_FILE"] == service_secrets(receiver)["store_url"]
    assert SERVICES[receiver]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_the_receivers_run_the_same_settings_apart_from_who_they_are():
    a, b = (environment(name) for name in RECEIVERS)
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == PER_RECEIVER
    assert set(service_secrets(RECEIVERS[0])) == set(service_secrets(RECEIVERS[1]))
    assert mount_target(RECEIVERS[0], "./playbooks.yaml") == mount_target(RECEIVERS[1], "./playbooks.yaml")


def test_each_receiver_has_its_own_port_public_url_and_data_volume():
    ports = [listening_port(name) for name in RECEIVERS]
    assert len(set(ports)) == len(ports)
    for name, port in zip(RECEIVERS, ports):
        assert published_ports(name) == [(port, port)], name
        assert urlsplit(flag(command(name), "--public-url")).port == port, f"{name}: its lineage links"
        assert re.search(rf"127\.0\.0\.1:{port}/healthz", " ".join(healthcheck_command(name))), name
    volumes = [dict((t, s) for s, t in named_volumes(name))[flag(command(name), "--data-dir")] for name in RECEIVERS]
    assert len(set(volumes)) == len(volumes), f"a data directory each (lineage file, lock): {volumes}"


def test_prometheus_scrapes_every_receiver_as_its_own_instance():
    assert sorted(prometheus_targets("autonomy-receiver")) == sorted(address(name) for name in RECEIVERS)
    assert prometheus_targets("autonomy-exporter") == [address("exporter")]


def test_every_alertmanager_sends_every_notification_to_every_receiver():
    """Both webhooks of the one receiver the remediable route names, so either receiver down loses nothing."""
    webhooks = webhook_configs()
    assert sorted(urlsplit(w["url"]).netloc for w in webhooks) == sorted(address(name) for name in RECEIVERS)
    for webhook in webhooks:
        assert urlsplit(webhook["url"]).path == "/api/v1/alerts"
        assert webhook["send_resolved"] is True and webhook["max_alerts"] == 0
        assert webhook["http_config"] == webhooks[0]["http_config"]
    for name in ALERTMANAGERS:
        assert mount_target(name, "./alertmanager/alertmanager.yml"), name


# ------------------------------------------------------------------------------ the two Alertmanagers

def test_prometheus_alerts_every_alertmanager_and_the_receivers_know_them_all():
    everyone = sorted(address(name) for name in ALERTMANAGERS)
    assert sorted(prometheus_alertmanagers()) == everyone
    for name in RECEIVERS:
        assert sorted(netlocs(environment(name)["AUTOREM_ALERTMANAGER_URL"])) == everyone, name


def test_the_alertmanagers_form_one_gossip_cluster():
    for name in ALERTMANAGERS:
        args = command(name)
        listen = flag(args, "--cluster.listen-address")
        assert listen and listen.startswith("0.0.0.0:"), f"{name}: gossip on every interface of its container"
        peers = [a.split("=", 1)[1] for a in args if a.startswith("--cluster.peer=")]
        others = sorted(f"{o}:{flag(command(o), '--cluster.listen-address').rsplit(':', 1)[1]}"
                        for o in ALERTMANAGERS if o != name)
        assert sorted(peers) == others, f"{name} peers with {peers}, not {others}"
    assert len({flag(command(name), "--web.external-url") for name in ALERTMANAGERS}) == len(ALERTMANAGERS)


@pytest.mark.parametrize("alertmanager", ALERTMANAGERS)
def test_each_alertmanager_keeps_its_state_in_a_volume_of_its_own(alertmanager):
    storage = flag(command(alertmanager), "--storage.path")
    assert storage in [t for _, t in named_volumes(alertmanager)], alertmanager


# ------------------------------------------------------------------------------------ the collector

def test_the_collector_is_a_pinned_otel_image_loading_the_repos_config():
    image = SERVICES[COLLECTOR]["image"]
    assert image_name(image) in COLLECTOR_IMAGES, image
    assert re.fullmatch(r"\d+\.\d+\.\d+", image.rsplit(":", 1)[1]), f"{image}: pin an exact release"
    assert mounted_file(COLLECTOR, flag(command(COLLECTOR), "--config")) == REPO / "otel" / "collector.yaml"


def collector_version() -> tuple[int, ...]:
    return tuple(int(part) for part in SERVICES[COLLECTOR]["image"].rsplit(":", 1)[1].split("."))


def test_the_collector_receives_otlp_over_http_on_every_interface_and_has_a_traces_pipeline():
    config = collector_config(COLLECTOR)
    host, _, port = collector_http_endpoint(COLLECTOR).rpartition(":")
    assert host == "0.0.0.0", "since 0.104 the default is localhost: the receivers could not reach it"
    assert int(port) == 4318, "OTLP/HTTP's registered port"
    pipeline = config["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline.get(kind, []):
            assert component in (config.get(kind) or {}), f"the traces pipeline lists undefined {kind[:-1]} {component}"
    assert pipeline["exporters"], "a pipeline needs an exporter"
    if collector_version() >= (0, 111, 0):
        assert "logging" not in config.get("exporters", {}), "the logging exporter is gone since 0.111: debug"
    assert "memory_limiter" in pipeline.get("processors", []), "bounded memory while a backend is slow"


@pytest.mark.parametrize("receiver", RECEIVERS)
def test_each_receiver_sends_its_spans_to_the_collector_over_otlp_http(receiver):
    env = environment(receiver)
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.scheme == "http" and endpoint.netloc == address(COLLECTOR)
    assert endpoint.path in ("", "/"), "the base URL: the exporter appends /v1/traces"
    assert env["OTEL_SERVICE_NAME"] == "autonomy-receiver"
    assert not {k for k in env if k.startswith("OTEL_") and "HEADERS" in k}, "no credentials to the collector"


def test_the_receivers_spans_say_which_receiver_sent_them():
    instances = [dict(pair.split("=", 1) for pair in environment(name)["OTEL_RESOURCE_ATTRIBUTES"].split(","))
                 ["service.instance.id"] for name in RECEIVERS]
    assert instances == RECEIVERS


def test_the_receiver_services_share_one_definition():
    """receiver-b is receiver-a with its own port, volume and identity (a YAML merge), so they cannot drift."""
    text = (REPO / "docker-compose.yml").read_text()
    assert re.search(r"^  receiver-a: &receiver$", text, re.M) and re.search(r"^    <<: \*receiver$", text, re.M)
    assert RAW["services"]["receiver-b"]["build"] == RAW["services"]["receiver-a"]["build"]
