/* The failure routes page: GET /routes and GET /routes/explain with the user's session.
   Renders with textContent only (nothing from the server becomes markup). */
(function () {
  "use strict";
  var data = document.body.dataset;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined) return;
      if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.keys(value).forEach(function (k) { node.dataset[k] = String(value[k]); });
      else node.setAttribute(key, String(value));
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function get(path) {
    return fetch(data.api + path, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : "HTTP " + r.status);
          return body;
        });
      });
  }

  function banner(message) {
    var b = document.getElementById("banner");
    b.textContent = message || "";
    b.hidden = !message;
  }

  function matchText(route) {
    var bits = ["dag_id " + route.dag_id];
    if (route.tags && route.tags.length) bits.push("tags " + route.tags.join(", "));
    if (route.owners && route.owners.length) bits.push("owners " + route.owners.join(", "));
    if (route.task_id && route.task_id !== "*") bits.push("task_id " + route.task_id);
    if (route.run_types && route.run_types.length) bits.push("run types " + route.run_types.join(", "));
    if (route.min_try > 1) bits.push("from try " + route.min_try);
    if (route.over_minutes) bits.push("over " + route.over_minutes + " min");
    return bits.join("; ");
  }

  function showRoutes(body) {
    var rows = document.getElementById("route-rows");
    rows.textContent = "";
    body.routes.forEach(function (route) {
      var keys = Object.keys(route.incident_keys).map(function (k) { return route.incident_keys[k]; });
      rows.appendChild(el("tr", { dataset: { testid: "route-row", index: route.index } }, [
        el("td", { text: route.index }),
        el("td", { text: route.name }),
        el("td", { text: route.kind.join(", ") }),
        el("td", { text: matchText(route) + (route.matches_every_dag ? " (every Dag)" : "") }),
        el("td", { text: route.policy }),
        el("td", { text: route.severity }),
        el("td", { text: Array.from(new Set(keys)).join(", ") })
      ]));
    });
    document.getElementById("no-routes").hidden = body.routes.length > 0;
    var warnings = document.getElementById("warnings");
    warnings.textContent = "";
    body.warnings.forEach(function (w) { warnings.appendChild(el("li", { text: w })); });
    warnings.hidden = body.warnings.length === 0;
    var d = body.detector;
    document.getElementById("detector").textContent = d
      ? "Detector: running every " + d.interval_seconds + " s; " + d.triggered + " paged, " + d.resolved +
        " resolved by this server" + (d.last_error ? "; last error: " + d.last_error : "")
      : "Detector: off";
  }

  function showAnswer(answer) {
    var box = document.getElementById("answer");
    box.textContent = "";
    var list = el("ol", { class: "timeline", dataset: { testid: "explain-routes" } });
    answer.routes.forEach(function (r) {
      var what = r.wins ? "catches it" : r.matches ? "matches, but an earlier route wins" : r.reason;
      list.appendChild(el("li", { dataset: { testid: "explain-route", wins: r.wins, matches: r.matches } }, [
        el("strong", { text: r.index + ". " + r.name + ": " }), el("span", { text: what })
      ]));
    });
    box.appendChild(el("p", { class: "muted", text: answer.precedence }));
    box.appendChild(list);
    if (!answer.route) {
      box.appendChild(el("p", { dataset: { testid: "explain-outcome" }, text: answer.outcome.why }));
      return;
    }
    box.appendChild(el("p", { dataset: { testid: "explain-outcome" },
      text: "Incident " + answer.incident_id + " under policy " + answer.policy + " (severity " + answer.severity + ")" +
        (answer.outcome.pages ? ":" : ": nobody is paged, " + answer.outcome.why) }));
    var steps = el("ul", { dataset: { testid: "explain-steps" } });
    answer.outcome.steps.forEach(function (s) {
      steps.appendChild(el("li", { text: "level " + s.level + " at +" + s.after_minutes + " min: " + s.targets.join(", ") }));
    });
    box.appendChild(steps);
  }

  function explain(event) {
    if (event) event.preventDefault();
    var form = document.getElementById("explain");
    var params = new URLSearchParams();
    Array.prototype.forEach.call(form.elements, function (input) {
      if (input.name && input.value) params.append(input.name, input.value);
    });
    if (!params.get("dag_id")) return;
    get("/routes/explain?" + params.toString()).then(function (answer) { banner(""); showAnswer(answer); })
      .catch(function (err) { banner(err.message); });
  }

  get("/routes").then(showRoutes).catch(function (err) { banner(err.message); });
  document.getElementById("explain").addEventListener("submit", explain);
  if (data.dagId) explain();
})();
