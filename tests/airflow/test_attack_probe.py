"""Attacks on the service, many variants of each class, as a user granted Dag ``A`` only
(``team_a``), a viewer and an anonymous caller: every one must be refused with a 4xx (never a
2xx, 3xx or 5xx), nothing of another Dag may show in any answer, and the service must still
answer the admin afterwards. In-process, with the app of test_authz.py (real auth manager, real
JWTs, Airflow's own ``get_user`` and ``get_authorized_dag_ids``).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

import authz_checks as checks
from test_authz import ORIGIN, _token_for
from test_authz import app as app  # the module's fixture

API = checks.API
ACTIONS = ("acknowledge", "resolve", "cancel", "escalate")


def refused(r: httpx.Response, *what: Any) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])


def no_leak(r: httpx.Response, secrets: list[str], *what: Any) -> None:
    """Nothing of another Dag in the answer (an id the caller sent may be quoted back)."""
    for secret in secrets:
        if secret in str(r.request.url) or secret in r.request.content.decode("utf-8", "replace"):
            continue
        assert secret not in r.text, (what, secret, r.status_code, r.text[:300])


def admin_still_served(app: Any) -> None:
    assert app.call("admin", "GET", f"{API}/escalations?limit=1").status_code == 200
    assert app.call("admin", "GET", f"{API}/stats").status_code == 200


@pytest.fixture(scope="module")
def seeded(app: Any) -> Iterator[dict[str, Any]]:
    """Records of Dag A, Dag B and no Dag, with incident ids that name their Dag."""
    ids = checks.seed(app.call, "probe")
    incidents = {label: f"probe-{label}" for label in ids}
    yield {"ids": ids, "incidents": incidents, "foreign": [ids["b"], ids["none"], incidents["b"], incidents["none"]]}
    admin_still_served(app)


# ---------------------------------------------------------------------------------- reads


def _read_paths(ids: dict[str, str], inc: dict[str, str]) -> list[str]:
    b, none = ids["b"], ids["none"]
    paths = [
        f"{API}/escalations?dag_id=B",
        f"{API}/escalations?dag_id=b",
        f"{API}/escalations?dag_id=",
        f"{API}/escalations?incident={inc['b']}",
        f"{API}/escalations?incident={inc['none']}",
        f"{API}/escalations?incident={inc['b']}&dag_id=B",
        f"{API}/escalations?ids={b}",
        f"{API}/escalations?ids={b},{none}",
        f"{API}/escalations?ids={b}&ids={none}",
        f"{API}/escalations?ids=%20{b}%20",
        f"{API}/escalations?ids={b}&dag_id=B&active=true",
        f"{API}/escalations?ids={b}&state=active",
        f"{API}/escalations?active=true&limit=500",
        f"{API}/escalations?active=false",
        f"{API}/escalations?policy=inline-plain&limit=500",
        f"{API}/escalations?dag_id=A&dag_id=B",
        f"{API}/escalations?offset=0&limit=500",
        f"{API}/stats",
        f"{API}/stats?dag_id=B",
        f"{API}/me",
        f"{API}/me?dag_id=A",
        f"{API}/policies",
        "/ui/",
        "/ui/ti",
        "/ui/ti?dag_id=A&dag_id=B",
        "/ui/ti?dag_id={DAG_ID}",
    ]
    return paths


def test_cross_dag_reads_never_show_another_dags_records(app, seeded):
    ids, inc = seeded["ids"], seeded["incidents"]
    for path in _read_paths(ids, inc):
        r = app.call("team_a", "GET", path)
        assert r.status_code in (200, 404), (path, r.status_code, r.text[:300])
        no_leak(r, seeded["foreign"], path)
        if path.startswith(f"{API}/escalations") and r.status_code == 200:
            body = r.json()
            assert all(e["context"].get("dag_id") == "A" for e in body["escalations"]), path
    total_a = app.call("team_a", "GET", f"{API}/escalations?limit=1").json()["total"]
    assert app.call("team_a", "GET", f"{API}/stats?dag_id=B").json()["total_escalations"] == total_a


def test_cross_dag_record_reads_are_404_as_if_missing(app, seeded):
    ids = seeded["ids"]
    for hidden in (ids["b"], ids["none"]):
        for path in (
            f"{API}/escalations/{hidden}",
            f"{API}/escalations/{hidden.upper()}",
            f"{API}/escalations/{hidden}/deliveries",
            f"{API}/escalations/{hidden}/history",
            f"/ui/records/{hidden}",
            f"/ui/records/{hidden}?dag_id=A",
        ):
            r = app.call("team_a", "GET", path)
            refused(r, path)
            no_leak(r, seeded["foreign"], path)
    for dag in ("B", "C", "no-such-dag", "b", "A ", " A", "\uff21", "A\u200b", "B/../A", "x" * 255):
        # the tab's parameters are trimmed (the UI may pad them): "A " is Dag A's own tab there
        for path in (f"{API}/me",) + (("/ui/ti",) if dag.strip() != "A" else ()):
            r = app.call("team_a", "GET", path, params={"dag_id": dag, "run_id": "r", "task_id": "t"})
            assert r.status_code == 404, (path, dag, r.status_code, r.text[:200])
    for path in ("/ui/ti?dag_id=B&run_id={RUN_ID}", "/ui/ti?task_id=t&dag_id=B", "/ui/ti?dag_id=B&map_index=x"):
        refused(app.call("team_a", "GET", path), path)
    admin_still_served(app)


def test_anonymous_and_bad_tokens_read_nothing(app, seeded):
    ids = seeded["ids"]
    paths = [
        f"{API}/escalations",
        f"{API}/escalations/{ids['a']}",
        f"{API}/stats",
        f"{API}/me",
        f"{API}/me?dag_id=A",
        f"{API}/policies",
        f"{API}/policies/x",
        f"{API}/health",
        f"/ui/records/{ids['a']}",
        "/ui/",
        "/ui/ti?dag_id=A",
        f"/act/{_token_for(ids['a'], 'acknowledge')}",
    ]
    bad = [
        {},
        {"Authorization": "Bearer x"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer " + app.tokens["admin"][:-4] + "AAAA"},
        {"Authorization": "Bearer " + ".".join(app.tokens["admin"].split(".")[:2]) + "."},
        {"Authorization": "Bearer " + "x" * 20000},
    ]
    for path in paths:
        for headers in bad:
            r = app.call(None, "GET", path, headers=headers)
            refused(r, path, headers)
            no_leak(r, [ids["a"], ids["b"], seeded["incidents"]["a"]], path)
    app.client.cookies.set("_token", "garbage")
    try:
        refused(app.client.get(f"{API}/escalations"))
        refused(app.client.get("/ui/"))
    finally:
        app.client.cookies.clear()
    # a browser opening a page is sent to the login (the one 3xx an anonymous caller may get)
    r = app.call(None, "GET", "/ui/", headers={"accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 303 and "/auth/login" in r.headers["location"]
    admin_still_served(app)


# ---------------------------------------------------------------------------------- writes


def _bodies() -> list[dict[str, Any]]:
    return [
        {},
        {"json": {}},
        {"json": {"note": "x"}},
        {"json": {"force": True}},
        {"json": {"reason": "r"}},
        {"data": {"note": "x"}},
        {"content": b'{"note": "x"}', "headers": {"content-type": "text/plain"}},
        {"content": b"null", "headers": {"content-type": "application/json"}},
    ]


def test_cross_dag_actions_are_refused_through_every_route_and_body(app, seeded):
    ids = seeded["ids"]
    for user, targets in (
        ("team_a", (ids["b"], ids["none"])),
        ("viewer", tuple(ids.values())),
        (None, tuple(ids.values())),
    ):
        for record_id in targets:
            for action in ACTIONS:
                for kw in _bodies():
                    r = app.call(user, "POST", f"{API}/escalations/{record_id}/{action}", **kw)
                    refused(r, user, action, kw)
                    no_leak(r, seeded["foreign"] if user == "team_a" else [], user, action)
    for record_id in ids.values():
        assert checks.state(app.call, record_id) == "active"
    admin_still_served(app)


def test_one_click_links_of_another_dag_are_refused(app, seeded):
    ids = seeded["ids"]
    for hidden in (ids["b"], ids["none"]):
        for action in ("acknowledge", "resolve"):
            token = _token_for(hidden, action)
            refused(app.call("team_a", "GET", f"/act/{token}"))
            for origin in (ORIGIN, None, "null", "https://evil.example"):
                headers = {"origin": origin} if origin else {}
                r = app.call(
                    "team_a", "POST", f"/act/{token}", data={"record_id": hidden, "action": action}, headers=headers
                )
                refused(r, hidden, action, origin)
            # a token of A's record with B's id in the form
            token_a = _token_for(ids["a"], action)
            refused(app.call("team_a", "POST", f"/act/{token_a}", data={"record_id": hidden, "action": action}))
        assert checks.state(app.call, hidden) == "active"
    for junk in ("x", "x" * 5000, "a.b.c", "..%2f..%2fapi", "%00"):
        refused(app.call("team_a", "GET", f"/act/{junk}"), junk)


ODD_DAG_IDS: list[Any] = [
    "B",
    "C",
    "b",
    "A ",
    " A",
    "A\n",
    "\uff21",
    "A\u200b",
    "A\u0000",
    "a",
    "",
    " ",
    "*",
    "%",
    "A,B",
    "A|B",
    ["A"],
    ["B"],
    {"id": "A"},
    1,
    0,
    -1,
    1.5,
    True,
    False,
    None,
    "A" * 256,
    "B" * 255,
]


def _trigger(app: Any, user: str | None, incident: str, context: Any, **extra: Any) -> httpx.Response:
    body = {"incident_id": incident, "context": context, "policy": checks.PLAIN_POLICY, **extra}
    return app.call(user, "POST", f"{API}/escalations", json=body)


def test_triggers_for_another_dag_no_dag_or_odd_dag_ids_are_refused(app, seeded):
    before = app.call("admin", "GET", f"{API}/escalations?limit=1").json()["total"]
    for n, dag in enumerate(ODD_DAG_IDS):
        refused(_trigger(app, "team_a", f"odd-{n}", {"dag_id": dag, "severity": "high"}), dag)
        refused(_trigger(app, "viewer", f"odd-v-{n}", {"dag_id": dag}), dag)
        refused(_trigger(app, None, f"odd-n-{n}", {"dag_id": dag}), dag)
    for context in ({}, None, [], "A", ["dag_id", "A"], {"DAG_ID": "A"}, {"dag": "A"}, {"dag_id ": "A"}):
        refused(_trigger(app, "team_a", "ctx", context), context)
    # the Dag outside the context, or twice in one body (JSON keeps the last one everywhere)
    refused(_trigger(app, "team_a", "top", {"dag_id": "B"}, dag_id="A"))
    raw = '{"incident_id": "dup", "policy": %s, "context": {"dag_id": "A"}, "context": {"dag_id": "B"}}' % json.dumps(
        checks.PLAIN_POLICY
    )
    refused(app.call("team_a", "POST", f"{API}/escalations", content=raw, headers={"content-type": "application/json"}))
    raw2 = '{"incident_id": "dup2", "context": {"dag_id": "A", "dag_id": "B"}}'
    refused(
        app.call("team_a", "POST", f"{API}/escalations", content=raw2, headers={"content-type": "application/json"})
    )
    # bodies that are not JSON objects, with and without a JSON content type
    body = json.dumps({"incident_id": "ct", "context": {"dag_id": "B"}}).encode()
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/vnd.x+json",
        "application/json; charset=utf-16",
        "",
        "application/xml",
    ):
        r = app.call("team_a", "POST", f"{API}/escalations", content=body, headers={"content-type": ctype})
        refused(r, ctype)
    refused(app.call("team_a", "POST", f"{API}/escalations", data={"incident_id": "form", "context": "B"}))
    for raw_body in (b"[]", b"null", b'"x"', b"1", b"{", b"\xff\xfe", b"{}" * 1000):
        refused(
            app.call(
                "team_a", "POST", f"{API}/escalations", content=raw_body, headers={"content-type": "application/json"}
            ),
            raw_body[:10],
        )
    after = app.call("admin", "GET", f"{API}/escalations?limit=1").json()["total"]
    assert after == before, "a refused trigger stored a record"
    admin_still_served(app)


def test_cookie_writes_from_another_origin_are_refused(app, seeded):
    ids = seeded["ids"]
    rid = checks.trigger(app.call, "admin", "probe-cookie", "A").json()["record"]["id"]
    origins = [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": ORIGIN + ".evil.example"},
        {"origin": "http://testserver:81"},
        {"origin": "http://testserver@evil.example"},
        {"origin": ""},
        {"origin": "http://[::1"},
        {"origin": "https://evil.example", "x-forwarded-host": "x"},
    ]
    kinds = [
        {"json": {"note": "x"}},
        {"data": {"note": "x"}},
        {"content": b'{"note": "x"}', "headers": {"content-type": "text/plain"}},
        {"content": b"note=x", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        {"files": {"note": ("n", b"x")}},
        {},
    ]
    for user in ("team_a", "admin"):
        for headers in origins:
            for kind in kinds:
                kw = {k: v for k, v in kind.items()}
                kw["headers"] = {**kind.get("headers", {}), **headers}
                for path in (
                    f"{API}/escalations/{rid}/acknowledge",
                    f"{API}/escalations/{rid}/cancel",
                    f"{API}/escalations/{ids['b']}/resolve",
                ):
                    r = app.cookie_call(user, "POST", path, **kw)
                    refused(r, user, headers, kind, path)
                trig = json.dumps({"incident_id": "cookie-trig", "context": {"dag_id": "A"}}).encode()
                for ctype in ("text/plain", "application/json"):
                    form = {"content": trig, "headers": {**headers, "content-type": ctype}}
                    refused(app.cookie_call(user, "POST", f"{API}/escalations", **form), user, headers)
        # without an Origin (no browser posts cross-site without one) a form is still refused
        for kind in kinds[1:]:
            kw = dict(kind)
            refused(app.cookie_call(user, "POST", f"{API}/escalations/{rid}/acknowledge", **kw), user, kind)
    assert checks.state(app.call, rid) == "active"
    # Airflow's own pages: JSON with the cookie, from its origin (or a client sending none)
    for headers in ({"origin": app_origin(app)}, {}):
        mine = checks.trigger(app.call, "admin", f"probe-cookie-ok-{len(headers)}", "A").json()["record"]["id"]
        r = app.cookie_call("team_a", "POST", f"{API}/escalations/{mine}/acknowledge", json={}, headers=headers)
        assert r.status_code == 200, (headers, r.text)
    admin_still_served(app)


def app_origin(app: Any) -> str:
    return getattr(app, "origin", ORIGIN)


# ---------------------------------------------------------------------------------- incidents


def test_an_incident_never_joins_another_dags_record(app, seeded):
    inc = seeded["incidents"]
    b_before = app.call("admin", "GET", f"{API}/escalations/{seeded['ids']['b']}").json()
    for incident in (inc["b"], inc["none"]):
        r = checks.trigger(app.call, "team_a", incident, "A")
        assert r.status_code == 201, r.text  # its own record, never the other Dag's
        assert r.json()["record"]["id"] not in (seeded["ids"]["b"], seeded["ids"]["none"])
        assert r.json()["record"]["context"]["dag_id"] == "A"
        mine = r.json()["record"]["id"]
        assert app.call("team_a", "POST", f"{API}/escalations/{mine}/resolve", json={}).status_code == 200
    b_after = app.call("admin", "GET", f"{API}/escalations/{seeded['ids']['b']}").json()
    assert b_after["state"] == "active" and b_after["history"] == b_before["history"]
    assert checks.state(app.call, seeded["ids"]["none"]) == "active"


def test_retrigger_floods_keep_history_bounded(app):
    from airflow_escalation.core import bounds

    first = checks.trigger(app.call, "team_a", "probe-flood", "A")
    assert first.status_code == 201
    rid = first.json()["record"]["id"]
    for _ in range(bounds.MAX_RETRIGGER_EVENTS + 30):
        assert checks.trigger(app.call, "team_a", "probe-flood", "A").status_code == 200
    record = app.call("team_a", "GET", f"{API}/escalations/{rid}").json()
    retriggers = [e for e in record["history"] if e.get("event") == "retriggered"]
    assert len(retriggers) <= bounds.MAX_RETRIGGER_EVENTS
    assert len(record["history"]) <= bounds.MAX_RETRIGGER_EVENTS + 10
    admin_still_served(app)


# ---------------------------------------------------------------------------------- connections


def _conn_policies() -> list[dict[str, Any]]:
    def level(n: int, *targets: Any) -> dict[str, Any]:
        return {"level": n, "targets": list(targets)}

    conn = {"type": "webhook", "identifier": "/hook", "conn_id": "ops_webhook"}
    return [
        {"name": "c1", "levels": [level(1, conn)]},
        {"name": "c2", "levels": [level(1, "lead"), level(2, "boss", {**conn, "type": "channel", "identifier": "#x"})]},
        {"name": "c3", "levels": [level(1, {**conn, "type": "email", "identifier": "a@b.c", "priority": -5}, "lead")]},
        {"name": "c4", "levels": [level(1, {"type": "user", "identifier": "u", "conn_id": "smtp_default"})]},
        {"name": "c5", "levels": [level(n, "a") for n in (1, 2, 3)] + [level(4, {"identifier": "x", "conn_id": "x"})]},
        {
            "name": "c6",
            "levels": [level(1, {"type": "webhook", "identifier": "http://evil.example/x", "conn_id": "http_default"})],
        },
        {"name": "c7", "levels": [level(1, {"type": "webhook", "identifier": "/x", "conn_id": " ops_webhook "})]},
    ]


def test_inline_policies_never_name_connections_for_a_dag_user(app):
    for n, policy in enumerate(_conn_policies()):
        for user in ("team_a", "viewer", None):
            r = _trigger(app, user, f"probe-conn-{n}", {"dag_id": "A"}, policy=policy)
            refused(r, user, policy["name"])
            if user == "team_a":
                assert r.status_code == 403, r.text
    # a connection in keys the policy model does not know is refused as invalid, not ignored
    for policy in (
        {"name": "k1", "levels": [{"level": 1, "targets": [{"identifier": "x", "Conn_Id": "c"}]}]},
        {"name": "k2", "conn_id": "c", "levels": [{"level": 1, "targets": ["x"]}]},
        {"name": "k3", "levels": [{"level": 1, "conn_id": "c", "targets": ["x"]}]},
        {"name": "k4", "levels": [{"level": 1, "targets": [{"identifier": "x", "http_conn_id": "c"}]}]},
    ):
        refused(_trigger(app, "team_a", "probe-conn-k", {"dag_id": "A"}, policy=policy), policy["name"])
    r = app.call("admin", "GET", f"{API}/escalations?incident=probe-conn-0")
    assert r.json()["total"] == 0
    admin_still_served(app)


HTTP_TRICKS = [
    "../x",
    "/a/../../x",
    "%2e%2e/x",
    "/%2E%2E/x",
    "%252e%252e/x",
    "//evil.example/x",
    "http://evil.example/x",
    "https://evil.example/x",
    "\\\\evil.example\\x",
    "/a\\..\\x",
    "/\u2025/x",
    "/\uff0e\uff0e/x",
    "/a/./b",
    "/a/%2e/b",
]


def test_http_path_tricks_cannot_reach_a_connection_as_a_dag_user(app):
    for n, ident in enumerate(HTTP_TRICKS):
        policy = {
            "name": "h",
            "levels": [{"level": 1, "targets": [{"type": "webhook", "identifier": ident, "conn_id": "ops_webhook"}]}],
        }
        for user in ("team_a", "viewer", None):
            refused(_trigger(app, user, f"probe-http-{n}", {"dag_id": "A"}, policy=policy), user, ident)


def test_http_channel_refuses_every_path_trick():
    from airflow_escalation.channels import http as http_channel

    from airflow_escalation.channels.base import PermanentChannelError

    for ident in HTTP_TRICKS[:-4] + HTTP_TRICKS[-2:]:
        with pytest.raises(PermanentChannelError):
            http_channel.target_path(ident)
    for ident in HTTP_TRICKS[-4:-2]:  # look-alike dots are sent percent-encoded: no '..' segment
        assert ".." not in http_channel.target_path(ident).split("/")


# ---------------------------------------------------------------------------------- input bounds


def test_yaml_bombs_and_deep_yaml_are_refused(app):
    from airflow_escalation.core import bounds

    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    deep_flow = "x: " + "[" * (bounds.MAX_YAML_DEPTH + 10) + "]" * (bounds.MAX_YAML_DEPTH + 10)
    deep_block = "".join("  " * i + f"k{i}:\n" for i in range(bounds.MAX_YAML_DEPTH + 10)) + "  " * 80 + "v"
    huge = "name: x\ndescription: " + "y" * (bounds.MAX_YAML_BYTES + 10)
    merge = "base: &b {name: x}\npolicy:\n  <<: *b\n"
    tags = "!!python/object/apply:os.system ['true']"
    for user in ("team_a", "viewer", "admin"):
        for text in (bomb, deep_flow, deep_block, huge, merge, tags, "{" * 100000):
            r = app.call(user, "POST", f"{API}/policies/validate", json={"yaml": text})
            refused(r, user, text[:40])
        r = app.call(
            user,
            "POST",
            f"{API}/policies/validate",
            content=b'{"yaml": "a: \\ud800"}',
            headers={"content-type": "application/json"},
        )
        refused(r, user, "surrogate")
    for user in (None,):
        refused(app.call(user, "POST", f"{API}/policies/validate", json={"yaml": "name: x"}))
    deep_policy: dict[str, Any] = {}
    node = deep_policy
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    refused(
        app.call("team_a", "POST", f"{API}/policies/validate", json={"policy": {"name": "d", "metadata": deep_policy}})
    )
    admin_still_served(app)


def test_deep_huge_surrogate_and_nan_contexts_are_refused(app):
    from airflow_escalation.core import bounds

    deep: Any = "x"
    for _ in range(bounds.MAX_DEPTH + 5):
        deep = {"k": deep}
    deep_list: Any = []
    for _ in range(bounds.MAX_DEPTH + 5):
        deep_list = [deep_list]
    raws = [
        ('{"incident_id": "nan", "context": {"dag_id": "A", "x": NaN}}'),
        ('{"incident_id": "inf", "context": {"dag_id": "A", "x": Infinity}}'),
        ('{"incident_id": "ninf", "context": {"dag_id": "A", "x": -Infinity}}'),
        ('{"incident_id": "sur", "context": {"dag_id": "A", "x": "\\ud800"}}'),
        ('{"incident_id": "sur2", "context": {"dag_id": "A", "\\udfff": 1}}'),
        ('{"incident_id": "\\ud800", "context": {"dag_id": "A"}}'),
        ('{"incident_id": "big", "context": {"dag_id": "A", "x": 1' + "0" * 5000 + "}}"),
        ('{"incident_id": "deep", "context": {"dag_id": "A", "x": ' + "[" * 5000 + "]" * 5000 + "}}"),
        (
            '{"incident_id": "nanpol", "context": {"dag_id": "A"}, "policy": {"name": "p", "cooldown_minutes": NaN, '
            '"levels": [{"level": 1, "targets": ["x"]}]}}'
        ),
        (
            '{"incident_id": "nanlvl", "context": {"dag_id": "A"}, "policy": {"name": "p", '
            '"levels": [{"level": 1, "delay_minutes": Infinity, "targets": ["x"]}]}}'
        ),
    ]
    for user in ("team_a", "admin"):
        for raw in raws:
            r = app.call(
                user, "POST", f"{API}/escalations", content=raw.encode(), headers={"content-type": "application/json"}
            )
            refused(r, user, raw[:60])
        for context in (
            {"dag_id": "A", "x": deep},
            {"dag_id": "A", "x": deep_list},
            {"dag_id": "A", "x": "y" * (bounds.MAX_CONTEXT_BYTES + 1)},
            {"dag_id": "A", **{f"k{i}": i for i in range(20000)}},
        ):
            refused(_trigger(app, user, "probe-big", context), user)
    raw = b'{"incident_id": "huge", "context": {"dag_id": "A", "x": "' + b"y" * (bounds.MAX_BODY_BYTES + 10) + b'"}}'
    refused(app.call("admin", "POST", f"{API}/escalations", content=raw, headers={"content-type": "application/json"}))
    for n in ("nan", "inf", "sur", "big", "deep", "huge", "probe-big"):
        assert app.call("admin", "GET", f"{API}/escalations?incident={n}").json()["total"] == 0, n
    admin_still_served(app)


def test_odd_limits_offsets_and_ids_are_refused(app, seeded):
    from airflow_escalation.core import bounds

    for user in ("team_a", "viewer"):
        for query in (
            "limit=-1",
            "limit=0",
            "limit=1.5",
            "limit=1e3",
            f"limit={bounds.MAX_LIST_LIMIT + 1}",
            "limit=99999999999999999999999999",
            "limit=NaN",
            "limit=",
            "limit=0x10",
            "offset=-1",
            "offset=1.5",
            f"offset={bounds.MAX_LIST_OFFSET + 1}",
            "offset=9" * 1 + "9" * 40,
            "offset=inf",
            "state=bogus",
            "active=maybe",
            "ids=" + ",".join(f"x{i}" for i in range(201)),
            "&".join(f"ids=x{i}" for i in range(201)),
            "dag_id=" + "x" * 256,
            "incident=" + "x" * 256,
            "policy=" + "x" * 256,
        ):
            r = app.call(user, "GET", f"{API}/escalations?{query}")
            refused(r, user, query[:60])
        for query in ("ids=" + "x" * 10000, "ids=" + seeded["ids"]["b"] + "x" * 100, "ids=%00", "ids=,,,"):
            r = app.call(user, "GET", f"{API}/escalations?{query}")
            assert r.status_code in (200, 422), (query[:40], r.status_code)
            no_leak(r, seeded["foreign"] if user == "team_a" else [], query[:40])
        for query in ("dag_id=" + "x" * 256,) + (("dag_id=%00",) if user == "team_a" else ()):
            for path in (f"{API}/me", "/ui/ti"):
                refused(app.call(user, "GET", f"{path}?{query}"), path, query[:30])
    admin_still_served(app)


def test_over_long_ids_notes_reasons_and_names_are_refused(app, seeded):
    from airflow_escalation.core import bounds

    rid = checks.trigger(app.call, "admin", "probe-long", "A").json()["record"]["id"]
    long_note = "n" * (bounds.MAX_NOTE + 1)
    for user in ("team_a", "admin"):
        for action, body in (
            ("acknowledge", {"note": long_note}),
            ("resolve", {"note": long_note}),
            ("cancel", {"reason": long_note}),
            ("acknowledge", {"note": 5}),
            ("acknowledge", {"note": ["x"]}),
            ("escalate", {"force": "yes please"}),
            ("acknowledge", {"note": "x", "actor": "someone-else"}),
            ("acknowledge", {"acknowledged_by": "ceo"}),
        ):
            r = app.call(user, "POST", f"{API}/escalations/{rid}/{action}", json=body)
            refused(r, user, action, str(body)[:40])
        for long_id in ("x" * (bounds.MAX_RECORD_ID + 1), "x" * 5000, rid + "0", rid + "/", "%00"):
            for action in ACTIONS:
                refused(app.call(user, "POST", f"{API}/escalations/{long_id}/{action}", json={}), long_id[:20])
            refused(app.call(user, "GET", f"{API}/escalations/{long_id}"), long_id[:20])
        for field, value in (
            ("incident_id", "i" * (bounds.MAX_NAME + 1)),
            ("incident_id", ""),
            ("incident_id", None),
            ("incident_id", 5),
            ("policy_name", "p" * (bounds.MAX_NAME + 1)),
            ("trigger_type", "bogus"),
        ):
            body = {"incident_id": "probe-long2", "context": {"dag_id": "A"}, field: value}
            refused(app.call(user, "POST", f"{API}/escalations", json=body), user, field)
        for target in (
            {"identifier": "x" * (bounds.MAX_IDENTIFIER + 1)},
            {"identifier": "x", "name": "n" * 300},
            {"identifier": "x", "priority": 1e300},
            {"identifier": "x", "priority": "high"},
        ):
            policy = {"name": "long", "levels": [{"level": 1, "targets": [target]}]}
            refused(_trigger(app, user, "probe-long3", {"dag_id": "A"}, policy=policy), user, str(target)[:40])
        for policy in (
            {"name": "n" * 300, "levels": []},
            {"name": "p", "levels": [{"level": i, "targets": ["x"]} for i in range(1, 200)]},
            {"name": "p", "levels": [{"level": 1, "targets": ["x"] * 200}]},
            {"name": "p", "levels": [{"level": 1, "targets": ["x"], "repeat_count": 10**9}]},
            {"name": "p", "levels": [{"level": 1, "targets": ["x"], "delay_minutes": -5}]},
            {"name": "p", "levels": [{"level": 1, "targets": ["x"], "delay_minutes": 1e308}]},
        ):
            refused(_trigger(app, user, "probe-long4", {"dag_id": "A"}, policy=policy), user, str(policy)[:40])
    assert checks.state(app.call, rid) == "active"
    admin_still_served(app)
