"""The docker compose deployment and its image, checked without Docker.

docker-compose.yml, the Dockerfile and the repo's prometheus/, alertmanager/ and grafana/ configurations
must agree: every service name a configuration dials is a compose service listening on that port, every
file mounted or baked in exists, every image is pinned, and each token reaches the services that share it as
one secret. tests/test_compose_ha.py checks the shared store, the two receivers, the two Alertmanagers and the
collector.
"""
from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import tomllib
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from tests.compose_model import (
    ALERTMANAGER_YML,
    ALERTMANAGERS,
    COMPOSE,
    COMPOSE_FILE,
    LAYER_IMAGE,
    LAYER_SERVICES,
    PROMETHEUS_YML,
    RAW,
    RECEIVERS,
    REPO,
    SERVICES,
    TOP_LEVEL_KEYS,
    VARIABLE,
    bind_mounts,
    command,
    environment,
    flag,
    git_ignored,
    healthcheck_command,
    listening_port,
    mount_target,
    mounts,
    netlocs,
    published_ports,
    service_secrets,
    webhook_configs,
)

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
GRAFANA_DATASOURCES = REPO / "grafana" / "provisioning" / "datasources"
GRAFANA_DASHBOARD_PROVIDERS = REPO / "grafana" / "provisioning" / "dashboards"
README_SECTION = "## Deploying with docker compose"
# Reached by service name only, never published: the database and the span collector.
INTERNAL = {"postgres", "otel-collector"}
# The collector's image is FROM scratch: no shell, no HTTP client, nothing a healthcheck could run. Nothing
# waits for it (spans are best effort).
NO_HEALTHCHECK = {"otel-collector"}


# ------------------------------------------------------------------------------------- the file

def test_the_compose_file_is_compose_spec_without_a_version_key():
    assert isinstance(RAW, dict) and isinstance(RAW.get("services"), dict) and RAW["services"]
    assert "version" not in RAW, "the Compose specification has no `version:` key"
    unknown = {k for k in RAW if k not in TOP_LEVEL_KEYS and not str(k).startswith("x-")}
    assert not unknown, f"unknown top-level keys {sorted(unknown)}"
    assert set(SERVICES) == {"prometheus", "alertmanager-a", "alertmanager-b", "grafana", "postgres", "receiver-a",
                             "receiver-b", "exporter", "otel-collector", "fleet"}
    assert RECEIVERS == ["receiver-a", "receiver-b"] and ALERTMANAGERS == ["alertmanager-a", "alertmanager-b"]


def test_every_variable_in_the_compose_file_has_a_default():
    """`docker compose up` must work without a .env file (interpolate() raises otherwise)."""
    for match in VARIABLE.finditer(COMPOSE_FILE.read_text()):
        assert match.group("op") is not None, f"${{{match.group('name')}}} has no default"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_image_is_pinned(service):
    image = SERVICES[service].get("image")
    assert image, f"{service} has no image"
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    assert ":" in last, f"{service}: {image} has no tag"
    tag = last.rsplit(":", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), f"{service}: bad tag {tag!r}"
    assert tag != "latest", f"{service}: {image} is not pinned"
    assert re.search(r"\d", tag), f"{service}: {image}: the tag names no version"


def test_the_services_built_from_the_repo_have_build_and_the_projects_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert LAYER_SERVICES == ["exporter", "fleet", "receiver-a", "receiver-b"]
    for name in LAYER_SERVICES:
        service = SERVICES[name]
        tag = f"{version}-demo" if name == "fleet" else version  # the demo stage: production + devstack
        assert service["image"] == f"{LAYER_IMAGE}:{tag}", name
        build = service.get("build")
        assert build, f"{name} runs the repo's image but has no build"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (REPO / context).resolve() == REPO, name
        assert (REPO / context / dockerfile).is_file(), name
    for name in set(SERVICES) - set(LAYER_SERVICES):
        assert "build" not in SERVICES[name], f"{name} uses a published image; it should not build"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_bind_mounted_path_exists_and_is_read_only(service):
    for source, target, read_only in bind_mounts(service):
        path = (REPO / source).resolve()
        assert path.exists(), f"{service}: {source} (mounted at {target}) does not exist in the repo"
        assert REPO in path.parents, f"{service}: {source} is outside the repo"
        assert read_only, f"{service}: {source} should be mounted read-only"


