"""The `autonomy` command and its subcommands: the one module that may import every room."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path
from typing import Callable, Sequence

import requests

from autonomy.http_edge import serve
from autonomy.settings import Settings, SettingsError, read_secret
from autonomy.signal_contract import SignalError, load_signals
from exporter.app import create_app as create_exporter
from webhook_receiver.app import create_app as create_receiver
from webhook_receiver.app import shutdown as shutdown_receiver
from webhook_receiver.classifier import SloThresholds, classify
from webhook_receiver.data_dir import DataDirError
from webhook_receiver.lineage import LINEAGE_FILE, LineageLog
from webhook_receiver.playbooks import PlaybookError, load_playbooks

NO_CHECKOUT = ("the development stack (devstack/) is not installed: this command runs from a checkout of the "
               "repository (make demo), not from the production image")


class NoCheckout(RuntimeError):
    """A development command was run where only the production packages are installed."""


def needs_checkout(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the development stack's absence into one clear line instead of a traceback."""

    @wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "devstack":
                raise NoCheckout(NO_CHECKOUT) from None
            raise
    return run


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _signals_or_report(path: str) -> list | None:
    """The signals in PATH (or stdin), or None after printing why not, one problem per line on stderr."""
    try:
        return load_signals(_read_input(path))
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
    except SignalError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
    return None


def cmd_signal_validate(args: argparse.Namespace) -> int:
    """Validate one signal or a list of signals; errors one per line on stderr."""
    signals = _signals_or_report(args.file)
    if signals is None:
        return 1
    names = ", ".join(s.agent for s in signals)
    print(f"valid: {len(signals)} signal{'s' if len(signals) != 1 else ''} ({names})")
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    """Run the exporter service."""
    app = create_exporter({"INSECURE": args.insecure})
    if args.seed:
        store = app.extensions["autonomy_exporter"].store
        store.put_many(load_signals(Path(args.seed).read_bytes()))
    serve(app, args.host, args.port)
    return 0


def cmd_receiver(args: argparse.Namespace) -> int:
    """Run the webhook receiver (the Chief of Staff) under waitress."""
    config = {"INSECURE": args.insecure, "PUBLIC_URL": args.public_url or f"http://{args.host}:{args.port}"}
    if args.data_dir:
        config["DATA_DIR"] = args.data_dir
    try:
        app = create_receiver(config)
    except DataDirError as exc:
        print(f"autonomy receiver: {exc}", file=sys.stderr)
        return 2
    try:
        serve(app, args.host, args.port, threads=16)
    finally:
        shutdown_receiver(app)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify one signal and name the playbook that would run."""
    settings = Settings.from_env()
    signals = _signals_or_report(args.file)
    if signals is None:
        return 1
    try:
        playbooks = load_playbooks(Path(settings.playbooks_file), read_tokens=False)  # classifying sends nothing
    except PlaybookError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    for signal in signals:
        decision = classify(signal, slo=SloThresholds.from_settings(settings))
        playbook = playbooks.select(decision.classification) if decision.classification else None
        print(json.dumps(decision.as_dict(playbook.name if playbook else None)))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the decision lineage (JSON lines), optionally for one agent; report torn lines."""
    data_dir = Path(args.data_dir or Settings.from_env().data_dir)
    read = LineageLog(data_dir / LINEAGE_FILE).read(agent=args.agent, since=args.since)
    for entry in read.entries:
        print(json.dumps(entry))
    for number in read.skipped_lines:
        print(f"{data_dir / LINEAGE_FILE}:{number}: torn or unreadable line skipped", file=sys.stderr)
    return 0


