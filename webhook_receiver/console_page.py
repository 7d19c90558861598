"""The console's pages as HTML: every value escaped, state in words (colour only repeats it), no inline script."""
from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Iterable, Mapping
from urllib.parse import urlencode

from .console_auth import Viewer, csrf_token

# A page may load its own script, style and images, and talk to its own origin (the event stream); nothing else,
# and nothing inline.
CONSOLE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
                  "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def page(title: str, body: str, who: Viewer | None = None, live: bool = False) -> str:
    signed = ""
    if who is not None and who.session:
        signed = (f"<form class='logout' method='post' action='/console/logout'>"
                  f"<input type='hidden' name='csrf' value='{e(csrf_token(who))}'>"
                  f"<span>Signed in to {'switch' if who.can_write else 'read'}</span> "
                  "<button type='submit'>Log out</button></form>")
    script = "<script src='/console/static/console.js' defer></script>" if live else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{e(title)}</title><link rel='icon' href='/console/static/favicon.svg' type='image/svg+xml'>"
            f"<link rel='stylesheet' href='/console/static/console.css'>{script}</head>"
            f"<body><header><h1>{e(title)}</h1>{signed}</header><main>{body}</main></body></html>")


def login(message: str | None, next_path: str) -> str:
    note = f"<p class='error' role='alert'>{e(message)}</p>" if message else ""
    return page("Autonomy console: log in", (
        f"{note}<form method='post' action='/console/login' class='login'>"
        f"<input type='hidden' name='next' value='{e(next_path)}'>"
        "<label for='token'>Read token, or the write token to switch remediation</label>"
        "<input id='token' name='token' type='password' autocomplete='current-password' required autofocus>"
        "<button type='submit'>Log in</button></form>"))


def _tile(t: Mapping) -> str:
    log = "/console/log?" + urlencode({"agent": t["agent"]})
    spinner = (f"Auto-Resolve running: {t.get('playbook') or ''}" + (f" ({t['step']})" if t.get("step") else "")
               if t.get("running") else "")
    return (f"<li class='tile state-{e(t['state'])}' data-agent='{e(t['agent'])}'>"
            f"<h3 class='agent'>{e(t['agent'])}</h3>"
            f"<p class='badge'>{e(t['label'])}</p>"
            f"<p class='reason'>{e(t.get('reason_text') or '')}</p>"
            f"<p class='spinner' role='status'{'' if t.get('running') else ' hidden'}>"
            f"<span class='spin' aria-hidden='true'></span> <span class='spinner-text'>{e(spinner)}</span></p>"
            f"<a class='log' href='{e(log)}'>View Remediation Log<span class='visually-hidden'> of "
            f"{e(t['agent'])}</span></a></li>")


def _switches(status: Mapping, rollout: Mapping, who: Viewer) -> str:
    csrf = f"<input type='hidden' name='csrf' value='{e(csrf_token(who))}'>"
    on = bool(status.get("enabled"))
    state = "On" if on else "Off"
    why = "" if on else f": {status.get('reason') or 'no reason given'}"
    need = "" if who.can_write else ("<p class='note'>Switching needs the write token: "
                                     "<a href='/console/login?next=/console'>log in with it</a>.</p>")
    agents = ", ".join(rollout.get("agents") or [])
    classes = ", ".join(rollout.get("classes") or [])
    return (
        "<section id='switches' aria-labelledby='switches-title'><h2 id='switches-title'>Switches</h2>"
        f"<p id='kill-switch-state'>Remediation: <strong>{state}</strong>{e(why)}"
        f" <span class='changed'>(changed {e(when(status.get('changed_at')))})</span></p>"
        "<form method='post' action='/console/remediation' class='switch'>"
        f"{csrf}<input type='hidden' name='enabled' value='{'false' if on else 'true'}'>"
        "<label for='kill-reason'>Reason</label><input id='kill-reason' name='reason' maxlength='500'>"
        f"<button id='kill-switch-button' type='submit'>Switch remediation {'off' if on else 'on'}</button></form>"
        f"<p id='rollout-state'>Rollout stage: agents <strong>{e(agents)}</strong>, classes "
        f"<strong>{e(classes)}</strong></p>"
        "<form method='post' action='/console/rollout' class='switch'>"
        f"{csrf}<label for='rollout-agents'>Agents (names, or *)</label>"
        f"<input id='rollout-agents' name='agents' value='{e(agents)}'>"
        f"<label for='rollout-classes'>Classes (names, or *)</label>"
        f"<input id='rollout-classes' name='classes' value='{e(classes)}'>"
        "<label for='rollout-reason'>Reason</label><input id='rollout-reason' name='reason' maxlength='500'>"
        "<button id='rollout-button' type='submit'>Set the rollout</button></form>"
        f"{need}</section>")