def test_named_volumes_are_declared_and_used_by_one_service_each():
    declared = set(COMPOSE.get("volumes") or {})
    users: dict[str, list[str]] = {}
    for name in SERVICES:
        for source, _, _ in mounts(name):
            if not source.startswith((".", "/")):
                users.setdefault(source, []).append(name)
    assert set(users) <= declared, f"undeclared volumes {sorted(set(users) - declared)}"
    assert declared <= set(users), f"unused volumes {sorted(declared - set(users))}"
    shared = {volume: names for volume, names in users.items() if len(names) > 1}
    assert not shared, f"one data directory per service (a receiver locks its own): {shared}"
    assert ("prometheus-data", "/prometheus", False) in mounts("prometheus")
    assert flag(command("prometheus"), "--storage.tsdb.path") == "/prometheus"


# -------------------------------------------------------------------------------------- secrets

def test_every_secret_file_has_a_committed_example_and_is_git_ignored():
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot ask it what .gitignore ignores")
    secrets = COMPOSE.get("secrets") or {}
    assert set(secrets) == {"webhook_token", "exporter_token", "grafana_admin_password", "agent_token",
                            "postgres_password", "store_url"}
    for name, spec in secrets.items():
        assert set(spec) == {"file"}, f"secret {name}: expected a file secret"
        relative = PurePosixPath(spec["file"]).as_posix().removeprefix("./")
        assert relative.startswith("secrets/"), f"secret {name}: keep the file under secrets/"
        example = REPO / (relative + ".example")
        assert example.is_file(), f"secret {name}: {example.relative_to(REPO)} is missing"
        assert git_ignored(relative), f"secret {name}: .gitignore does not ignore {relative}"
        assert not git_ignored(relative + ".example"), f"{relative}.example must be committed"
    assert (REPO / "secrets" / "README.md").is_file() and not git_ignored("secrets/README.md")


def test_every_secret_a_service_uses_is_declared_and_every_declared_one_is_used():
    declared = set(COMPOSE.get("secrets") or {})
    used = set()
    for name in SERVICES:
        for secret in service_secrets(name):
            assert secret in declared, f"{name} uses undeclared secret {secret}"
            used.add(secret)
    assert used == declared, f"declared but unused: {sorted(declared - used)}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_file_setting_points_at_a_secret_the_service_has(service):
    given = set(service_secrets(service).values())
    for key, value in environment(service).items():
        if key.endswith("_FILE") and value.startswith("/run/secrets/"):
            assert value in given, f"{service}: {key}={value} but the service has no such secret"


def test_the_webhook_token_reaches_both_alertmanagers_and_both_receivers_as_the_same_secret():
    files = {w["http_config"]["authorization"]["credentials_file"] for w in webhook_configs()}
    assert len(files) == 1, files
    (am_path,) = files
    for alertmanager in ALERTMANAGERS:
        am_secrets = {path: name for name, path in service_secrets(alertmanager).items()}
        assert am_secrets.get(am_path) == "webhook_token", (
            f"alertmanager.yml reads {am_path}, which {alertmanager} is not given as webhook_token")
    for receiver in RECEIVERS:
        receiver_path = environment(receiver)["AUTOREM_WEBHOOK_TOKEN_FILE"]
        assert service_secrets(receiver).get("webhook_token") == receiver_path, (
            f"{receiver}: AUTOREM_WEBHOOK_TOKEN_FILE is not its webhook_token secret")
        assert "AUTOREM_WEBHOOK_TOKEN" not in environment(receiver), "never a token in the environment"


