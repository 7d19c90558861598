"""The docker compose deployment and its image, checked without Docker.

docker-compose.yml, the Dockerfile and the repo's prometheus/, alertmanager/ and grafana/ configurations
must agree: every service name a configuration dials is a compose service listening on that port, every
file mounted or baked in exists, every image is pinned, and the webhook token reaches Alertmanager and the
receiver as one secret.
"""
from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PROMETHEUS_YML = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "alertmanager" / "alertmanager.yml"
GRAFANA_DATASOURCES = REPO / "grafana" / "provisioning" / "datasources"
GRAFANA_DASHBOARD_PROVIDERS = REPO / "grafana" / "provisioning" / "dashboards"
README_SECTION = "## Deploying with docker compose"

LAYER_IMAGE = "autonomy-layer"
# Where the third-party images listen unless their command says otherwise.
IMAGE_PORTS = {"prom/prometheus": 9090, "prom/alertmanager": 9093, "grafana/grafana": 3000}
TOP_LEVEL_KEYS = {"name", "services", "networks", "volumes", "secrets", "configs", "include"}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


# ----------------------------------------------------------------------------------------- helpers

def interpolate(value):
    """Compose variable interpolation as `docker compose up` does it with no .env: defaults only."""
    if isinstance(value, str):
        def default(match: re.Match) -> str:
            if match.group("op") is None:
                raise AssertionError(f"${{{match.group('name')}}} has no default in {value!r}")
            return match.group("default")
        return VARIABLE.sub(default, value).replace("$$", "$")
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


RAW = yaml.safe_load(COMPOSE_FILE.read_text())
COMPOSE = interpolate({k: v for k, v in RAW.items() if not str(k).startswith("x-")})
SERVICES: dict[str, dict] = COMPOSE["services"]
LAYER_SERVICES = sorted(n for n, s in SERVICES.items() if s["image"].startswith(LAYER_IMAGE + ":"))


def command(service: str) -> list[str]:
    cmd = SERVICES[service].get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(args: list[str], name: str) -> str | None:
    """The value of --name (as `--name value` or `--name=value`) in ARGS, or None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def image_name(image: str) -> str:
    return image.split("@", 1)[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def listening_port(service: str) -> int:
    """The port SERVICE listens on in its container: its command's --port, else its image's own."""
    args = command(service)
    if flag(args, "--port"):
        return int(flag(args, "--port"))
    address = flag(args, "--web.listen-address")
    if address:
        return int(address.rsplit(":", 1)[1])
    name = image_name(SERVICES[service]["image"])
    assert name in IMAGE_PORTS, f"{service}: no --port in its command and no known port for image {name}"
    return IMAGE_PORTS[name]


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounts(service: str) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every volume entry of SERVICE, short or long syntax."""
    out = []
    for entry in SERVICES[service].get("volumes", []):
        if isinstance(entry, dict):
            out.append((entry["source"], entry["target"], bool(entry.get("read_only"))))
        else:
            parts = entry.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def bind_mounts(service: str) -> list[tuple[str, str, bool]]:
    return [m for m in mounts(service) if m[0].startswith((".", "/"))]


def mount_target(service: str, source: str) -> str:
    found = [t for s, t, _ in bind_mounts(service) if PurePosixPath(s) == PurePosixPath(source)]
    assert found, f"{service} does not mount {source}"
    return found[0]


def service_secrets(service: str) -> dict[str, str]:
    """secret name -> path in the container, for every secret SERVICE is given."""
    out = {}
    for entry in SERVICES[service].get("secrets", []):
        if isinstance(entry, str):
            out[entry] = f"/run/secrets/{entry}"
        else:
            target = entry.get("target", entry["source"])
            out[entry["source"]] = target if target.startswith("/") else f"/run/secrets/{target}"
    return out


def published_ports(service: str) -> list[tuple[int, int]]:
    """(host port, container port) of every published port of SERVICE."""
    out = []
    for entry in SERVICES[service].get("ports", []):
        if isinstance(entry, dict):
            out.append((int(entry["published"]), int(entry["target"])))
        else:
            parts = str(entry).split("/")[0].split(":")
            out.append((int(parts[-2]), int(parts[-1])))
    return out


