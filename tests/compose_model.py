"""docker-compose.yml and the configurations it mounts, read as `docker compose up` reads them (for the tests)."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_YML = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "alertmanager" / "alertmanager.yml"
SECRETS_README = REPO / "secrets" / "README.md"

LAYER_IMAGE = "autonomy-layer"
COLLECTOR_IMAGES = ("otel/opentelemetry-collector", "otel/opentelemetry-collector-contrib")
# Where the third-party images listen unless their command says otherwise.
IMAGE_PORTS = {"prom/prometheus": 9090, "prom/alertmanager": 9093, "grafana/grafana": 3000, "postgres": 5432}
TOP_LEVEL_KEYS = {"name", "services", "networks", "volumes", "secrets", "configs", "include"}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


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


def image_name(image: str) -> str:
    return image.split("@", 1)[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def services_of_image(*names: str) -> list[str]:
    return sorted(n for n, s in SERVICES.items() if image_name(s["image"]) in names)


LAYER_SERVICES = sorted(n for n, s in SERVICES.items() if s["image"].startswith(LAYER_IMAGE + ":"))
RECEIVERS = sorted(n for n in LAYER_SERVICES if SERVICES[n].get("command", [None])[0] == "receiver")
ALERTMANAGERS = services_of_image("prom/alertmanager")


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


def named_volumes(service: str) -> list[tuple[str, str]]:
    return [(s, t) for s, t, _ in mounts(service) if not s.startswith((".", "/"))]


def mount_target(service: str, source: str) -> str:
    found = [t for s, t, _ in bind_mounts(service) if PurePosixPath(s) == PurePosixPath(source)]
    assert found, f"{service} does not mount {source}"
    return found[0]


def mounted_file(service: str, target: str) -> Path:
    """The repo file SERVICE bind-mounts at TARGET."""
    found = [s for s, t, _ in bind_mounts(service) if t == target]
    assert found, f"{service} mounts nothing at {target}"
    return REPO / found[0]


def collector_config(service: str) -> dict:
    """The collector configuration SERVICE loads (its --config, a file it mounts)."""
    path = flag(command(service), "--config")
    assert path, f"{service}: no --config in its command"
    return yaml.safe_load(mounted_file(service, path).read_text())


def collector_http_endpoint(service: str) -> str:
    return collector_config(service)["receivers"]["otlp"]["protocols"]["http"]["endpoint"]


def listening_port(service: str) -> int:
    """The port SERVICE listens on in its container: its command's --port, else its image's own."""
    args = command(service)
    if flag(args, "--port"):
        return int(flag(args, "--port"))
    address = flag(args, "--web.listen-address")
    if address:
        return int(address.rsplit(":", 1)[1])
    name = image_name(SERVICES[service]["image"])
    if name in COLLECTOR_IMAGES:
        return int(collector_http_endpoint(service).rsplit(":", 1)[1])  # OTLP/HTTP, what the receivers dial
    assert name in IMAGE_PORTS, f"{service}: no --port in its command and no known port for image {name}"
    return IMAGE_PORTS[name]


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


def secret_example(name: str) -> str:
    """The committed example of secret NAME's file (the real one is git-ignored)."""
    return (REPO / (COMPOSE["secrets"][name]["file"].removeprefix("./") + ".example")).read_text()


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


def netlocs(value: str) -> list[str]:
    """host:port of every URL in VALUE, one URL or a comma-separated list."""
    return [urlsplit(url.strip()).netloc for url in value.split(",") if url.strip()]


def prometheus_targets(job_name: str) -> list[str]:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == job_name]
    return [t for static in job.get("static_configs", []) for t in static["targets"]]


def prometheus_alertmanagers() -> list[str]:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    return [t for am in config.get("alerting", {}).get("alertmanagers", [])
            for static in am.get("static_configs", []) for t in static["targets"]]


def webhook_configs(receiver: str = "autonomy-receiver") -> list[dict]:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    return [w for r in config["receivers"] if r["name"] == receiver for w in r.get("webhook_configs", [])]


def address(service: str) -> str:
    """How the other services reach SERVICE: its name and the port it listens on."""
    return f"{service}:{listening_port(service)}"