def test_the_exporter_token_reaches_the_exporter_the_fleet_and_the_receivers_as_the_same_secret():
    for name in ("exporter", "fleet", *RECEIVERS):
        path = environment(name)["AUTOREM_EXPORTER_TOKEN_FILE"]
        assert service_secrets(name).get("exporter_token") == path, name


def test_the_agent_token_reaches_the_receivers_and_the_fleet_as_the_same_secret():
    for name in (*RECEIVERS, "fleet"):
        path = environment(name)["AUTOREM_AGENT_TOKEN_FILE"]
        assert service_secrets(name).get("agent_token") == path, name
        assert "AUTOREM_AGENT_TOKEN" not in environment(name), "never a token in the environment"


def test_grafanas_admin_password_comes_from_a_secret():
    env = environment("grafana")
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == service_secrets("grafana")["grafana_admin_password"]


# ---------------------------------------------------------------------------------- healthchecks

@pytest.mark.parametrize("service", sorted(set(SERVICES) - NO_HEALTHCHECK - {"postgres"}))
def test_every_http_service_has_a_healthcheck_on_its_own_port(service):
    test = healthcheck_command(service)
    assert test and test[0] in ("CMD", "CMD-SHELL"), f"{service} has no healthcheck"
    urls = re.findall(r"https?://[^\s'\"]+", " ".join(test[1:]))
    assert len(urls) == 1, f"{service}: expected one URL in the healthcheck, got {urls}"
    url = urlsplit(urls[0])
    assert url.hostname in ("127.0.0.1", "localhost"), f"{service}: check the container itself"
    assert url.port == listening_port(service), f"{service}: healthcheck port {url.port}"
    if service in LAYER_SERVICES:
        assert test[1] == "python" and "urllib" in test[-1], f"{service}: the slim image has no curl/wget"


def test_the_healthchecks_use_the_documented_endpoints():
    paths = {name: urlsplit(re.search(r"https?://[^\s'\"]+", " ".join(healthcheck_command(name))).group())
             .path for name in set(SERVICES) - NO_HEALTHCHECK - {"postgres"}}
    assert paths == {"prometheus": "/-/ready", "alertmanager-a": "/-/ready", "alertmanager-b": "/-/ready",
                     "grafana": "/api/health", "receiver-a": "/healthz", "receiver-b": "/healthz",
                     "exporter": "/healthz", "fleet": "/fleet/state"}
    assert healthcheck_command("prometheus")[1] == "wget"


def test_only_the_collector_has_no_healthcheck_and_nothing_waits_for_it():
    for name in NO_HEALTHCHECK:
        assert "healthcheck" not in SERVICES[name], f"{name}: its image cannot run one"
        for other, service in SERVICES.items():
            assert name not in (service.get("depends_on") or {}), f"{other} waits for {name}"


# ------------------------------------------------------------------------------- who dials whom