def healthcheck_command(service: str) -> list[str]:
    test = SERVICES[service].get("healthcheck", {}).get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(t) for t in test or []]


def git_ignored(path: str) -> bool:
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


# ------------------------------------------------------------------------------------- the file

def test_the_compose_file_is_compose_spec_without_a_version_key():
    assert isinstance(RAW, dict) and isinstance(RAW.get("services"), dict) and RAW["services"]
    assert "version" not in RAW, "the Compose specification has no `version:` key"
    unknown = {k for k in RAW if k not in TOP_LEVEL_KEYS and not str(k).startswith("x-")}
    assert not unknown, f"unknown top-level keys {sorted(unknown)}"
    assert set(SERVICES) == {"prometheus", "alertmanager", "grafana", "receiver", "exporter", "fleet"}


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
    assert LAYER_SERVICES == ["exporter", "fleet", "receiver"]
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


def test_named_volumes_are_declared_and_used():
    declared = set(COMPOSE.get("volumes") or {})
    used = {s for name in SERVICES for s, _, _ in mounts(name) if not s.startswith((".", "/"))}
    assert used <= declared, f"undeclared volumes {sorted(used - declared)}"
    assert declared <= used, f"unused volumes {sorted(declared - used)}"
    assert ("prometheus-data", "/prometheus", False) in mounts("prometheus")
    assert flag(command("prometheus"), "--storage.tsdb.path") == "/prometheus"


# -------------------------------------------------------------------------------------- secrets

def test_every_secret_file_has_a_committed_example_and_is_git_ignored():
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot ask it what .gitignore ignores")
    secrets = COMPOSE.get("secrets") or {}
    assert set(secrets) == {"webhook_token", "exporter_token", "grafana_admin_password", "agent_token"}
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


def test_the_webhook_token_reaches_alertmanager_and_the_receiver_as_the_same_secret():
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    files = {w["http_config"]["authorization"]["credentials_file"]
             for r in config["receivers"] if r["name"] == "autonomy-receiver" for w in r["webhook_configs"]}
    assert len(files) == 1, files
    (am_path,) = files
    am_secrets = {path: name for name, path in service_secrets("alertmanager").items()}
    assert am_path in am_secrets, f"alertmanager.yml reads {am_path}, which no alertmanager secret provides"
    receiver_path = environment("receiver")["AUTOREM_WEBHOOK_TOKEN_FILE"]
    rec_secrets = {path: name for name, path in service_secrets("receiver").items()}
    assert receiver_path in rec_secrets, "the receiver's AUTOREM_WEBHOOK_TOKEN_FILE is not one of its secrets"
    assert am_secrets[am_path] == rec_secrets[receiver_path] == "webhook_token"
    assert "AUTOREM_WEBHOOK_TOKEN" not in environment("receiver"), "never a token in the environment"


def test_the_exporter_token_reaches_the_exporter_and_the_fleet_as_the_same_secret():
    for name in ("exporter", "fleet"):
        path = environment(name)["AUTOREM_EXPORTER_TOKEN_FILE"]
        assert service_secrets(name).get("exporter_token") == path, name


def test_the_agent_token_reaches_the_receiver_and_the_fleet_as_the_same_secret():
    for name in ("receiver", "fleet"):
        path = environment(name)["AUTOREM_AGENT_TOKEN_FILE"]
        assert service_secrets(name).get("agent_token") == path, name
        assert "AUTOREM_AGENT_TOKEN" not in environment(name), "never a token in the environment"


def test_grafanas_admin_password_comes_from_a_secret():
    env = environment("grafana")
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == service_secrets("grafana")["grafana_admin_password"]


# ---------------------------------------------------------------------------------- healthchecks