def _kpis(kpis: Iterable[Mapping]) -> str:
    rows = "".join(
        f"<tr data-kpi='{e(k['key'])}'><th scope='row'>{e(k['label'])}</th><td>{e(k['text'])}</td>"
        f"<td>{e(k['goal'])}</td><td>{'met' if k['met'] else 'not met' if k['met'] is False else '-'}</td></tr>"
        for k in kpis)
    return ("<section id='kpis' aria-labelledby='kpis-title'><h2 id='kpis-title'>This week</h2>"
            "<table><thead><tr><th scope='col'>KPI</th><th scope='col'>Last 7 days</th><th scope='col'>Goal</th>"
            f"<th scope='col'>Goal met</th></tr></thead><tbody>{rows}</tbody></table></section>")


def console(tiles: list[Mapping], counts: Mapping[str, int], status: Mapping, rollout: Mapping,
            kpis: Iterable[Mapping], who: Viewer, notice: str | None, next_after: str | None,
            first_page: bool, last_event_id: int) -> str:
    note = f"<p id='notice' role='alert'>{e(notice)}</p>" if notice else ""
    more = (f"<p><a id='next-agents' href='/console?{e(urlencode({'after': next_after}))}'>Next agents</a></p>"
            if next_after else "")
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("healthy", "recovering", "escalated"))
    return page("Autonomy console", (
        f"{note}<p id='live' role='status' data-last-event-id='{int(last_event_id)}'>Connecting to live "
        "updates</p><div id='toasts' role='log' aria-live='polite' aria-label='Outcomes'></div>"
        f"<section id='fleet' aria-labelledby='fleet-title'><h2 id='fleet-title'>Agents</h2>"
        f"<p id='fleet-summary' data-complete='{'1' if first_page and not next_after else '0'}'>{e(summary)}</p>"
        f"<ul id='tiles'>{''.join(_tile(t) for t in tiles)}</ul>{more}"
        f"</section>{_switches(status, rollout, who)}{_kpis(kpis)}"), who, live=True)


def _pairs(values: object) -> str:
    if not isinstance(values, Mapping) or not values:
        return "<p>-</p>"
    rows = "".join(f"<tr><th scope='row'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in values.items())
    return f"<table class='pairs'>{rows}</table>"


def _entry(entry: Mapping) -> str:
    outcome = ("resolved" if entry.get("ok") else e(entry.get("gate") or entry.get("reason") or "failed"))
    steps = entry.get("steps") or []
    step_rows = "".join(
        f"<tr><td>{e(s.get('action'))}</td><td>{'ok' if s.get('ok') else 'failed'}</td><td>{e(s.get('target'))}</td>"
        f"<td>{e(s.get('error') or '')}</td></tr>" for s in steps if isinstance(s, Mapping))
    steps_html = ("<h4>Steps</h4><table class='steps'><tr><th scope='col'>Action</th><th scope='col'>Result</th>"
                  f"<th scope='col'>Target</th><th scope='col'>Error</th></tr>{step_rows}</table>") if step_rows else ""
    verification = entry.get("verification") if isinstance(entry.get("verification"), Mapping) else None
    checks = ""
    if verification:
        checks = (f"<h4>Verification</h4><p>{'passed' if verification.get('ok') else 'failed'}: "
                  f"{e(verification.get('reason'))}</p>{_pairs(verification.get('checks'))}")
    return (f"<article class='entry event-{e(entry.get('event'))}'>"
            f"<h3>{e(entry.get('ts'))}: {e(entry.get('event'))}, attempt {e(entry.get('attempt'))}</h3>"
            f"<p class='summary'>Agent <span class='agent'>{e(entry.get('agent'))}</span>, class "
            f"{e(entry.get('classification'))}, playbook {e(entry.get('playbook'))}: <strong>{outcome}</strong>"
            f"{(' (' + e(entry.get('reason')) + ')') if entry.get('ok') is False and entry.get('reason') else ''}</p>"
            f"{steps_html}{checks}<div class='before-after'><div><h4>Before</h4>{_pairs(entry.get('before'))}</div>"
            f"<div><h4>After</h4>{_pairs(entry.get('after'))}</div></div>"
            f"<p class='trace'>Trace id <code>{e(entry.get('trace_id'))}</code>, incident "
            f"<code>{e(entry.get('incident_id'))}</code></p></article>")


def remediation_log(agent: str | None, entries: list[Mapping], older: str | None, who: Viewer) -> str:
    title = f"Remediation log: {agent}" if agent else "Remediation log"
    body = "".join(_entry(x) for x in entries) or "<p>No entries.</p>"
    link = f"<p><a id='older' href='{e(older)}'>Older entries</a></p>" if older else ""
    return page(title, f"<p><a href='/console'>Back to the console</a></p>{body}{link}", who)


def message(title: str, text: str, who: Viewer | None = None) -> str:
    return page(title, f"<p role='alert'>{e(text)}</p><p><a href='/console'>Back to the console</a></p>", who)