def dialled_addresses() -> list[tuple[str, str]]:
    """(who, "host:port") for every address a configuration or a service's settings dials."""
    out = []
    prometheus = yaml.safe_load(PROMETHEUS_YML.read_text())
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            out += [(f"prometheus.yml job {job['job_name']}", t) for t in static["targets"]]
    for am in prometheus.get("alerting", {}).get("alertmanagers", []):
        for static in am.get("static_configs", []):
            out += [("prometheus.yml alerting", t) for t in static["targets"]]
    alertmanager = yaml.safe_load(ALERTMANAGER_YML.read_text())
    for receiver in alertmanager["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            out.append((f"alertmanager.yml receiver {receiver['name']}", urlsplit(webhook["url"]).netloc))
    for name in SERVICES:
        for key, value in environment(name).items():
            if key.endswith(("_URL", "_ENDPOINT")) and value.startswith(("http://", "https://")):
                out += [(f"{name} {key}", netloc) for netloc in netlocs(value)]
        for option in ("--exporter-url", "--cluster.peer"):
            value = flag(command(name), option)
            if value:
                out.append((f"{name} {option}", urlsplit(value).netloc if "//" in value else value))
    return out


def test_the_configurations_dial_compose_services_on_the_ports_they_listen_on():
    dialled = dialled_addresses()
    who = {w.split()[0] for w, _ in dialled}
    assert {"prometheus.yml", "alertmanager.yml", "receiver-a", "receiver-b", "fleet"} <= who
    for source, address in dialled:
        host, _, port = address.rpartition(":")
        assert port, f"{source}: {address} names no port"
        if host == "localhost" and source.startswith("prometheus.yml"):
            host = "prometheus"  # Prometheus scraping itself
        assert host in SERVICES, f"{source}: {host} is not a compose service ({', '.join(SERVICES)})"
        if source.endswith("--cluster.peer"):
            assert flag(command(host), "--cluster.listen-address").rsplit(":", 1)[1] == port, source
            continue
        assert int(port) == listening_port(host), f"{source}: {host} listens on {listening_port(host)}, not {port}"


def test_the_receivers_are_pointed_at_the_stack():
    for name in RECEIVERS:
        env = environment(name)
        assert env["AUTOREM_PROMETHEUS_URL"] == "http://prometheus:9090"
        assert env["AUTOREM_ACTIONS_BASE_URL"] == "http://fleet:8080"
        assert env["AUTOREM_ESCALATION_URL"] == "http://fleet:8080/agents/CEO/escalations"
        assert env["AUTOREM_EXPORTER_URL"] == "http://exporter:9817"


def test_grafanas_datasource_is_the_prometheus_service():
    files = sorted(GRAFANA_DATASOURCES.glob("*.y*ml")) if GRAFANA_DATASOURCES.is_dir() else []
    if not files:
        pytest.skip("grafana/provisioning/datasources/*.yml does not exist yet (issue 6, part 2)")
    sources = [d for f in files for d in yaml.safe_load(f.read_text()).get("datasources", [])]
    prometheus = [d for d in sources if d.get("type") == "prometheus"]
    assert prometheus, "no Prometheus datasource is provisioned"
    for source in prometheus:
        url = urlsplit(source["url"])
        assert url.hostname in SERVICES, f"datasource {source.get('name')}: {url.hostname} is not a service"
        assert url.port == listening_port(url.hostname)
    assert "prometheus" in (SERVICES["grafana"].get("depends_on") or {})


def test_grafana_gets_its_provisioning_and_dashboards_where_the_provider_reads_them():
    assert mount_target("grafana", "./grafana/provisioning") == "/etc/grafana/provisioning"
    target = mount_target("grafana", "./grafana/dashboards")
    assert target == "/var/lib/grafana/dashboards"
    files = sorted(GRAFANA_DASHBOARD_PROVIDERS.glob("*.y*ml")) if GRAFANA_DASHBOARD_PROVIDERS.is_dir() else []
    if not files:
        pytest.skip("grafana/provisioning/dashboards/*.yml does not exist yet (issue 6, part 2)")
    paths = [p["options"]["path"] for f in files for p in yaml.safe_load(f.read_text()).get("providers", [])
             if p.get("type", "file") == "file"]
    assert paths and all(p == target or p.startswith(target + "/") for p in paths), paths


def test_prometheus_and_the_alertmanagers_load_the_mounted_configurations():
    assert flag(command("prometheus"), "--config.file") == mount_target("prometheus", "./prometheus/prometheus.yml")
    assert "--web.enable-lifecycle" in command("prometheus")
    rules_dir = mount_target("prometheus", "./alert_rules")
    patterns = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    assert patterns and all(str(PurePosixPath(p).parent) == rules_dir for p in patterns), patterns
    for pattern in patterns:
        assert list((REPO / "alert_rules").glob(PurePosixPath(pattern).name)), f"{pattern} matches no file"
    for name in ALERTMANAGERS:
        assert flag(command(name), "--config.file") == mount_target(name, "./alertmanager/alertmanager.yml"), name


@pytest.mark.parametrize("receiver", RECEIVERS)
def test_each_receiver_reads_the_mounted_playbooks_and_keeps_its_data_in_a_volume_of_its_own(receiver):
    assert mount_target(receiver, "./playbooks.yaml") == environment(receiver)["AUTOREM_PLAYBOOKS_FILE"]
    data_dir = flag(command(receiver), "--data-dir")
    assert data_dir and any(t == data_dir and not s.startswith((".", "/")) for s, t, _ in mounts(receiver))


def test_every_layer_service_listens_on_all_interfaces_of_its_container():
    for name in LAYER_SERVICES:
        assert flag(command(name), "--host") == "0.0.0.0", name
        assert "--insecure" not in command(name), name


# -------------------------------------------------------------------------- profiles and ports

def test_the_fleet_runs_only_under_the_demo_profile():
    assert SERVICES["fleet"].get("profiles") == ["demo"]
    for name, service in SERVICES.items():
        if name != "fleet":
            assert not service.get("profiles"), f"{name} should run without a profile"
            assert "fleet" not in (service.get("depends_on") or {}), f"{name} cannot depend on the demo fleet"


def test_the_base_stack_refers_to_the_demo_fleet_only_through_overridable_settings():
    for name, service in RAW["services"].items():
        if name == "fleet":
            continue
        env = service.get("environment") or {}
        for key, value in env.items():
            if "fleet:" in str(value):
                assert re.fullmatch(r"\$\{" + key + r":-[^}]+\}", str(value)), (
                    f"{name} {key}: point at the demo fleet only as a default people can override")


@pytest.mark.parametrize("service", sorted(set(SERVICES) - INTERNAL))
def test_every_published_port_is_the_port_the_service_listens_on(service):
    ports = published_ports(service)
    assert ports, f"{service} publishes no port"
    for host, container in ports:
        assert container == listening_port(service), f"{service}: publishes {container}"
        assert host == container, f"{service}: publish {container} on the same host port"


def test_the_database_and_the_collector_are_not_published():
    for name in INTERNAL:
        assert not published_ports(name), f"{name}: only the stack reaches it, by service name"


def test_no_two_services_publish_the_same_host_port():
    hosts = [host for name in SERVICES for host, _ in published_ports(name)]
    assert len(hosts) == len(set(hosts)), sorted(hosts)


def test_every_published_port_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    assert README_SECTION in readme, f"README.md has no {README_SECTION!r} section"
    section = readme.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    for name in SERVICES:
        for host, _ in published_ports(name):
            assert re.search(rf"(?<![\d.]){host}(?!\d)", section), f"{name}'s port {host} is not in {README_SECTION}"
        assert f"`{name}`" in section, f"{name} is not mentioned in {README_SECTION}"


# ----------------------------------------------------------------------------------- Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    out = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def copy_sources() -> list[str]:
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in shlex.split(args)), "no multi-stage copies expected"
        sources += words[:-1]
    return sources


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves PATH (or the directory containing it) out of the build context."""
    result = False
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        pattern_variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in pattern_variants):
            result = not negate
    return result


def test_the_dockerfile_copies_only_what_exists_and_what_the_context_keeps():
    sources = copy_sources()
    assert sources
    patterns = dockerignore_patterns()
    for source in sources:
        assert not any(c in source for c in "*?["), f"COPY {source}: copy named paths, not globs"
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repo"
        assert not excluded(source, patterns), f"COPY {source}: .dockerignore leaves it out of the context"


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by build stage (FROM ... AS name)."""
    by_stage: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            words = args.split()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else words[0]
            by_stage[current] = []
        by_stage[current].append((keyword, args))
    return by_stage


