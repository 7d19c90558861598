// The operator console's live updates: tiles, spinner and toasts from /api/v1/events (server-sent events).
// Every value goes in as text (textContent), never as markup.
"use strict";
(function () {
  var live = document.getElementById("live");
  var list = document.getElementById("tiles");
  var toasts = document.getElementById("toasts");
  if (!live || !list) { return; }
  var lastId = live.getAttribute("data-last-event-id") || "";
  var summary = document.getElementById("fleet-summary");
  // Only a page with every agent's tile adds one for an agent it does not show yet.
  var complete = summary && summary.getAttribute("data-complete") === "1";
  var LABELS = {healthy: "Healthy", recovering: "Recovering", escalated: "Escalated"};

  function tileOf(agent) {
    var tiles = list.querySelectorAll("li.tile");
    for (var i = 0; i < tiles.length; i++) {
      if (tiles[i].getAttribute("data-agent") === agent) { return tiles[i]; }
    }
    return null;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function newTile(agent) {
    var li = el("li", "tile");
    li.setAttribute("data-agent", agent);
    li.appendChild(el("h3", "agent", agent));
    li.appendChild(el("p", "badge", ""));
    li.appendChild(el("p", "reason", ""));
    var spinner = el("p", "spinner");
    spinner.setAttribute("role", "status");
    spinner.hidden = true;
    var spin = el("span", "spin");
    spin.setAttribute("aria-hidden", "true");
    spinner.appendChild(spin);
    spinner.appendChild(document.createTextNode(" "));
    spinner.appendChild(el("span", "spinner-text", ""));
    li.appendChild(spinner);
    var link = el("a", "log", "View Remediation Log");
    link.href = "/console/log?agent=" + encodeURIComponent(agent);
    link.appendChild(el("span", "visually-hidden", " of " + agent));
    li.appendChild(link);
    list.appendChild(li);
    return li;
  }

  function showTile(t) {
    var li = tileOf(t.agent);
    if (!li) {
      if (!complete) { return; }
      li = newTile(t.agent);
    }
    li.className = "tile state-" + t.state;
    li.querySelector(".badge").textContent = t.label || LABELS[t.state] || t.state;
    li.querySelector(".reason").textContent = t.reason_text || "";
    var spinner = li.querySelector(".spinner");
    if (t.running) {
      spinner.querySelector(".spinner-text").textContent =
        "Auto-Resolve running: " + (t.playbook || "") + (t.step ? " (" + t.step + ")" : "");
      spinner.hidden = false;
    } else {
      spinner.hidden = true;
    }
    recount();
  }

  function recount() {  // only when every agent has its tile on this page; else the count stays the page's
    if (!complete) { return; }
    var counts = {healthy: 0, recovering: 0, escalated: 0};
    list.querySelectorAll("li.tile").forEach(function (li) {
      var state = (li.className.match(/state-(\w+)/) || [])[1];
      if (state in counts) { counts[state] += 1; }
    });
    summary.textContent = counts.healthy + " healthy, " + counts.recovering + " recovering, " +
      counts.escalated + " escalated";
  }

  function toast(text, kind) {
    var node = el("p", "toast toast-" + kind, text);
    toasts.appendChild(node);
    while (toasts.children.length > 5) { toasts.removeChild(toasts.firstChild); }
    window.setTimeout(function () { if (node.parentNode) { node.parentNode.removeChild(node); } }, 30000);
  }

  function onEvent(message) {
    if (message.lastEventId) { lastId = message.lastEventId; }
    var data;
    try { data = JSON.parse(message.data); } catch (err) { return; }
    if (data.tile) { showTile(data.tile); }
    if (data.toast) { toast(data.toast, data.event === "escalation" ? "escalated" : "resolved"); }
  }

  // Every tile not Healthy; with "complete", each tile it leaves out is Healthy (the ledger's word).
  function onTiles(message) {
    var data;
    try { data = JSON.parse(message.data); } catch (err) { return; }
    var listed = {};
    (data.tiles || []).forEach(function (t) { listed[t.agent] = true; showTile(t); });
    if (data.complete) {
      list.querySelectorAll("li.tile").forEach(function (li) {
        var agent = li.getAttribute("data-agent");
        if (!listed[agent]) {
          showTile({agent: agent, state: "healthy", label: "Healthy", reason_text: null, running: false});
        }
      });
    }
  }

  function onSwitch(message) {
    if (message.lastEventId) { lastId = message.lastEventId; }
    var data;
    try { data = JSON.parse(message.data); } catch (err) { return; }
    if (data.switch === "remediation") {
      var state = document.getElementById("kill-switch-state");
      var button = document.getElementById("kill-switch-button");
      var on = data.enabled === true;
      state.textContent = "";
      state.appendChild(document.createTextNode("Remediation: "));
      state.appendChild(el("strong", "", on ? "On" : "Off"));
      if (!on) { state.appendChild(document.createTextNode(": " + (data.reason || "no reason given"))); }
      button.textContent = "Switch remediation " + (on ? "off" : "on");
      button.form.querySelector("input[name=enabled]").value = on ? "false" : "true";
    } else if (data.switch === "rollout" && data.rollout) {
      var rollout = document.getElementById("rollout-state");
      var agents = (data.rollout.agents || []).join(", "), classes = (data.rollout.classes || []).join(", ");
      rollout.textContent = "";
      rollout.appendChild(document.createTextNode("Rollout stage: agents "));
      rollout.appendChild(el("strong", "", agents));
      rollout.appendChild(document.createTextNode(", classes "));
      rollout.appendChild(el("strong", "", classes));
      document.getElementById("rollout-agents").value = agents;
      document.getElementById("rollout-classes").value = classes;
    }
  }

  var source = null, refusals = 0;
  function connect() {
    var url = "/api/v1/events" + (lastId ? "?last_event_id=" + encodeURIComponent(lastId) : "");
    source = new EventSource(url);
    source.onopen = function () { live.textContent = "Live"; refusals = 0; };
    source.onerror = function () {
      live.textContent = "Reconnecting to live updates";
      if (source.readyState === EventSource.CLOSED) {  // refused (not a dropped line): try again, slower each time
        refusals += 1;
        if (refusals >= 5) {  // a session that ended, say: the page itself says so (the login form)
          window.location.reload();
          return;
        }
        window.setTimeout(connect, Math.min(60000, 2000 * Math.pow(2, refusals)));
      }
    };
    ["step", "outcome", "closed"].forEach(function (kind) {
      source.addEventListener(kind, onEvent);
    });
    source.addEventListener("tiles", onTiles);
    source.addEventListener("switches", onSwitch);
    source.addEventListener("reset", function () { window.location.reload(); });
  }
  connect();
})();