@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_a_healthcheck_on_its_own_port(service):
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
             .path for name in SERVICES}
    assert paths == {"prometheus": "/-/ready", "alertmanager": "/-/ready", "grafana": "/api/health",
                     "receiver": "/healthz", "exporter": "/healthz", "fleet": "/fleet/state"}
    assert healthcheck_command("prometheus")[1] == "wget"


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
            if key.endswith("_URL") and value.startswith(("http://", "https://")):
                out.append((f"{name} {key}", urlsplit(value).netloc))
        exporter_url = flag(command(name), "--exporter-url")
        if exporter_url:
            out.append((f"{name} --exporter-url", urlsplit(exporter_url).netloc))
    return out


def test_the_configurations_dial_compose_services_on_the_ports_they_listen_on():
    dialled = dialled_addresses()
    who = {w.split()[0] for w, _ in dialled}
    assert {"prometheus.yml", "alertmanager.yml", "receiver", "fleet"} <= who
    for source, address in dialled:
        host, _, port = address.rpartition(":")
        assert port, f"{source}: {address} names no port"
        if host == "localhost" and source.startswith("prometheus.yml"):
            host = "prometheus"  # Prometheus scraping itself
        assert host in SERVICES, f"{source}: {host} is not a compose service ({', '.join(SERVICES)})"
        assert int(port) == listening_port(host), f"{source}: {host} listens on {listening_port(host)}, not {port}"


def test_prometheus_scrapes_the_exporter_and_the_receiver_and_alerts_alertmanager():
    dialled = {address for _, address in dialled_addresses()}
    assert {"exporter:9817", "receiver:9818", "alertmanager:9093"} <= dialled


def test_the_receiver_is_pointed_at_the_stack():
    env = environment("receiver")
    assert env["AUTOREM_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert env["AUTOREM_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    assert env["AUTOREM_ACTIONS_BASE_URL"] == "http://fleet:8080"
    assert env["AUTOREM_ESCALATION_URL"] == "http://fleet:8080/agents/CEO/escalations"


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


def test_prometheus_and_alertmanager_load_the_mounted_configurations():
    assert flag(command("prometheus"), "--config.file") == mount_target("prometheus", "./prometheus/prometheus.yml")
    assert "--web.enable-lifecycle" in command("prometheus")
    rules_dir = mount_target("prometheus", "./alert_rules")
    patterns = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    assert patterns and all(str(PurePosixPath(p).parent) == rules_dir for p in patterns), patterns
    for pattern in patterns:
        assert list((REPO / "alert_rules").glob(PurePosixPath(pattern).name)), f"{pattern} matches no file"
    assert flag(command("alertmanager"), "--config.file") == mount_target(
        "alertmanager", "./alertmanager/alertmanager.yml")


def test_the_receiver_reads_the_mounted_playbooks_and_keeps_its_data_in_a_volume():
    assert mount_target("receiver", "./playbooks.yaml") == environment("receiver")["AUTOREM_PLAYBOOKS_FILE"]
    data_dir = flag(command("receiver"), "--data-dir")
    assert data_dir and any(t == data_dir and not s.startswith((".", "/")) for s, t, _ in mounts("receiver"))


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


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_published_port_is_the_port_the_service_listens_on(service):
    ports = published_ports(service)
    assert ports, f"{service} publishes no port"
    for host, container in ports:
        assert container == listening_port(service), f"{service}: publishes {container}"
        assert host == container, f"{service}: publish {container} on the same host port"


def test_every_published_port_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    assert README_SECTION in readme, f"README.md has no {README_SECTION!r} section"
    section = readme.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    for name in SERVICES:
        for host, _ in published_ports(name):
            assert re.search(rf"(?<![\d.]){host}(?!\d)", section), f"{name}'s port {host} is not in {README_SECTION}"
        assert f"`{name}`" in section or name in section, f"{name} is not mentioned in {README_SECTION}"


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
    assert environment("receiver")["AUTOREM_PLAYBOOKS_FILE"] == "/app/playbooks.yaml"


def test_the_demo_stage_adds_the_development_stack_for_the_fleet_only():
    assert "devstack" in stage_copies("demo")
    assert SERVICES["fleet"]["build"]["target"] == "demo"
    for name in ("receiver", "exporter"):
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