def stage_copies(stage: str) -> set[str]:
    return {PurePosixPath(w).as_posix().rstrip("/") for keyword, args in stages()[stage] if keyword == "COPY"
            for w in [w for w in shlex.split(args) if not w.startswith("--")][:-1]}


PRODUCTION_PACKAGES = {"autonomy", "exporter", "webhook_receiver", "autonomy_cli.py"}


def test_the_production_stage_copies_the_production_packages_and_nothing_of_the_development_stack():
    copied = stage_copies("production")
    assert PRODUCTION_PACKAGES | {"pyproject.toml", "README.md", "playbooks.yaml"} == copied
    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert found["py-modules"] == ["autonomy_cli"]
    for package in ("autonomy", "exporter", "webhook_receiver"):
        assert package in found["packages"]["find"]["include"]
    # Package data the receiver and the contract read at run time, found with importlib.resources.
    assert "runbooks/*.md" in found["package-data"]["webhook_receiver"]
    assert "schemas/*.json" in found["package-data"]["autonomy"]
    assert (REPO / "autonomy" / "schemas" / "signal.schema.json").is_file()
    assert any((REPO / "webhook_receiver" / "runbooks").glob("*.md"))


def test_the_production_stage_installs_non_editable_and_keeps_no_source_tree():
    runs = [args for keyword, args in stages()["production"] if keyword == "RUN"]
    installs = [r for r in runs if "pip install --no-deps" in r]
    assert installs and not any(re.search(r"pip install [^&]*-e\b", r) for r in runs), "install with `pip install .`"
    assert "rm -rf /build" in installs[0]
    for name in RECEIVERS:
        assert environment(name)["AUTOREM_PLAYBOOKS_FILE"] == "/app/playbooks.yaml", name


