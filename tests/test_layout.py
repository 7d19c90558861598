"""The rooms of the code and what each may import: downwards only, no cycles, no production module too big.

contract (autonomy/) <- exporter/, webhook_receiver/ <- development stack (devstack/) <- CLI (autonomy_cli.py);
the agent library (autonomy/agent/) stands on the contract and exporter.embedded only.
Every import counts, function-level ones included (stdlib ast, nothing imported to check).
"""
from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOMS = {"autonomy": "contract", "exporter": "exporter", "webhook_receiver": "receiver", "devstack": "devstack",
         "autonomy_cli": "cli", "autonomy.agent": "agent"}
MAY_IMPORT = {
    "contract": {"contract"},
    "agent": {"contract", "agent"},
    "exporter": {"contract", "exporter"},
    "receiver": {"contract", "receiver"},
    "devstack": {"contract", "exporter", "receiver", "agent", "devstack"},
    "cli": {"contract", "exporter", "receiver", "agent", "devstack", "cli"},
}
MAY_ALSO_IMPORT = {"agent": {"exporter.embedded"}}  # single modules of a room a room may not import otherwise
PRODUCTION = ("contract", "exporter", "receiver", "agent")
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {"autonomy_cli": REPO / "autonomy_cli.py"}
    for package in ("autonomy", "exporter", "webhook_receiver", "devstack"):
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = project_modules()


def room(module: str) -> str | None:
    return ROOMS.get(".".join(module.split(".")[:2])) or ROOMS.get(module.split(".")[0])


def imports_of(module: str, path: Path) -> list[tuple[str, int]]:
    """The project modules MODULE imports (at any depth in its code), with the line of each import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports pkg.mod when that is a module; otherwise it names something in pkg.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.append((target, node.lineno))
    return found


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports_only_the_rooms_below_it(module):
    mine = room(module)
    wrong = [f"{MODULES[module].relative_to(REPO)}:{line} imports {target} ({room(target)})"
             for target, line in GRAPH[module] if room(target) not in MAY_IMPORT[mine]
             and target not in MAY_ALSO_IMPORT.get(mine, ())]
    assert not wrong, "\n".join(wrong)


def test_no_production_module_imports_the_development_stack_or_the_cli():
    wrong = [f"{m} imports {t}" for m in MODULES if room(m) in PRODUCTION for t, _ in GRAPH[m]
             if room(t) in ("devstack", "cli")]
    assert not wrong, "\n".join(wrong)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_remains_function_level_imports_included():
    graph = {m: {t for t, _ in targets} for m, targets in GRAPH.items()}
    cycles = [group for group in strongly_connected(graph) if len(group) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(g) for g in cycles)


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"], ["d"]] or ["a", "b", "c"] in strongly_connected(graph)
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from webhook_receiver.app import create_app\n")
    assert [t for t, _ in imports_of("webhook_receiver.m", source)] == ["webhook_receiver.app"]


def test_the_contract_imports_nothing_of_the_project_but_itself():
    contract = [m for m in MODULES if room(m) == "contract"]
    assert {"autonomy.settings", "autonomy.signal_contract", "autonomy.vocabulary", "autonomy.http_edge"} <= set(
        contract)
    assert all(room(t) == "contract" for m in contract for t, _ in GRAPH[m])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if room(m) in PRODUCTION))
def test_no_production_module_is_over_about_300_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(REPO)} has {lines} lines: split it by idea"


def test_nothing_in_production_computes_paths_from_its_own_file():
    """Production code finds its files as package data (importlib.resources), so an install without a
    checkout works; only the development stack's checkout.py knows where the repository is."""
    wrong = [str(p.relative_to(REPO)) for m, p in MODULES.items() if room(m) in PRODUCTION
             and "__file__" in p.read_text()]
    assert not wrong


ARCHITECTURE = REPO / "docs" / "architecture.md"


