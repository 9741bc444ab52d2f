/* Escalation pages: read the REST API with the user's own Airflow session, render with
   textContent only (data is never parsed as markup), poll every few seconds, act through the API.
   The server decides who may act; the buttons only mirror GET /me. */
(function () {
  "use strict";

  var data = document.body.dataset;
  var CFG = {
    view: data.view,
    api: data.api,
    ui: data.ui,
    airflowRoot: data.airflowRoot || "",
    navUrl: data.navUrl || "",
    login: data.login,
    username: data.username || "",
    pollMs: Math.max(1000, Number(data.pollMs) || 5000),
    recordId: data.recordId || "",
    scope: {
      dag_id: data.dagId || "",
      run_id: data.runId || "",
      task_id: data.taskId || "",
      map_index: data.mapIndex || ""
    }
  };

  // the state sets and the actions each state allows: the server's table (core/states.py,
  // embedded by the page as data-states); this script keeps no copy of it
  var STATES = JSON.parse(data.states || "{}");
  var ACTIVE = STATES.active || [];
  var OPEN = STATES.open || [];
  var CLOSED = STATES.closed || [];
  var ALLOWED = STATES.actions || {};
  var ACTION_LABEL = { acknowledge: "Acknowledge", resolve: "Resolve", cancel: "Cancel", escalate: "Escalate now" };
  var ACTION_DONE = { acknowledge: "Acknowledged", resolve: "Resolved", cancel: "Cancelled", escalate: "Escalated" };

  // ------------------------------------------------------------------ DOM helpers
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === undefined || value === null || value === false) return;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = String(value);
        else if (key === "dataset") Object.keys(value).forEach(function (k) { node.dataset[k] = String(value[k]); });
        else if (key.indexOf("on") === 0) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function $(id) { return document.getElementById(id); }
  function enc(v) { return encodeURIComponent(String(v)); }

  function text(value) {
    if (value === undefined || value === null) return "";
    if (typeof value === "string") return value;
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  /* text with line-break opportunities after "." "/" and "__" (ids wrap at their parts) */
  function breakable(value) {
    var parts = text(value).split(/(?<=[.\/]|__)/);
    var out = [];
    parts.forEach(function (part, i) {
      out.push(document.createTextNode(part));
      if (i < parts.length - 1) out.push(document.createElement("wbr"));
    });
    return out;
  }

  function truncate(value, n) {
    var s = text(value);
    return s.length > n ? s.slice(0, n - 1) + "\u2026" : s;
  }

  // ------------------------------------------------------------------ time
  function parseTime(iso) { return iso ? new Date(iso) : null; }

  /* the time zone chosen in Airflow's UI (its localStorage "timezone"), else the browser's */
  var TIME_ZONE = (function () {
    var zone;
    try {
      zone = window.localStorage.getItem("timezone");
      try { zone = JSON.parse(zone); } catch (e) { /* stored raw */ }
      if (typeof zone !== "string" || !zone) return undefined;
      new Intl.DateTimeFormat(undefined, { timeZone: zone });
      return zone;
    } catch (e) { return undefined; }
  })();

  /* the one time format (core/timefmt.py format_time): "2026-01-05 09:15:00 UTC", in the zone
     chosen in Airflow's UI */
  var TIME_PARTS = null;
  function absTime(iso) {
    var d = parseTime(iso);
    if (!d || isNaN(d)) return "";
    if (!TIME_PARTS) {
      TIME_PARTS = new Intl.DateTimeFormat("en-US", { year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZone: TIME_ZONE,
        timeZoneName: "short" });
    }
    var p = {};
    TIME_PARTS.formatToParts(d).forEach(function (part) { p[part.type] = part.value; });
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second + " " + p.timeZoneName;
  }

  function relTime(iso) {
    var d = parseTime(iso);
    if (!d || isNaN(d)) return "";
    var secs = Math.round((d.getTime() - Date.now()) / 1000);
    var future = secs > 0;
    var a = Math.abs(secs);
    var s;
    if (a < 5) return future ? "now" : "just now";
    if (a < 60) s = a + " s";
    else if (a < 3600) s = Math.floor(a / 60) + " min";
    else if (a < 86400) s = Math.floor(a / 3600) + " h " + Math.floor((a % 3600) / 60) + " min";
    else s = Math.floor(a / 86400) + " d " + Math.floor((a % 86400) / 3600) + " h";
    return future ? "in " + s : s + " ago";
  }

  /* a <time> whose relative text is refreshed by tick() */
  function timeEl(iso, cls) {
    if (!iso) return el("span", { class: "muted", text: "\u2014" });
    return el("time", { datetime: iso, title: absTime(iso), class: cls || "",
      dataset: { rel: "1" }, text: relTime(iso) });
  }

  function tick() {
    var nodes = document.querySelectorAll("time[data-rel]");
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = relTime(nodes[i].getAttribute("datetime"));
  }

  // ------------------------------------------------------------------ API
  function ApiError(message, status, body) {
    this.message = message; this.status = status; this.body = body;
  }
  ApiError.prototype = Object.create(Error.prototype);

  function messageOf(body, res) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail) && body.detail.length) {
      return body.detail.map(function (d) { return (d.loc || []).join(".") + ": " + d.msg; }).join("; ");
    }
    if (body && body.error) return body.error;
    return res.status + " " + res.statusText;
  }

  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", cache: "no-store",
      headers: { "Accept": "application/json" } };
    /* writes always carry a JSON body: with the session cookie, the service accepts a write
       only as JSON (or from Airflow's own origin), which no other site's form can send */
    if (body === undefined && method !== "GET") body = {};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(CFG.api + path, init).then(function (res) {
      return res.text().then(function (raw) {
        var parsed = null;
        try { parsed = raw ? JSON.parse(raw) : null; } catch (e) { parsed = null; }
        if (!res.ok) throw new ApiError(messageOf(parsed, res), res.status, parsed);
        return parsed;
      });
    });
  }

  // ------------------------------------------------------------------ permissions (GET /me)
  var perms = {};
  function permFor(dagId) {
    var key = dagId ? "dag:" + dagId : "*";
    if (!perms[key]) {
      var q = dagId ? "?dag_id=" + enc(dagId) : "";
      perms[key] = api("GET", "/me" + q).catch(function () {
        delete perms[key];
        return { username: CFG.username, can_act: false, unknown: true };
      });
    }
    return perms[key];
  }

  function dagOf(record) {
    var ctx = record.context || {};
    return typeof ctx.dag_id === "string" ? ctx.dag_id : "";
  }

  function loadPerms(records) {
    var dags = {};
    records.forEach(function (r) { dags[dagOf(r)] = true; });
    var keys = Object.keys(dags);
    return Promise.all(keys.map(function (d) { return permFor(d); })).then(function (answers) {
      var byDag = {};
      keys.forEach(function (d, i) { byDag[d] = answers[i]; });
      return byDag;
    });
  }

  // ------------------------------------------------------------------ banner and toasts
  function banner(message) {
    var b = $("banner");
    if (!b) return;
    clear(b);
    if (!message) { b.hidden = true; return; }
    append(b, message);
    b.hidden = false;
  }

  function sessionBanner(err) {
    if (err && err.status === 401) {
      var next = (window.top === window ? window.location.href : window.top.location.href);
      banner([ "Your Airflow session has expired. ",
        el("a", { href: CFG.login + "?next=" + enc(next), target: "_top", text: "Log in again" }) ]);
      return true;
    }
    return false;
  }

  function toast(message, isError) {
    var box = $("toasts");
    if (!box) return;
    var t = el("div", { class: "toast" + (isError ? " error" : ""), role: isError ? "alert" : "status",
      text: message });
    box.appendChild(t);
    setTimeout(function () { if (t.parentNode) t.parentNode.removeChild(t); }, isError ? 8000 : 4000);
  }

  function stamp() {
    var u = $("updated");
    if (u) u.textContent = "Updated " + absTime(new Date().toISOString());
  }

  // ------------------------------------------------------------------ dialog
  function ask(opts) {
    var dialog = $("dialog");
    if (!dialog || typeof dialog.showModal !== "function") {
      // no <dialog> support: a plain prompt keeps the page usable
      if (opts.textLabel) {
        var answer = window.prompt(opts.title + "\n" + (opts.message || "") + "\n" + opts.textLabel, "");
        if (answer === null || (opts.textRequired && !answer.trim())) return Promise.resolve(null);
        return Promise.resolve({ text: answer.trim(), force: !!opts.forceDefault });
      }
      return Promise.resolve(window.confirm(opts.title + "\n" + (opts.message || "")) ? { text: "", force: !!opts.forceDefault } : null);
    }
    $("dialog-title").textContent = opts.title;
    $("dialog-message").textContent = opts.message || "";
    var textLabel = $("dialog-text-label"), textArea = $("dialog-text");
    textLabel.hidden = !opts.textLabel;
    $("dialog-text-caption").textContent = opts.textLabel || "";
    textArea.value = "";
    textArea.required = !!opts.textRequired;
    var forceLabel = $("dialog-force-label"), force = $("dialog-force");
    forceLabel.hidden = !opts.force;
    force.checked = !!opts.forceDefault;
    var ok = $("dialog-ok");
    ok.textContent = opts.ok || "OK";
    return new Promise(function (resolve) {
      var form = $("dialog-form"), back = $("dialog-cancel");
      function done(value) {
        form.removeEventListener("submit", onSubmit);
        back.removeEventListener("click", onBack);
        dialog.removeEventListener("cancel", onBack);
        if (dialog.open) dialog.close();
        resolve(value);
      }
      function onSubmit(e) {
        e.preventDefault();
        if (opts.textRequired && !textArea.value.trim()) { textArea.focus(); return; }
        done({ text: textArea.value.trim(), force: force.checked });
      }
      function onBack(e) { if (e) e.preventDefault(); done(null); }
      function onKey(e) {
        // Enter sends, Shift+Enter starts a new line: acknowledging stays one key away
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); onSubmit(e); }
      }
      textArea.onkeydown = onKey;
      form.addEventListener("submit", onSubmit);
      back.addEventListener("click", onBack);
      dialog.addEventListener("cancel", onBack);
      dialog.showModal();
      (opts.textLabel ? textArea : ok).focus();
    });
  }

  // ------------------------------------------------------------------ actions
  function applies(record, action) {
    return (ALLOWED[record.state] || []).indexOf(action) >= 0;
  }

  function whyNot(record, action) {
    if (OPEN.indexOf(record.state) < 0) return "This escalation is " + record.state + ": nothing more can change.";
    if (action === "acknowledge") return "Already acknowledged" + (record.acknowledged_by ? " by " + record.acknowledged_by : "") + ".";
    return "";
  }

  function actionButtons(record, perm, small) {
    var group = el("div", { class: "button-group", dataset: { recordId: record.id } });
    ["acknowledge", "resolve", "cancel", "escalate"].forEach(function (action) {
      var cls = "button " + (action === "acknowledge" ? "solid" : action === "escalate" ? "danger" : "outline") + (small ? " sm" : "");
      var button = el("button", { type: "button", class: cls, text: ACTION_LABEL[action],
        dataset: { action: action, testid: action + "-button" } });
      var tip = "";
      if (!perm || !perm.can_act) {
        button.disabled = true;
        tip = "You (" + ((perm && perm.username) || CFG.username || "this user") + ") may not act on " +
          "this escalation: that needs permission to change runs of " +
          (dagOf(record) ? "the Dag " + dagOf(record) : "Dags") + ".";
        button.dataset.reason = "permission";
      } else if (!applies(record, action)) {
        button.disabled = true;
        tip = whyNot(record, action);
        button.dataset.reason = "state";
      } else {
        tip = {
          acknowledge: "Stop the climb: you are on it",
          resolve: "Close this escalation as resolved",
          cancel: "Close this escalation without resolving it (give a reason)",
          escalate: "Page the next level now"
        }[action];
        button.addEventListener("click", function () { runAction(record, action, group); });
      }
      button.title = tip;
      group.appendChild(el("span", { class: "tip", title: tip }, button));
    });
    if (!small && (!perm || !perm.can_act)) {
      group.appendChild(el("span", { class: "read-only muted", dataset: { testid: "read-only" },
        text: "Read only: your Airflow role may not act on this escalation." }));
    }
    return group;
  }

  function runAction(record, action, group) {
    var prompt;
    if (action === "cancel") {
      prompt = ask({ title: "Cancel this escalation?", message: "Incident " + record.incident_id +
        ": nobody is paged any more and the escalation closes without being resolved.",
        textLabel: "Reason (required)", textRequired: true, ok: "Cancel escalation" });
    } else if (action === "acknowledge") {
      prompt = ask({ title: "Acknowledge this escalation?", message: "Incident " + record.incident_id +
        ": the paging stops and the escalation shows you are on it.", textLabel: "Note (optional)", ok: "Acknowledge" });
    } else if (action === "resolve") {
      prompt = ask({ title: "Resolve this escalation?", message: "Incident " + record.incident_id +
        " is closed as resolved.", textLabel: "Note (optional)", ok: "Resolve" });
    } else if (action === "escalate") {
      var acked = record.state === "acknowledged";
      prompt = ask({ title: "Escalate now?", message: "Incident " + record.incident_id +
        (acked ? " is acknowledged: escalating re-opens it at the next level." : ": the next level is paged now."),
        force: true, forceDefault: acked, ok: "Escalate" });
    } else {
      prompt = Promise.resolve({ text: "", force: false });
    }
    return prompt.then(function (answer) {
      if (!answer) return;
      var body = {};
      if (action === "cancel") body.reason = answer.text;
      else if ((action === "resolve" || action === "acknowledge") && answer.text) body.note = answer.text;
      else if (action === "escalate") body.force = !!answer.force;
      var buttons = group ? group.querySelectorAll("button") : [];
      for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
      return api("POST", "/escalations/" + enc(record.id) + "/" + action, body).then(function () {
        toast(ACTION_DONE[action] + ": " + record.incident_id);
      }, function (err) {
        if (!sessionBanner(err)) toast(ACTION_LABEL[action] + " failed: " + err.message, true);
      }).then(function () { return refresh(true); });
    });
  }

  // ------------------------------------------------------------------ pieces of a record
  function stateBadge(state) {
    return el("span", { class: "badge state-" + String(state).replace(/[^a-z_]/g, ""), text: state,
      dataset: { testid: "state" } });
  }

  function errorText(record) {
    var ctx = record.context || {};
    var keys = ["exception", "error", "exception_message", "message", "reason"];
    for (var i = 0; i < keys.length; i++) {
      if (!ctx[keys[i]]) continue;
      var message = text(ctx[keys[i]]);
      var kind = typeof ctx.exception_type === "string" ? ctx.exception_type : "";
      return kind && message.indexOf(kind) !== 0 ? kind + ": " + message : message;
    }
    return "";
  }

  /* a URL from the context (e.g. log_url) on Airflow's own origin, else "": a context is written
     by whoever triggers, so only Airflow's own pages become links (the rest stays text) */
  function httpUrl(value) {
    if (typeof value !== "string") return "";
    try {
      var url = new URL(value, window.location.href);
      var web = url.protocol === "http:" || url.protocol === "https:";
      return web && url.origin === window.location.origin ? url.href : "";
    } catch (e) { return ""; }
  }

  function notifiedTargets(record) {
    var seen = {}, out = [];
    (record.history || []).forEach(function (ev) {
      var targets = ev.details && ev.details.targets;
      if (ev.event === "notified" && Array.isArray(targets)) {
        targets.forEach(function (t) { if (!seen[t]) { seen[t] = true; out.push(text(t)); } });
      }
    });
    return out;
  }

  function airflowTaskUrl(ctx) {
    if (!ctx || typeof ctx.dag_id !== "string" || !ctx.dag_id) return "";
    var url = CFG.airflowRoot + "/dags/" + enc(ctx.dag_id);
    if (typeof ctx.run_id === "string" && ctx.run_id) {
      url += "/runs/" + enc(ctx.run_id);
      if (typeof ctx.task_id === "string" && ctx.task_id) {
        url += "/tasks/" + enc(ctx.task_id);
        var mi = Number(ctx.map_index);
        if (ctx.map_index !== undefined && ctx.map_index !== null && Number.isInteger(mi) && mi >= 0) url += "/mapped/" + mi;
      }
    }
    return url;
  }

  function recordUrl(record) { return CFG.ui + "/records/" + enc(record.id); }

  function dagTaskCell(record) {
    var ctx = record.context || {};
    if (!ctx.dag_id) return el("span", { class: "muted", text: "\u2014" });
    var href = airflowTaskUrl(ctx);
    var sub = [ctx.task_id, ctx.run_id].filter(function (v) { return v !== undefined && v !== null && v !== ""; }).map(text).join(" \u00b7 ");
    // a run id is long ("scheduled__2026-11-27T06:00:00+00:00"): one line, the rest in the tooltip
    return [el("a", { href: href, target: "_top" }, breakable(ctx.dag_id)),
      sub ? el("span", { class: "sub one-line", title: sub, dataset: { testid: "task-run" }, text: sub }) : null];
  }

  function chips(values, max) {
    if (!values.length) return el("span", { class: "muted", text: "\u2014" });
    var shown = values.slice(-max).reverse().map(function (v) { return el("span", { class: "chip", text: v }); });
    if (values.length > max) shown.push(el("span", { class: "muted", text: "+" + (values.length - max) }));
    return shown;
  }

  // ------------------------------------------------------------------ timeline
  /* the steps are the server's (core/timeline.py, the API's "timeline"): one entry per step,
     its deliveries nested, the engine's state changes behind the "Show state changes" toggle */
  function deliveryItem(d) {
    var t = d.target || {};
    var key = d.resolved_to || ((t.type || "?") + ":" + (t.identifier || "?"));  /* schedule:x → alice */
    var bits = [stateBadge(d.state), el("span", { class: "chip", text: key })];
    var info = [];
    if (d.attempts) info.push(d.attempts + (d.attempts === 1 ? " attempt" : " attempts"));
    if (d.sent_at) info.push("sent " + absTime(d.sent_at));
    else if (d.next_attempt_at && (d.state === "pending" || d.state === "sending")) info.push("next try " + relTime(d.next_attempt_at));
    if (d.last_error) info.push("error: " + truncate(d.last_error, 300));
    if (info.length) bits.push(el("span", { class: "muted", text: info.join(" \u00b7 ") }));
    return el("li", { dataset: { testid: "delivery", state: d.state } }, bits);
  }

  function stepItem(step) {
    var kind = String(step.kind).replace(/[^a-z_]/g, "");
    var opening = step.events && step.events.length ? step.events[0].event : step.kind;
    var li = el("li", { class: "ev-" + kind, dataset: { testid: "event", kind: kind, event: opening } },
      el("div", { class: "when" }, timeEl(step.at), " \u00b7 ", el("span", { text: absTime(step.at) })),
      el("div", { class: "what", text: step.title }));
    if (step.detail) li.appendChild(el("div", { class: "detail", text: step.detail }));
    var deliveries = step.deliveries || [];
    if (deliveries.length) li.appendChild(el("ul", { class: "deliveries" }, deliveries.map(deliveryItem)));
    else if (step.targets && step.targets.length) {
      li.appendChild(el("div", { class: "detail", text: "Targets: " + step.targets.map(text).join(", ") }));
    }
    if (step.transitions && step.transitions.length) {
      li.appendChild(el("ul", { class: "transitions", dataset: { testid: "transitions" } },
        step.transitions.map(function (t) { return el("li", { text: t }); })));
    }
    return li;
  }

  function timeline(record) {
    return el("ol", { class: "timeline", dataset: { testid: "timeline" } }, (record.timeline || []).map(stepItem));
  }

  /* shown state changes stay shown across refreshes and records (a class on <body>) */
  function transitionsToggle() {
    var shown = document.body.classList.contains("show-transitions");
    return el("label", { class: "check toggle" },
      el("input", { type: "checkbox", checked: shown, dataset: { testid: "show-transitions" },
        onchange: function (e) {
          document.body.classList.toggle("show-transitions", e.target.checked);
          var boxes = document.querySelectorAll("[data-testid=show-transitions]");
          for (var i = 0; i < boxes.length; i++) boxes[i].checked = e.target.checked;
        } }),
      el("span", { text: "Show state changes" }));
  }

  /* "level 2 → eng-manager, oncall-primary in 12 min": the planner's next step (the API's next_step) */
  function nextStep(record, cls) {
    var step = record.next_step;
    if (!step) return null;
    return el("span", { class: "next-step " + (cls || ""), dataset: { testid: "next-step" } },
      text(step.text) + " ", timeEl(step.due_at));
  }

  function contextTable(record) {
    var ctx = record.context || {};
    var keys = Object.keys(ctx);
    if (!keys.length) return el("p", { class: "muted", text: "No context." });
    return el("table", { class: "kv", dataset: { testid: "context" } }, keys.map(function (k) {
      return el("tr", null, el("th", { scope: "row", text: k }), el("td", null, el("pre", { text: text(ctx[k]) })));
    }));
  }

  function fact(label, value) {
    return [el("dt", { text: label }), el("dd", null, value === undefined || value === null || value === "" ?
      el("span", { class: "muted", text: "\u2014" }) : value)];
  }

  function byAt(iso, who) {
    if (!iso) return null;
    return [timeEl(iso), who ? " by " + who : ""];
  }

  function recordHead(record, headingTag) {
    return el("div", { class: "record-head" },
      el(headingTag, { text: record.incident_id, dataset: { testid: "incident" } }),
      stateBadge(record.state),
      el("span", { class: "chip level", text: "Level " + record.current_level }));
  }

  /* the Escalations page's view of a record, in the whole Airflow window */
  function navRecordUrl(record) { return CFG.navUrl + CFG.ui + "/records/" + enc(record.id); }

  function recordDetail(record, perm, headingTag) {
    var head = headingTag ? recordHead(record, headingTag) : null;
    var md = record.metadata || {};
    var facts = el("dl", { class: "facts" },
      fact("Policy", record.policy_name),
      fact("Started", byAt(record.created_at)),
      fact("Acknowledged", byAt(record.acknowledged_at, record.acknowledged_by)),
      fact("Resolved", byAt(record.resolved_at, record.resolved_by)),
      record.state === "cancelled" ? fact("Cancelled", [md.cancelled_by ? "by " + md.cancelled_by : "", md.cancel_reason ? ": " + md.cancel_reason : ""]) : null,
      fact("Closed", record.closed_at ? timeEl(record.closed_at) : null),
      fact("Next", nextStep(record)),
      fact("Notified", chips(notifiedTargets(record), 8)),
      fact("Notifications sent", String(record.notification_count)),
      fact("Escalated", record.escalation_count ? record.escalation_count + (record.escalation_count === 1 ? " time" : " times") : "not yet"),
      fact("Escalation id", el("code", { text: record.id })));
    var taskUrl = CFG.view === "ti" ? "" : airflowTaskUrl(record.context);
    var err = errorText(record);
    return el("div", { class: "record-detail", dataset: { recordId: record.id, state: record.state } },
      head,
      actionButtons(record, perm, false),
      el("div", { class: "grid" },
        el("section", { class: "section" }, el("h3", { text: "Summary" }), facts,
          el("div", { class: "links" },
            taskUrl ? el("a", { href: taskUrl, target: "_top", text: "Open the task in Airflow" }) : null,
            httpUrl((record.context || {}).log_url) ? el("a", { href: httpUrl(record.context.log_url), target: "_top",
              rel: "noopener noreferrer", text: "Task log" }) : null)),
        el("section", { class: "section" }, el("h3", { text: "Context" }),
          err ? el("pre", { class: "error-text", dataset: { testid: "error-text" }, text: err }) : null,
          contextTable(record))),
      el("section", { class: "section timeline-section" },
        el("div", { class: "section-head" }, el("h3", { text: "Timeline" }), transitionsToggle()), timeline(record)));
  }

  // ------------------------------------------------------------------ views
  var lastRender = "";
  var limit = 50;
  var policiesLoaded = false;

  function filterState() {
    return {
      state: $("f-state").value,
      policy: $("f-policy").value,
      dag_id: $("f-dag").value.trim(),
      incident: $("f-incident").value.trim()
    };
  }

  var GROUPS = {
    open: [["Active", ACTIVE], ["Acknowledged", ["acknowledged"]]],
    active: [["Active", ACTIVE]],
    acknowledged: [["Acknowledged", ["acknowledged"]]],
    closed: [["Closed", CLOSED]],
    all: [["Active", ACTIVE], ["Acknowledged", ["acknowledged"]], ["Closed", CLOSED]]
  };

  function listQuery(states, f) {
    var q = states.map(function (s) { return "state=" + enc(s); });
    if (f.policy) q.push("policy=" + enc(f.policy));
    if (f.dag_id) q.push("dag_id=" + enc(f.dag_id));
    if (f.incident) q.push("incident=" + enc(f.incident));
    q.push("limit=" + limit);
    return "/escalations?" + q.join("&");
  }

  function syncUrl(f) {
    var q = [];
    Object.keys(f).forEach(function (k) { if (f[k] && !(k === "state" && f[k] === "open")) q.push(k + "=" + enc(f[k])); });
    var url = window.location.pathname + (q.length ? "?" + q.join("&") : "");
    try { window.history.replaceState(null, "", url); } catch (e) { /* sandboxed */ }
  }

  function loadPolicies() {
    if (policiesLoaded) return;
    policiesLoaded = true;
    api("GET", "/policies").then(function (body) {
      addPolicyOptions((body.policies || []).map(function (p) { return p.name; }));
    }, function () { policiesLoaded = false; });
  }

  /* the policy filter offers the registered policies and those of the escalations shown */
  function addPolicyOptions(names) {
    var select = $("f-policy");
    names.forEach(function (name) {
      if (typeof name !== "string" || !name) return;
      if (!select.querySelector("option[value=\"" + CSS.escape(name) + "\"]")) select.appendChild(el("option", { value: name, text: name }));
    });
  }

  function listRow(record, perm) {
    var closed = OPEN.indexOf(record.state) < 0;
    var err = errorText(record);
    return el("tr", { class: closed ? "closed" : "", dataset: { recordId: record.id, state: record.state, testid: "row" } },
      el("td", null, stateBadge(record.state)),
      el("td", { class: "level", text: "L" + record.current_level }),
      el("td", null, el("a", { class: "incident-link clamp", href: recordUrl(record), title: record.incident_id },
        breakable(record.incident_id)),
        err ? el("span", { class: "sub", text: truncate(err, 140) }) : null),
      el("td", null, dagTaskCell(record)),
      el("td", { text: record.policy_name }),
      el("td", null, timeEl(record.created_at)),
      el("td", null, !closed && record.next_step ? nextStep(record, "sub-block") : el("span", { class: "muted", text: "\u2014" })),
      el("td", null, chips(notifiedTargets(record), 3)),
      el("td", { class: "actions-col" }, actionButtons(record, perm, true)));
  }

  function refreshList(force) {
    var f = filterState();
    var groups = GROUPS[f.state] || GROUPS.open;
    loadPolicies();
    return Promise.all(groups.map(function (g) { return api("GET", listQuery(g[1], f)); })).then(function (pages) {
      var records = [], more = false, counts = [];
      pages.forEach(function (page, i) {
        records = records.concat(page.escalations);
        if (page.total > page.escalations.length) more = true;
        counts.push([groups[i][0], page.total]);
      });
      return loadPerms(records).then(function (byDag) {
        banner(null);
        stamp();
        var key = JSON.stringify([records, counts, byDag]);
        if (!force && key === lastRender) { tick(); return; }
        lastRender = key;
        var countsBox = $("counts");
        clear(countsBox);
        counts.forEach(function (c) {
          countsBox.appendChild(el("span", { class: "count", dataset: { testid: "count-" + c[0].toLowerCase() } },
            c[0] + " ", el("strong", { text: String(c[1]) })));
        });
        addPolicyOptions(records.map(function (r) { return r.policy_name; }));
        var tbody = $("rows");
        clear(tbody);
        records.forEach(function (r) { tbody.appendChild(listRow(r, byDag[dagOf(r)])); });
        $("empty").hidden = records.length > 0;
        $("more").hidden = !more;
      });
    });
  }

  function refreshRecord() {
    return api("GET", "/escalations/" + enc(CFG.recordId)).then(function (record) {
      return permFor(dagOf(record)).then(function (perm) {
        banner(null);
        stamp();
        var key = JSON.stringify([record, perm]);
        if (key === lastRender) { tick(); return; }
        lastRender = key;
        document.title = record.incident_id + " \u00b7 Escalation \u00b7 Airflow";
        $("crumb-id").textContent = record.incident_id;
        var box = $("record");
        clear(box);
        box.appendChild(recordDetail(record, perm, "h1"));
      });
    }, function (err) {
      if (err.status === 404) {
        var box = $("record");
        clear(box);
        box.appendChild(el("p", { class: "empty muted", text: "There is no escalation " + CFG.recordId + "." }));
        lastRender = "";
        return;
      }
      throw err;
    });
  }

  function matchesScope(record) {
    var ctx = record.context || {}, s = CFG.scope;
    if (s.run_id && text(ctx.run_id) !== s.run_id) return false;
    if (s.task_id && text(ctx.task_id) !== s.task_id) return false;
    if (s.map_index !== "") {
      var mi = ctx.map_index === undefined || ctx.map_index === null ? -1 : Number(ctx.map_index);
      if (mi !== Number(s.map_index)) return false;
    }
    return true;
  }

  function scopeText() {
    var s = CFG.scope, parts = [];
    if (s.dag_id) parts.push("Dag " + s.dag_id);
    if (s.run_id) parts.push("run " + s.run_id);
    if (s.task_id) parts.push("task " + s.task_id);
    if (s.map_index !== "" && Number(s.map_index) >= 0) parts.push("map index " + s.map_index);
    return parts.join(" \u00b7 ");
  }

  function refreshTask() {
    var s = CFG.scope;
    $("ti-scope").textContent = scopeText();
    if (!s.dag_id) {
      $("empty").textContent = "No Dag given.";
      $("empty").hidden = false;
      return Promise.resolve();
    }
    return api("GET", "/escalations?dag_id=" + enc(s.dag_id) + "&limit=500").then(function (page) {
      var mine = page.escalations.filter(matchesScope);
      // open ones first, each group newest first (the API's order)
      mine.sort(function (a, b) { return (OPEN.indexOf(a.state) < 0) - (OPEN.indexOf(b.state) < 0); });
      var detailed = mine.slice(0, 20);
      return Promise.all(detailed.map(function (r) { return api("GET", "/escalations/" + enc(r.id)); })).then(function (full) {
        return permFor(s.dag_id).then(function (perm) {
          banner(null);
          stamp();
          var key = JSON.stringify([full, perm]);
          if (key === lastRender) { tick(); return; }
          lastRender = key;
          var title = s.task_id && s.run_id ? "Escalation of this task instance" : s.run_id ? "Escalations of this Dag run" :
            s.task_id ? "Escalations of this task" : "Escalations of this Dag";
          $("ti-title").textContent = title;
          var box = $("records");
          clear(box);
          full.forEach(function (record, i) {
            var card = el("details", { class: "record-card", open: i === 0 || OPEN.indexOf(record.state) >= 0,
              dataset: { testid: "record-card", recordId: record.id } },
              el("summary", null, el("div", { class: "record-head" },
                el("h2", { text: record.incident_id, dataset: { testid: "incident" } }), stateBadge(record.state),
                el("span", { class: "chip level", text: "Level " + record.current_level }),
                el("span", { class: "muted" }, "started ", timeEl(record.created_at)),
                el("a", { href: navRecordUrl(record), target: "_top", class: "push", text: "Open in Escalations" }))),
              recordDetail(record, perm, null));
            box.appendChild(card);
          });
          $("empty").textContent = "No escalation for " + (scopeText() || "this page") + ".";
          $("empty").hidden = full.length > 0;
        });
      });
    });
  }

  // ------------------------------------------------------------------ policies page
  /* the policies in force with their timelines, an editor (check, then save a revision), and
     the revisions with roll-back; the server validates and decides (docs/policies.md) */
  var policyEdit = { based: null, loaded: "", checked: null, canEdit: false, latest: 0 };

  function policyRow(entry, previews) {
    var name = text(entry.name);
    var sev = Array.isArray(entry.severity_filter) && entry.severity_filter.length ? entry.severity_filter.map(text).join(", ") : "any";
    return el("tr", { dataset: { testid: "policy-row", policy: name } },
      el("td", null, el("strong", { text: name }), entry.description ? el("span", { class: "sub", text: text(entry.description) }) : null),
      el("td", { dataset: { testid: "policy-preview" }, text: previews[name] || "\u2014" }),
      el("td", { text: sev }),
      el("td", { text: entry.enabled === false ? "no" : "yes" }));
  }

  function revisionItem(rev, latest) {
    var head = el("div", { class: "what" }, "Revision " + rev.revision + " \u00b7 " + text(rev.author) +
      " \u00b7 " + text(rev.source), rev.revision === latest ? el("span", { class: "chip", text: "in force" }) : null);
    var li = el("li", { dataset: { testid: "revision", revision: rev.revision } },
      el("div", { class: "when" }, timeEl(rev.created_at), " \u00b7 ", el("span", { text: absTime(rev.created_at) })),
      head, rev.comment ? el("div", { class: "detail", text: text(rev.comment) }) : null,
      el("ul", { class: "changes" }, (rev.changes || []).map(function (c) { return el("li", { text: text(c) }); })));
    if (rev.revision !== latest && policyEdit.canEdit) {
      li.appendChild(el("button", { type: "button", class: "button outline sm", text: "Roll back to this",
        dataset: { testid: "rollback" }, onclick: function () { rollbackTo(rev); } }));
    }
    return li;
  }

  function setEditorText(yamlText, revision) {
    $("p-yaml").value = yamlText;
    policyEdit.loaded = yamlText;
    policyEdit.based = revision;
    policyEdit.checked = null;
    $("p-save").disabled = true;
    $("p-stale").hidden = true;
    clear($("p-result"));
  }

  function refreshPolicies(force) {
    return Promise.all([api("GET", "/policies/document"), api("GET", "/policies/revisions?limit=50"), permFor("")])
      .then(function (answers) {
        var doc = answers[0], revs = answers[1], perm = answers[2];
        banner(null);
        stamp();
        policyEdit.canEdit = !!(perm && perm.can_edit_policies);
        policyEdit.latest = doc.revision;
        var key = JSON.stringify([doc.revision, revs.total, policyEdit.canEdit]);
        if (!force && key === lastRender) { tick(); return; }
        lastRender = key;
        $("p-revision").textContent = doc.revision ? "Revision " + doc.revision + " by " + doc.author + ", " +
          absTime(doc.created_at) : "No revision yet";
        $("p-source").textContent = revs.source === "file" ?
          "Managed as code ([escalation] policies_source = file): edit the policies file instead." :
          policyEdit.canEdit ? "" : "Read only: editing policies needs permission to edit Airflow connections.";
        var entries = (doc.document && Array.isArray(doc.document.policies)) ? doc.document.policies : [];
        var rows = $("p-rows");
        clear(rows);
        entries.forEach(function (entry) { rows.appendChild(policyRow(entry, doc.previews || {})); });
        $("empty").hidden = entries.length > 0;
        var list = $("p-revisions");
        clear(list);
        revs.revisions.forEach(function (rev) { list.appendChild(revisionItem(rev, doc.revision)); });
        var editable = policyEdit.canEdit && revs.source !== "file";
        $("p-yaml").readOnly = !editable;
        $("p-check").disabled = false;
        var dirty = $("p-yaml").value !== policyEdit.loaded;
        if (policyEdit.based === null || !dirty) setEditorText(doc.yaml, doc.revision);
        else if (doc.revision !== policyEdit.based) {
          $("p-stale").textContent = "Revision " + doc.revision + " was saved since you started editing: " +
            "saving yours would be refused. Discard your changes to load it.";
          $("p-stale").hidden = false;
        }
        if (!editable) $("p-save").disabled = true;
      });
  }

  function showCheck(answer) {
    var box = $("p-result");
    clear(box);
    if (!answer.valid) {
      box.appendChild(el("p", { class: "error-text", text: "Not saved: " + answer.errors.length +
        (answer.errors.length === 1 ? " error" : " errors") }));
      box.appendChild(el("ul", { class: "errors", dataset: { testid: "errors" } },
        answer.errors.map(function (e) { return el("li", { text: text(e) }); })));
      return;
    }
    var previews = answer.previews || {};
    box.appendChild(el("dl", { class: "facts", dataset: { testid: "previews" } }, Object.keys(previews).map(function (name) {
      return fact(name, el("span", { dataset: { testid: "preview" }, text: previews[name] }));
    })));
    if (answer.changes) {
      box.appendChild(el("ul", { class: "changes", dataset: { testid: "changes" } },
        answer.changes.map(function (c) { return el("li", { text: text(c) }); })));
    }
  }

  function checkPolicies() {
    var yamlText = $("p-yaml").value;
    return api("POST", "/policies/document/check", { yaml: yamlText }).then(function (answer) {
      showCheck(answer);
      policyEdit.checked = answer.valid ? yamlText : null;
      $("p-save").disabled = !(answer.valid && policyEdit.canEdit && !$("p-yaml").readOnly);
    }, function (err) { if (!sessionBanner(err)) toast("Check failed: " + err.message, true); });
  }

  function savePolicies() {
    var yamlText = $("p-yaml").value;
    if (policyEdit.checked !== yamlText) { $("p-save").disabled = true; return Promise.resolve(); }
    $("p-save").disabled = true;
    return api("PUT", "/policies/document", { yaml: yamlText, expected_revision: policyEdit.based,
      comment: $("p-comment").value.trim() }).then(function (saved) {
      toast("Saved revision " + saved.revision + ": every API server applies it within seconds");
      $("p-comment").value = "";
      setEditorText(saved.yaml, saved.revision);
      return refresh(true);
    }, function (err) {
      if (sessionBanner(err)) return;
      if (err.body && Array.isArray(err.body.errors)) showCheck({ valid: false, errors: err.body.errors });
      toast("Not saved: " + err.message, true);
    });
  }

  function rollbackTo(rev) {
    return ask({ title: "Roll back to revision " + rev.revision + "?", message: "Its policies become a new revision, " +
      "applied by every API server within seconds. Open escalations keep the policy they started with.",
      textLabel: "Why (optional)", ok: "Roll back" }).then(function (answer) {
      if (!answer) return;
      return api("POST", "/policies/revisions/" + rev.revision + "/rollback",
        { expected_revision: policyEdit.latest, comment: answer.text }).then(function (saved) {
        toast("Rolled back: revision " + saved.revision + " has the policies of revision " + rev.revision);
        setEditorText(saved.yaml, saved.revision);
        return refresh(true);
      }, function (err) { if (!sessionBanner(err)) toast("Roll back failed: " + err.message, true); });
    });
  }

  function initPolicies() {
    $("p-check").addEventListener("click", checkPolicies);
    $("p-save").addEventListener("click", savePolicies);
    $("p-discard").addEventListener("click", function () { policyEdit.based = null; lastRender = ""; refresh(true); });
    $("p-yaml").addEventListener("input", function () {
      // a changed text needs a new check before it can be saved
      if ($("p-yaml").value !== policyEdit.checked) $("p-save").disabled = true;
    });
  }

  // ------------------------------------------------------------------ polling
  var timer = null, inFlight = null;

  function refresh(force) {
    // one refresh at a time; a forced one (after an action) runs again once the current ends,
    // so it never shows what was read before the action
    if (inFlight) return force ? inFlight.then(function () { return refresh(true); }) : inFlight;
    var run = CFG.view === "list" ? refreshList : CFG.view === "record" ? refreshRecord :
      CFG.view === "policies" ? refreshPolicies : refreshTask;
    inFlight = Promise.resolve().then(function () { return run(force); }).catch(function (err) {
      if (!sessionBanner(err)) banner("Could not load escalations: " + (err && err.message ? err.message : String(err)));
    }).then(function () { inFlight = null; });
    return inFlight;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      if (document.hidden) { schedule(); return; }
      refresh(false).then(schedule);
    }, CFG.pollMs);
  }

  function initFilters() {
    var params = new URLSearchParams(window.location.search);
    var map = { state: "f-state", policy: "f-policy", dag_id: "f-dag", incident: "f-incident" };
    Object.keys(map).forEach(function (k) {
      var v = params.get(k);
      if (v === null) return;
      var input = $(map[k]);
      if (input.tagName === "SELECT" && !input.querySelector("option[value=\"" + CSS.escape(v) + "\"]")) {
        input.appendChild(el("option", { value: v, text: v }));
      }
      input.value = v;
    });
    var debounce = null;
    function changed() {
      limit = 50;
      syncUrl(filterState());
      refresh(true);
    }
    $("filters").addEventListener("submit", function (e) { e.preventDefault(); changed(); });
    $("filters").addEventListener("change", changed);
    $("filters").addEventListener("input", function (e) {
      if (e.target.tagName !== "INPUT") return;
      clearTimeout(debounce);
      debounce = setTimeout(changed, 350);
    });
    $("filters").addEventListener("reset", function () { setTimeout(changed, 0); });
    $("more").addEventListener("click", function () { limit = Math.min(500, limit + 50); refresh(true); });
  }

  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(false); });
  if (CFG.view === "list") initFilters();
  if (CFG.view === "policies") initPolicies();
  refresh(true).then(schedule);
})();