def test_the_image_has_the_drivers_the_compose_settings_need():
    """The PostgreSQL store and the OTLP exporter are imported only when configured: the build imports them."""
    dependencies = [re.split(r"[<>=~!\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in
                    tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    assert {"psycopg", "psycopg-pool", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"} <= set(
        dependencies)
    runs = " ".join(args for keyword, args in stages()["production"] if keyword == "RUN")
    assert "pip install -r /tmp/requirements.txt" in runs and "['project']['dependencies']" in runs
    for module in ("psycopg", "psycopg_pool", "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
        imported = re.search(rf"python -c \"import [^\"]*\b{re.escape(module)}\b", runs)
        assert imported, f"the build never imports {module}"
    for name in RECEIVERS:
        assert environment(name)["OTEL_TRACES_EXPORTER"] == "otlp", name


def test_the_demo_stage_adds_the_development_stack_for_the_fleet_only():
    assert "devstack" in stage_copies("demo")
    assert SERVICES["fleet"]["build"]["target"] == "demo"
    for name in (*RECEIVERS, "exporter"):
        assert SERVICES[name]["build"]["target"] == "production", name


def test_the_image_is_pinned_and_runs_as_a_non_root_user():
    by_stage = stages()
    assert list(by_stage) == ["production", "demo"]
    image = by_stage["production"][0][1].split()[0]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    assert by_stage["demo"][0][1].split()[0] == "production"
    for stage, instructions in by_stage.items():
        users = [args for keyword, args in instructions if keyword == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{stage} runs as root"
    users = [args for keyword, args in by_stage["production"] if keyword == "USER"]
    runs = " ".join(args for keyword, args in by_stage["production"] if keyword == "RUN")
    user = users[-1].split(":")[0]
    assert re.search(rf"install -d [^&]*-o {user}\b[^&]*/data", runs), "/data must belong to the service user"
    assert [args for keyword, args in by_stage["production"] if keyword == "ENTRYPOINT"] == ['["autonomy"]']


def test_the_image_stops_with_sigint_which_the_services_handle_as_pid_1():
    """Python as PID 1 ignores SIGTERM (no handler); SIGINT raises KeyboardInterrupt and shuts down cleanly."""
    assert [args for keyword, args in dockerfile_instructions() if keyword == "STOPSIGNAL"] == ["SIGINT"]
    for name in LAYER_SERVICES:
        assert SERVICES[name].get("stop_signal", "SIGINT") == "SIGINT", name


def test_the_build_context_never_contains_the_secrets():
    patterns = dockerignore_patterns()
    for name in COMPOSE.get("secrets") or {}:
        path = COMPOSE["secrets"][name]["file"].removeprefix("./")
        assert excluded(path, patterns), f".dockerignore must leave {path} out of the build context"
    assert excluded(".git/config", patterns) and excluded(".venv/bin/python", patterns)