def test_the_architecture_page_names_only_modules_that_exist_and_every_receiver_module():
    text = ARCHITECTURE.read_text()
    named = set(re.findall(r"`([\w/]+\.py)`", text))
    receiver = REPO / "webhook_receiver"
    missing = [n for n in named if not ((receiver / n).is_file() or (REPO / n).is_file()
                                         or any((REPO / d / n).is_file() for d in ("autonomy", "devstack", "exporter")))]
    assert not missing, f"docs/architecture.md names modules that do not exist: {sorted(missing)}"
    modules = {str(p.relative_to(receiver)) for p in receiver.rglob("*.py") if p.name != "__init__.py"}
    globbed = {m for m in modules if any(fnmatch.fnmatch(m, pattern) for pattern in re.findall(r"`([\w/]+\*\.py)`",
                                                                                                text))}
    unnamed = sorted(modules - named - globbed - {m for m in modules if m.startswith("playbooks/")})
    assert not unnamed, f"receiver modules docs/architecture.md does not place: {unnamed}"


def test_the_production_wheel_holds_the_production_packages_their_data_and_nothing_of_the_development_stack(
        tmp_path):
    """Built as the image's production stage builds it (a context without devstack/), then imported and served
    from the installed files alone: the runbooks come from the package, not from a checkout."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "autonomy_cli.py"):
        shutil.copy(REPO / name, context / name)
    for package in ("autonomy", "exporter", "webhook_receiver"):
        shutil.copytree(REPO / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(tmp_path / "wheels"), str(context)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheels").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"autonomy", "exporter", "webhook_receiver", "autonomy_cli.py"}
    assert "autonomy/schemas/signal.schema.json" in names
    assert "autonomy/schemas/openapi.yaml" in names  # served at /openapi.yaml by both services
    runbooks = {n for n in names if n.startswith("webhook_receiver/runbooks/")}
    assert {f"webhook_receiver/runbooks/{p.name}" for p in (REPO / "webhook_receiver" / "runbooks").glob("*.md")} \
        == runbooks
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    # No site (so not the editable checkout): the installed files, then the dependencies' directory.
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages")
    probe = ("import sys, webhook_receiver, autonomy_cli\n"
             "from webhook_receiver.app import create_app\n"
             "from autonomy.settings import Secret, Settings\n"
             "assert webhook_receiver.__file__.startswith(sys.argv[1]), webhook_receiver.__file__\n"
             "app = create_app({'SETTINGS': Settings.from_env({'AUTOREM_PLAYBOOKS_FILE': sys.argv[2]}),\n"
             "                  'WEBHOOK_TOKEN': Secret('AUTOREM_WEBHOOK_TOKEN', 't' * 20), 'DATA_DIR': sys.argv[3],\n"
             "                  'START_ENGINE': False})\n"
             "reply = app.test_client().get('/runbooks/AgentSilent.md')\n"
             "assert reply.status_code == 200 and b'AgentSilent' in reply.data, reply.status_code\n"
             "assert app.test_client().get('/openapi.yaml').data.startswith(b'openapi: 3.1')\n"
             "assert b'EventSource' in app.test_client().get('/console/static/console.js').data\n"
             "try:\n    import devstack\nexcept ImportError:\n    print('no devstack')\n")
    done = subprocess.run([sys.executable, "-S", "-c", probe, str(installed), str(REPO / "playbooks.yaml"),
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"PYTHONPATH": f"{installed}:{deps}", "PATH": os.environ.get("PATH", ""),
                               "AUTOREM_AGENT_TOKEN": "a" * 20})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no devstack"
    # The CLI of that install says what a development command needs, in one line.
    cli = subprocess.run([sys.executable, "-S", "-c", "import sys, autonomy_cli; sys.exit(autonomy_cli.main())",
                          "demo"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PYTHONPATH": f"{installed}:{deps}", "PATH": os.environ.get("PATH", "")})
    assert cli.returncode == 2 and "the development stack (devstack/) is not installed" in cli.stderr
