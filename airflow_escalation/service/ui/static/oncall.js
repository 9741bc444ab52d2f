/* The On call page: schedules (who now, a two-week strip), silences (create, expire), windows.
   Reads the REST API with the user's own Airflow session and renders with textContent only;
   the server decides who may create or expire (a refusal is shown as the API's message). */
(function () {
  "use strict";

  var data = document.body.dataset;
  var API = data.api, LOGIN = data.login;
  var POLL_MS = Math.max(5000, Number(data.pollMs) || 5000);
  var DAY_MS = 86400000, DAYS = 14;
  var PALETTE = 8;

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === undefined || value === null || value === false) return;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "style") node.style.cssText = value;
      else if (key.indexOf("on") === 0) node.addEventListener(key.slice(2), value);
      else if (key.indexOf("data-") === 0) node.setAttribute(key, String(value));
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === undefined || child === null || child === false) continue;
      [].concat(child).forEach(function (c) { node.appendChild(c instanceof Node ? c : document.createTextNode(String(c))); });
    }
    return node;
  }
  function $(id) { return document.getElementById(id); }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function enc(v) { return encodeURIComponent(String(v)); }
  function when(iso) {
    if (!iso) return "\u2014";
    var d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  }

  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } };
    if (method !== "GET") {  /* writes are JSON: with the session cookie the service takes only JSON writes */
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body || {});
    }
    return fetch(API + path, init).then(function (res) {
      return res.text().then(function (raw) {
        var parsed = null;
        try { parsed = raw ? JSON.parse(raw) : null; } catch (e) { parsed = null; }
        if (!res.ok) {
          var detail = parsed && parsed.detail;
          var msg = typeof detail === "string" ? detail : Array.isArray(detail)
            ? detail.map(function (d) { return (d.loc || []).join(".") + ": " + d.msg; }).join("; ") : res.status + " " + res.statusText;
          var err = new Error(msg); err.status = res.status; throw err;
        }
        return parsed;
      });
    });
  }

  function banner(message) {
    var b = $("banner");
    clear(b);
    if (!message) { b.hidden = true; return; }
    [].concat(message).forEach(function (m) { b.appendChild(m instanceof Node ? m : document.createTextNode(m)); });
    b.hidden = false;
  }
  function failed(err) {
    if (err && err.status === 401) {
      banner(["Your Airflow session has expired. ", el("a", { href: LOGIN + "?next=" + enc(window.top.location.href), target: "_top", text: "Log in again" })]);
    } else {
      banner(String((err && err.message) || err));
    }
  }

  // ------------------------------------------------------------------ schedules
  var colours = {};
  function colourOf(user) {
    if (!(user in colours)) colours[user] = Object.keys(colours).length % PALETTE;
    return "hsl(" + (colours[user] * 360 / PALETTE + 200) % 360 + " 55% 80%)";
  }

  function strip(shifts, start) {
    var begin = new Date(start).getTime(), span = DAYS * DAY_MS;
    var bar = el("div", { class: "strip", "data-testid": "strip" });
    shifts.forEach(function (s) {
      var a = Math.max(new Date(s.start).getTime(), begin), b = Math.min(new Date(s.end).getTime(), begin + span);
      if (b <= a) return;
      var who = s.user ? (s.name || s.user) : "nobody";
      var cls = "shift" + (s.user ? "" : " nobody") + (String(s.source).indexOf("override:") === 0 ? " override" : "");
      bar.appendChild(el("div", {
        class: cls, "data-testid": "shift", "data-user": s.user || "",
        style: "flex: " + (b - a) + " 0 0;" + (s.user ? "background:" + colourOf(s.user) : ""),
        title: who + ": " + when(s.start) + " \u2192 " + when(s.end) + " (" + s.source + ")",
        text: who
      }));
    });
    return bar;
  }

  function scheduleCard(schedule, shifts) {
    var now = schedule.on_call || {};
    var card = el("div", { class: "schedule", "data-testid": "schedule", "data-schedule": schedule.name },
      el("div", { class: "schedule-head" },
        el("span", { class: "schedule-name", text: schedule.name }),
        el("span", { class: "now", "data-testid": "on-call-now" }, "On call now: ",
          el("strong", { text: now.user ? (now.name || now.user) : "nobody" }),
          el("span", { class: "muted", text: " (" + now.source + (now.time_zone ? ", " + now.time_zone : "") + ")" })),
        schedule.description ? el("span", { class: "muted", text: schedule.description }) : null));
    if (shifts) {
      card.appendChild(strip(shifts.shifts, shifts.start));
      card.appendChild(el("div", { class: "strip-scale muted" }, el("span", { text: when(shifts.start) }), el("span", { text: "+" + DAYS + " days" })));
    }
    var next = schedule.next_handoffs || [];
    if (next.length) {
      card.appendChild(el("ul", { class: "handoffs" }, next.map(function (h) {
        return el("li", { text: when(h.start) + ": " + (h.user ? (h.name || h.user) : "nobody") + " (" + h.source + ")" });
      })));
    }
    return card;
  }

  function loadSchedules() {
    return api("GET", "/schedules").then(function (body) {
      var list = body.schedules || [];
      return Promise.all(list.map(function (s) {
        return api("GET", "/schedules/" + enc(s.name) + "/shifts?days=" + DAYS).catch(function () { return null; });
      })).then(function (strips) {
        var box = $("schedules");
        clear(box);
        list.forEach(function (s, i) { box.appendChild(scheduleCard(s, strips[i])); });
        $("no-schedules").hidden = list.length > 0;
      });
    });
  }

  // ------------------------------------------------------------------ silences
  function matcherText(m) {
    return Object.keys(m || {}).filter(function (k) { return m[k] !== null && m[k] !== undefined; })
      .map(function (k) { return k + "=" + m[k]; }).join(", ");
  }

  function expire(id) {
    api("POST", "/silences/" + enc(id) + "/expire").then(function () { banner(null); refresh(); }).catch(failed);
  }

  function loadSilences() {
    return api("GET", "/silences").then(function (body) {
      var rows = $("silences");
      clear(rows);
      (body.silences || []).forEach(function (s) {
        rows.appendChild(el("tr", { "data-testid": "silence", "data-id": s.id, "data-status": s.status },
          el("td", null, el("span", { class: "chip", text: s.status })),
          el("td", { text: matcherText(s.matchers) }),
          el("td", { text: when(s.starts_at) }),
          el("td", { text: when(s.ends_at) }),
          el("td", { text: s.created_by || "\u2014" }),
          el("td", { text: s.comment || "" }),
          el("td", { class: "actions-col" }, el("button", { type: "button", class: "button ghost", "data-testid": "expire", text: "Expire", onclick: function () { expire(s.id); } }))));
      });
      $("no-silences").hidden = (body.silences || []).length > 0;
    });
  }

  function createSilence(event) {
    event.preventDefault();
    var form = event.target, matchers = {};
    ["dag_id", "task_id", "policy", "incident", "severity"].forEach(function (k) {
      var v = form.elements[k].value.trim();
      if (v) matchers[k] = v;
    });
    var body = { matchers: matchers, duration_minutes: Number(form.elements.duration_minutes.value), comment: form.elements.comment.value };
    api("POST", "/silences", body).then(function () { form.reset(); banner(null); refresh(); }).catch(failed);
  }

  // ------------------------------------------------------------------ windows
  function loadWindows() {
    return api("GET", "/maintenance-windows").then(function (body) {
      var box = $("windows");
      clear(box);
      var list = body.maintenance_windows || [];
      if (!list.length) { box.appendChild(el("p", { class: "muted", text: "No maintenance windows." })); return; }
      box.appendChild(el("ul", null, list.map(function (w) {
        var scope = (w.dag_ids || []).map(function (d) { return "dag " + d; }).concat((w.policies || []).map(function (p) { return "policy " + p; })).join(", ");
        var next = (w.openings || [])[0];
        return el("li", { "data-testid": "window" }, el("strong", { text: w.name }),
          " \u00b7 " + w.cron + " (" + w.time_zone + "), " + w.duration_minutes + " min \u00b7 " + scope,
          w.open_now ? el("span", { class: "chip", text: " open now" }) : null,
          next ? el("span", { class: "muted", text: " \u00b7 next " + when(next.start) }) : null);
      })));
    });
  }

  function refresh() {
    return Promise.all([loadSchedules(), loadSilences(), loadWindows()]).then(function () {
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    }).catch(failed);
  }

  $("silence-form").addEventListener("submit", createSilence);
  refresh();
  setInterval(function () { if (!document.hidden) refresh(); }, POLL_MS);
})();