def cmd_lineage_export(args: argparse.Namespace) -> int:
    """Write every entry of the store's lineage (all receivers sharing it), oldest first, to one file."""
    from webhook_receiver.lineage import export
    from webhook_receiver.store import LEDGER_FILE, describe, open_store

    settings = Settings.from_env()
    data_dir = Path(args.export_data_dir or args.data_dir or settings.data_dir)
    if not settings.store_url and not (data_dir / LEDGER_FILE).is_file():
        print(f"autonomy lineage export: no ledger at {data_dir / LEDGER_FILE}; name the data directory "
              "(--data-dir, AUTOREM_DATA_DIR) or the store (AUTOREM_STORE_URL)", file=sys.stderr)
        return 2
    try:
        store = open_store(settings.store_url, data_dir, settings.reopen_grace_seconds)
    except DataDirError as exc:
        print(f"autonomy lineage export: {exc}", file=sys.stderr)
        return 2
    try:
        count = export(store, Path(args.out))
    except OSError as exc:
        print(f"autonomy lineage export: {args.out}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return 1
    except DataDirError as exc:
        print(f"autonomy lineage export: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"exported {count} lineage entr{'y' if count == 1 else 'ies'} from "
          f"{describe(settings.store_url, data_dir)} to {args.out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check the settings, playbooks.yaml and the rendered rules; every problem listed, exit 1 if any."""
    settings = Settings.from_env()
    problems = 0
    try:
        playbooks = load_playbooks(Path(settings.playbooks_file), settings.actions_base_url or None)
        print(f"playbooks: {len(playbooks.playbooks)} playbooks in {settings.playbooks_file}")
    except PlaybookError as exc:
        problems += len(exc.errors)
        for line in exc.errors:
            print(f"playbooks: {line}", file=sys.stderr)
    try:
        stale = cmd_rules_diff(args)
    except NoCheckout:
        print("rules: not checked here (no checkout); `autonomy check` in the repository checks them")
        return 1 if problems else 0
    if stale:
        problems += 1
    else:
        print("rules: alert_rules/ matches the current settings")
    return 1 if problems else 0


@needs_checkout
def cmd_rules_render(args: argparse.Namespace) -> int:
    """Render the alert rules from the templates and the current AUTOREM_* settings."""
    from devstack.rule_render import RULES_DIR, render_rules
    out = Path(args.out) if args.out else RULES_DIR
    for path in render_rules(Settings.from_env(), out, time_factor=args.time_factor):
        print(f"wrote {path}")
    return 0


@needs_checkout
def cmd_rules_diff(args: argparse.Namespace) -> int:
    """Exit 1 if the committed rule files differ from a fresh rendering with the current settings."""
    from devstack.rule_render import RULES_DIR, render_rules
    with tempfile.TemporaryDirectory() as tmp:
        stale = [p.name for p in render_rules(Settings.from_env(), Path(tmp))
                 if not (RULES_DIR / p.name).exists() or (RULES_DIR / p.name).read_text() != p.read_text()]
    for name in stale:
        print(f"alert_rules/{name} differs from the templates and settings; run `autonomy rules render`",
              file=sys.stderr)
    return 1 if stale else 0


@needs_checkout
def cmd_dashboards_render(args: argparse.Namespace) -> int:
    """Write grafana/dashboards/*.json from devstack/dashboards.py and the current settings."""
    from devstack.dashboards import DASHBOARDS_DIR, write_all
    for path in write_all(Settings.from_env(), Path(args.out) if args.out else DASHBOARDS_DIR):
        print(f"wrote {path}")
    return 0


@needs_checkout
def cmd_demo(args: argparse.Namespace) -> int:
    """Run the fleet, the whole layer and every drill (see devstack.demo)."""
    from devstack.demo import run_demo

    return run_demo(keep_running=args.keep_running)


@needs_checkout
def cmd_drill(args: argparse.Namespace) -> int:
    """Run the drills against a fresh stack, or a running layer (--target-config); exit 0 only if all passed."""
    from devstack.demo import run_drill
    from devstack.drills import DRILLS

    if args.target_config:
        from devstack.nightly_drill import run_target_drill

        return run_target_drill(args.target_config, args.scenario, args.json, args.metrics_file)
    if args.metrics_file:
        print("--metrics-file needs --target-config (the nightly drill against a running layer)", file=sys.stderr)
        return 2
    unknown = [n for n in args.scenario if n not in DRILLS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(DRILLS)}", file=sys.stderr)
        return 2
    return run_drill(args.scenario, args.json)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


@needs_checkout
def cmd_soak(args: argparse.Namespace) -> int:
    """Run a simulated week (see devstack.soak); exit 0 only if the pack's criteria and the ground truth hold."""
    from devstack.soak import run_soak
    from devstack.soak_report import table
    from devstack.soak_schedule import schedule

    try:
        schedule(args.seed, args.days, args.agents)
    except ValueError as exc:
        print(f"autonomy soak: {exc}", file=sys.stderr)
        return 2
    report = run_soak(args.days, args.agents, args.seed, args.time_factor, workdir=args.workdir)
    print(table(report), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json.dumps(report), flush=True)
    return 0 if report["passed"] else 1


@needs_checkout
def cmd_fleet(args: argparse.Namespace) -> int:
    """Run the simulated fleet: action endpoints (the receiver's AUTOREM_AGENT_TOKEN required) and a heartbeat
    pushing to an exporter."""
    from devstack.fleet import SimulatedFleet, fleet_heartbeat
    settings = Settings.from_env()
    try:
        token = read_secret("AUTOREM_AGENT_TOKEN", os.environ)
    except ValueError as exc:
        token, problem = None, str(exc)
    else:
        problem = "set AUTOREM_AGENT_TOKEN or AUTOREM_AGENT_TOKEN_FILE: the token the receiver sends with every action"
    if token is None:
        print(f"autonomy fleet: AUTOREM_AGENT_TOKEN: {problem}", file=sys.stderr)
        return 2
    fleet = SimulatedFleet(slo_backlog_minutes=settings.slo_backlog_min, action_token=token.reveal())
    beat = fleet_heartbeat(fleet, args.exporter_url, settings.exporter_token, interval=args.interval).start()
    try:
        serve(fleet.app, args.host, args.port)
    finally:
        beat.stop()
    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list (`*`: every one) as the rollout API takes it; None when not given."""
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def cmd_rollout(args: argparse.Namespace) -> int:
    """Show, set or expand the staged rollout through the receiver's API; 1 when refused, 2 when unreachable."""
    settings = Settings.from_env()
    token = settings.read_token if args.rollout_command == "show" else settings.webhook_token
    headers = {"Authorization": f"Bearer {token.reveal()}"} if token else {}
    url = args.receiver_url.rstrip("/") + "/api/v1/rollout"
    body = {key: value for key, value in (("agents", _names(getattr(args, "agents", None))),
                                          ("classes", _names(getattr(args, "classes", None))),
                                          ("reason", getattr(args, "reason", None))) if value is not None}
    try:
        if args.rollout_command == "show":
            reply = requests.get(url, headers=headers, timeout=10)
        elif args.rollout_command == "set":
            reply = requests.put(url, json=body, headers=headers, timeout=10)
        else:
            reply = requests.post(url + "/expand", json=body, headers=headers, timeout=10)
    except requests.RequestException as exc:
        print(f"cannot reach the receiver at {args.receiver_url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    try:
        doc = reply.json()
    except ValueError:
        doc = {"error": reply.text[:300]}
    if reply.status_code != 200:
        print(f"refused ({reply.status_code}): {doc.get('error')}", file=sys.stderr)
        for line in doc.get("errors", []):
            print(f"  {line}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc))
        return 0
    agents = doc.get("agents") or []
    print(f"agents:  {'every agent (*)' if agents == ['*'] else ', '.join(agents)}")
    print(f"classes: {', '.join(doc.get('classes') or [])}")
    print(f"reason:  {doc.get('reason') or '-'}")
    changed = doc.get("changed_at")
    print("changed: " + (datetime.fromtimestamp(changed, timezone.utc).isoformat(timespec="seconds")
                         if changed else "never (the initial value: AUTOREM_CANARY_AGENTS, every class)"))
    return 0


def _migrate_target(args: argparse.Namespace) -> str:
    """The target URL: --to, the file --to-file names, else AUTOREM_STORE_URL(_FILE); StoreError if none."""
    from webhook_receiver.store import StoreError

    if args.to_file:
        try:
            text = Path(args.to_file).read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"--to-file {args.to_file}: cannot read ({getattr(exc, 'strerror', None) or exc})"
                             ) from None
        if not text:
            raise StoreError(f"--to-file {args.to_file}: empty")
        return text
    if args.to:
        return args.to
    try:
        url = read_secret("AUTOREM_STORE_URL", os.environ)
    except ValueError as exc:
        raise StoreError(f"AUTOREM_STORE_URL: {exc}") from None
    if url is None:
        raise StoreError("name the target: --to postgresql://..., --to-file FILE (the URL in a file, so the password "
                         "is not on the command line), or AUTOREM_STORE_URL / AUTOREM_STORE_URL_FILE")
    return url.reveal()


def cmd_store_migrate(args: argparse.Namespace) -> int:
    """Copy a stopped receiver's SQLite ledger into an empty PostgreSQL ledger; 2 when refused (nothing written),
    1 when committed but its counts did not check."""
    from webhook_receiver.store import StoreError
    from webhook_receiver.store.store_copy import CopyUnverified, copy_ledger, ledger_path

    try:
        report = copy_ledger(ledger_path(args.source), _migrate_target(args))
    except CopyUnverified as exc:
        print(f"autonomy store migrate: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"autonomy store migrate: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autonomy",
        description="Autonomy layer: keeps a fleet of AI agents healthy on Prometheus and Alertmanager.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    signal = sub.add_parser("signal", help="work with agent status signals (pack section 2)")
    signal_sub = signal.add_subparsers(dest="signal_command", metavar="SUBCOMMAND", required=True)
    validate = signal_sub.add_parser("validate", help="validate a signal (or a list of them) against the schema")
    validate.add_argument("file", metavar="FILE|-", help="JSON file, or - for standard input")
    validate.set_defaults(func=cmd_signal_validate)

    exp = sub.add_parser("exporter", help="serve pushed signals as Prometheus metrics")
    exp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    exp.add_argument("--port", type=int, default=9817, help="port to listen on (default 9817)")
    exp.add_argument("--insecure", action="store_true",
                     help="accept pushes without a bearer token (AUTOREM_EXPORTER_TOKEN unset)")
    exp.add_argument("--seed", metavar="FILE", help="signals to load at start")
    exp.set_defaults(func=cmd_exporter)

    rec = sub.add_parser("receiver", help="run the Alertmanager webhook receiver (classify, remediate, verify)")
    rec.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    rec.add_argument("--port", type=int, default=9818, help="port to listen on (default 9818)")
    rec.add_argument("--data-dir", metavar="D", help="ledger and lineage directory (default AUTOREM_DATA_DIR)")
    rec.add_argument("--public-url", help="URL people reach the receiver at (for lineage links)")
    rec.add_argument("--insecure", action="store_true",
                     help="accept webhooks without a bearer token (AUTOREM_WEBHOOK_TOKEN unset)")
    rec.set_defaults(func=cmd_receiver)

    cls = sub.add_parser("classify", help="classify a signal and name the playbook that would run")
    cls.add_argument("file", metavar="FILE|-", help="JSON signal file, or - for standard input")
    cls.set_defaults(func=cmd_classify)

    lin = sub.add_parser("lineage", help="print the decision lineage")
    lin.add_argument("--agent", help="only this agent")
    lin.add_argument("--since", help="only entries at or after this ISO-8601 UTC time")
    lin.add_argument("--data-dir", metavar="D", help="default AUTOREM_DATA_DIR")
    lin.set_defaults(func=cmd_lineage)
    lin_sub = lin.add_subparsers(dest="lineage_command", metavar="SUBCOMMAND")  # none: print this receiver's file
    lin_export = lin_sub.add_parser("export", help="write the store's lineage (every receiver's) to one file, "
                                    "oldest first")
    lin_export.add_argument("--out", required=True, metavar="FILE", help="the file to write (replaced whole)")
    lin_export.add_argument("--data-dir", dest="export_data_dir", metavar="D",
                            help="the SQLite ledger's directory (default AUTOREM_DATA_DIR)")
    lin_export.set_defaults(func=cmd_lineage_export)

    chk = sub.add_parser("check", help="check settings, playbooks.yaml and the rendered rules")
    chk.set_defaults(func=cmd_check)

    rules = sub.add_parser("rules", help="render the alert rules from the AUTOREM_* settings")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    render = rules_sub.add_parser("render", help="write alert_rules/*.rules.yml from the templates")
    render.add_argument("--out", metavar="DIR", help="directory to write to (default alert_rules/)")
    render.add_argument("--time-factor", type=float, default=1.0,
                        help="multiply every duration by this (the demo uses 1/15)")
    render.set_defaults(func=cmd_rules_render)
    diff = rules_sub.add_parser("diff", help="exit 1 if the committed rules differ from a fresh rendering")
    diff.set_defaults(func=cmd_rules_diff)

    boards = sub.add_parser("dashboards", help="render the Grafana dashboards")
    boards_sub = boards.add_subparsers(dest="dashboards_command", metavar="SUBCOMMAND", required=True)
    boards_render = boards_sub.add_parser("render", help="write grafana/dashboards/*.json")
    boards_render.add_argument("--out", metavar="DIR", help="directory to write to (default grafana/dashboards/)")
    boards_render.set_defaults(func=cmd_dashboards_render)

    fleet = sub.add_parser("fleet", help="run the simulated fleet (agents, action endpoints, fault injection)")
    fleet.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    fleet.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    fleet.add_argument("--exporter-url", default="http://127.0.0.1:9817", help="where to push the signals")
    fleet.add_argument("--interval", type=float, default=15.0, help="heartbeat, in seconds (default 15)")
    fleet.set_defaults(func=cmd_fleet)

    demo = sub.add_parser("demo", help="start the fleet and the whole layer, run every drill, show the KPIs")
    demo.add_argument("--keep-running", action="store_true", help="leave the stack up until Ctrl-C")
    demo.set_defaults(func=cmd_demo)

    rollout = sub.add_parser("rollout", help="the staged rollout: which agents and classes are remediated")
    rollout_sub = rollout.add_subparsers(dest="rollout_command", metavar="SUBCOMMAND", required=True)
    show = rollout_sub.add_parser("show", help="print the rollout")
    put = rollout_sub.add_parser("set", help="replace the rollout's agents and classes")
    put.add_argument("--agents", required=True, metavar="A,B|*", help="the agents remediated, or '*' for all")
    put.add_argument("--classes", required=True, metavar="C,D|*", help="the classes enabled, or '*' for all")
    grow = rollout_sub.add_parser("expand", help="add agents or classes to the rollout (never narrows)")
    grow.add_argument("--agents", metavar="A,B|*", help="agents to add, or '*' for every agent")
    grow.add_argument("--classes", metavar="C,D|*", help="classes to enable, or '*' for all")
    for command in (put, grow):
        command.add_argument("--reason", required=True, help="why (kept with the rollout and in the lineage)")
    for command in (show, put, grow):
        command.add_argument("--receiver-url", default="http://127.0.0.1:9818",
                             help="the receiver's base URL (default http://127.0.0.1:9818)")
        command.add_argument("--json", action="store_true", help="print the rollout as the API answers it")
        command.set_defaults(func=cmd_rollout)

    drill = sub.add_parser("drill", help="run the chaos drills against a fresh stack, or a running layer")
    drill.add_argument("--json", action="store_true", help="end with one JSON line: the report")
    drill.add_argument("--scenario", action="append", default=[], metavar="NAME",
                       help="run only this drill (repeatable)")
    drill.add_argument("--target-config", metavar="FILE",
                       help="drill the running layer this YAML/JSON file describes instead (docs/nightly-drill.md)")
    drill.add_argument("--metrics-file", metavar="PATH",
                       help="with --target-config: write the verdict for node_exporter's textfile collector (*.prom)")
    drill.set_defaults(func=cmd_drill)

    soak = sub.add_parser("soak", help="a simulated week of random faults, judged against the fleet's ground truth")
    soak.add_argument("--days", type=_positive, default=7.0, help="simulated days (default 7)")
    soak.add_argument("--agents", type=int, default=6, help="simulated agents, at least 6 (default 6)")
    soak.add_argument("--seed", type=int, default=1, help="the fault schedule's seed (default 1)")
    soak.add_argument("--time-factor", type=_positive, default=1 / 30, metavar="F",
                      help="wall seconds per simulated second (default 1/30, as the demo)")
    soak.add_argument("--json", action="store_true", help="end with one JSON line: the report")
    soak.add_argument("--workdir", metavar="DIR", type=Path,
                      help="keep the stack's files there (ledger, lineage, logs, soak-evidence.json) instead of a "
                           "temporary directory")
    soak.set_defaults(func=cmd_soak)

    store = sub.add_parser("store", help="the incident ledger: move it from SQLite to PostgreSQL")
    store_sub = store.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)
    move = store_sub.add_parser("migrate", help="copy a stopped receiver's SQLite ledger (incidents, notifications, "
                                "flags, lineage) into an empty PostgreSQL ledger, all or nothing")
    move.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH",
                      help="the SQLite ledger: sqlite:PATH or sqlite:///abs/path (a data directory: its "
                           "incidents.sqlite3)")
    target = move.add_mutually_exclusive_group()
    target.add_argument("--to", metavar="postgresql://...",
                        help="the PostgreSQL ledger (default AUTOREM_STORE_URL or AUTOREM_STORE_URL_FILE)")
    target.add_argument("--to-file", metavar="FILE", help="a file holding the PostgreSQL URL (keeps the password "
                        "off the command line)")
    move.set_defaults(func=cmd_store_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("waitress").setLevel(logging.WARNING)  # we print where we serve ourselves
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (SettingsError, NoCheckout) as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
