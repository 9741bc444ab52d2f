"""Level 1 reaches a real local HTTP sink and a real local SMTP server through their Airflow
connections (AIRFLOW_CONN_* env vars), driven by the engine on a fake clock; failures are
retried with backoff or fail with a clear error."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest

from airflow_escalation.core.types import DeliveryState
from airflow_escalation.service import links

from channel_support import BASE_URL, FAILURE_CONTEXT, SECRET, T0, free_port, policy


def deliveries_by_target(engine, record_id):
    return {d.target.key: d for d in engine.get_deliveries(record_id)}


async def test_level_one_reaches_the_http_sink_and_the_smtp_server(
    make_engine, sink, smtp_server, http_conn, smtp_conn, recorder
):
    engine, _ = await make_engine(
        policy(
            [
                {"type": "webhook", "identifier": "/hooks/escalation", "conn_id": http_conn},
                {"type": "email", "identifier": "oncall@example.com", "name": "On-call", "conn_id": smtp_conn},
                {"type": "user", "identifier": "lead"},
            ],  # no conn_id: the notification handler
            [{"type": "email", "identifier": "boss@example.com", "conn_id": smtp_conn}],
        )
    )

    result = await engine.trigger("orders_etl.load", FAILURE_CONTEXT, "pipeline")
    assert result.success
    record_id = result.record.id
    await engine.advance(timedelta(seconds=1))

    # --- the webhook
    [request] = sink.requests
    assert request.method == "POST" and request.path == "/hooks/escalation"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "k-123"  # headers from the connection's extra
    body = request.json
    assert body["event"] == "escalation.notify" and body["schema_version"] == 1
    assert body["record_id"] == record_id and body["incident_id"] == "orders_etl.load"
    assert body["level"] == 1 and body["max_level"] == 2 and body["state"] == "active"
    assert body["severity"] == "critical" and body["policy"] == "pipeline"
    assert body["title"] == "[ESCALATION L1] orders_etl.load failed"
    assert body["target"] == {"type": "webhook", "identifier": "/hooks/escalation", "name": "/hooks/escalation"}
    assert [t["name"] for t in body["targets"]] == ["/hooks/escalation", "On-call", "lead"]
    assert body["dag"] == {
        "dag_id": "orders_etl",
        "run_id": "scheduled__2026-03-02T09:00:00+00:00",
        "task_id": "load",
        "map_index": None,
        "try_number": 2,
        "logical_date": None,
    }
    assert body["exception"] == FAILURE_CONTEXT["exception"]
    run = f"{BASE_URL}/dags/orders_etl/runs/scheduled__2026-03-02T09%3A00%3A00%2B00%3A00"
    assert body["links"]["run"] == run
    assert body["links"]["task"] == f"{run}/tasks/load?try_number=2"
    assert body["links"]["dag"] == f"{BASE_URL}/dags/orders_etl"
    assert body["links"]["escalation"] == f"{BASE_URL}/plugin/escalations/escalation/ui/records/{record_id}"
    for action in ("acknowledge", "resolve"):  # signed links the UI's /escalation/act/ accepts
        assert body["links"][action].startswith(f"{BASE_URL}/escalation/act/")
        token = body["links"][action].rsplit("/", 1)[1]
        assert links.verify_action_token(token, secret=SECRET, record_id=record_id, action=action)
    assert body["sent_at"] == T0.isoformat()

    # --- the e-mail
    [(sender, rcpts, mail)] = smtp_server.messages
    assert sender == "airflow@example.com" and rcpts == ["oncall@example.com"]
    assert mail["Subject"] == "[ESCALATION L1] orders_etl.load failed"
    assert mail["X-Escalation-Id"] == record_id and mail["References"] == f"<escalation-{record_id}@airflow-escalation>"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "orders_etl.load failed" in text and run in text
    assert "<script>" in text  # plain text is shown as text
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    # each message signs its own one-click links (each token has its own id)
    [ack] = re.findall(r"Acknowledge: (\S+)", text)
    assert links.verify_action_token(ack.rsplit("/", 1)[1], secret=SECRET, record_id=record_id, action="acknowledge")
    [resolve_href] = re.findall(r'href="([^"]+/escalation/act/[^"]+)"[^>]*>Resolve<', html)
    assert links.verify_action_token(
        resolve_href.rsplit("/", 1)[1], secret=SECRET, record_id=record_id, action="resolve"
    )

    # --- the target without a connection went to the handler; every delivery is recorded sent
    assert recorder.timeline() == [(0, "user:lead")]
    sent = deliveries_by_target(engine, record_id)
    assert {k: d.state for k, d in sent.items()} == {
        "webhook:/hooks/escalation": DeliveryState.SENT,
        "email:oncall@example.com": DeliveryState.SENT,
        "user:lead": DeliveryState.SENT,
    }

    # --- level 2, 15 minutes later, by e-mail only
    await engine.advance(timedelta(minutes=15))
    assert len(sink.requests) == 1
    assert [m[1] for m in smtp_server.messages] == [["oncall@example.com"], ["boss@example.com"]]
    assert smtp_server.messages[1][2]["Subject"] == "[ESCALATION L2] orders_etl.load failed"


async def test_sink_answering_500_is_retried_with_backoff_then_sent(make_engine, sink, http_conn):
    sink.fail_next(500, "database is down", times=1)
    engine, _ = await make_engine(policy([{"type": "webhook", "identifier": "hooks/a", "conn_id": http_conn}]))
    record_id = (await engine.trigger("inc-500", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))

    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.PENDING and delivery.attempts == 1
    assert "HTTP 500 Internal Server Error" in delivery.last_error
    assert "database is down" not in delivery.last_error  # the remote body is never recorded
    assert delivery.next_attempt_at == T0 + timedelta(seconds=60)

    await engine.advance(timedelta(seconds=60))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.SENT and delivery.attempts == 2
    assert [r.path for r in sink.requests] == ["/hooks/a", "/hooks/a"]  # one request per attempt


async def test_sink_failing_every_attempt_fails_the_delivery_with_the_status(make_engine, sink, http_conn):
    sink.fail_next(503, "maintenance", times=10)
    engine, _ = await make_engine(policy([{"type": "webhook", "identifier": "/x", "conn_id": http_conn}]))
    record_id = (await engine.trigger("inc-503", {}, "pipeline")).record.id
    await engine.advance(timedelta(hours=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 3
    assert "HTTP 503" in delivery.last_error
    assert len(sink.requests) == 3


async def test_unknown_connection_fails_with_a_clear_error(make_engine, sink, caplog):
    engine, _ = await make_engine(policy([{"type": "webhook", "identifier": "/x", "conn_id": "nope_conn"}]))
    with caplog.at_level(logging.ERROR, logger="airflow_escalation.channels"):
        record_id = (await engine.trigger("inc-unknown", {}, "pipeline")).record.id
        await engine.advance(timedelta(hours=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 3
    assert "UnknownConnectionError" in delivery.last_error
    assert "Airflow connection 'nope_conn' is not defined" in delivery.last_error
    assert "AIRFLOW_CONN_NOPE_CONN" in delivery.last_error
    assert any("nope_conn" in r.getMessage() and record_id in r.getMessage() for r in caplog.records)
    assert sink.requests == []


async def test_connection_defined_after_a_failed_attempt_is_used_on_the_retry(make_engine, sink, connections):
    engine, _ = await make_engine(policy([{"type": "webhook", "identifier": "/late", "conn_id": "late"}]))
    record_id = (await engine.trigger("inc-late", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    assert "not defined" in engine.get_deliveries(record_id)[0].last_error
    connections("late", conn_type="http", host=f"127.0.0.1:{sink.port}")  # missing ones are not cached
    await engine.advance(timedelta(seconds=60))
    assert engine.get_deliveries(record_id)[0].state is DeliveryState.SENT
    assert [r.path for r in sink.requests] == ["/late"]


async def test_unsupported_connection_type_fails_with_a_clear_error(make_engine, connections):
    connections("warehouse", conn_type="postgres", host="db.example.com")
    engine, _ = await make_engine(policy([{"type": "custom", "identifier": "x", "conn_id": "warehouse"}]))
    record_id = (await engine.trigger("inc-pg", {}, "pipeline")).record.id
    await engine.advance(timedelta(hours=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.FAILED
    assert "connections of type 'postgres'" in delivery.last_error
    assert "slackwebhook" in delivery.last_error and "pagerduty_events" in delivery.last_error


@pytest.mark.parametrize(
    "identifier, fragment",
    [
        ("{sink}/abs/path?q=1", "not an absolute"),  # even on the connection's own host
        ("http://evil.example.net/steal", "not an absolute"),
        ("//evil.example.net/steal", "not an absolute"),
        ("hooks/../../admin", "'..'"),
        ("hooks/%2e%2e/admin", "'..'"),
        ("hooks/%2E%2E%2Fadmin", "'..'"),
        ("hooks/%252e%252e/admin", "'..'"),
        ("hooks/./x", "'..'"),
        ("hooks\\..\\admin", "not an absolute"),
        ("hooks/x\r\nX-Injected: 1", "control characters"),
    ],
)
async def test_target_path_stays_under_the_connection(make_engine, sink, http_conn, identifier, fragment):
    identifier = identifier.format(sink=sink.url)
    engine, _ = await make_engine(policy([{"type": "webhook", "identifier": identifier, "conn_id": http_conn}]))
    record_id = (await engine.trigger("inc-path", {}, "pipeline")).record.id
    await engine.advance(timedelta(hours=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.FAILED
    assert fragment in delivery.last_error
    assert "/steal" not in delivery.last_error
    assert sink.requests == []


async def test_connection_base_path_is_kept(make_engine, sink, connections):
    connections("team_a", conn_type="http", host=f"127.0.0.1:{sink.port}/team-a", schema="http")
    engine, _ = await make_engine(policy([{"type": "webhook", "identifier": "/alerts", "conn_id": "team_a"}]))
    await engine.trigger("inc-base", {}, "pipeline")
    await engine.advance(timedelta(seconds=1))
    assert [r.path for r in sink.requests] == ["/team-a/alerts"]


async def test_redirects_are_not_followed(make_engine, sink, http_conn):
    sink.fail_next(307, "http://127.0.0.1:9/elsewhere/secret", times=10)
    engine, _ = await make_engine(policy([{"type": "webhook", "identifier": "/hooks/r", "conn_id": http_conn}]))
    record_id = (await engine.trigger("inc-redirect", {}, "pipeline")).record.id
    await engine.advance(timedelta(hours=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.FAILED
    assert "HTTP 307 Temporary Redirect" in delivery.last_error and "not followed" in delivery.last_error
    assert "secret" not in delivery.last_error
    assert {r.path for r in sink.requests} == {"/hooks/r"}


async def test_connection_without_host_is_refused(make_engine, sink, connections):
    connections("anywhere", conn_type="http", login="bot", password="pw")
    engine, _ = await make_engine(
        policy(
            [
                {"type": "webhook", "identifier": f"{sink.url}/any", "conn_id": "anywhere"},
                {"type": "webhook", "identifier": "/relative", "conn_id": "anywhere"},
            ]
        )
    )
    record_id = (await engine.trigger("inc-any", {}, "pipeline")).record.id
    await engine.advance(timedelta(hours=1))
    for delivery in engine.get_deliveries(record_id):
        assert delivery.state is DeliveryState.FAILED and "has no host" in delivery.last_error
    assert sink.requests == []


async def test_connection_lookups_are_cached_briefly(make_engine, sink, http_conn):
    engine, delivery = await make_engine(
        policy([{"type": "webhook", "identifier": f"/t{i}", "conn_id": http_conn} for i in range(5)])
    )
    calls = []
    getter = delivery.resolver._getter

    def counting(conn_id):
        calls.append(conn_id)
        return getter(conn_id)

    delivery.resolver._getter = counting
    await engine.trigger("inc-cache", {}, "pipeline")
    await engine.advance(timedelta(seconds=1))
    assert len(sink.requests) == 5
    assert calls == [http_conn]


async def test_smtp_target_that_is_not_an_address_fails_clearly(make_engine, smtp_conn, smtp_server):
    engine, _ = await make_engine(
        policy(
            [
                {"type": "user", "identifier": "lead", "conn_id": smtp_conn},
                {
                    "type": "user",
                    "identifier": "manager",
                    "conn_id": smtp_conn,
                    "metadata": {"email": "manager@example.com"},
                },
            ]
        )
    )
    record_id = (await engine.trigger("inc-addr", {}, "pipeline")).record.id
    await engine.advance(timedelta(hours=1))
    states = deliveries_by_target(engine, record_id)
    assert states["user:lead"].state is DeliveryState.FAILED
    assert "'lead' is not an e-mail address" in states["user:lead"].last_error
    assert states["user:manager"].state is DeliveryState.SENT
    assert [m[1] for m in smtp_server.messages] == [["manager@example.com"]]


async def test_smtp_server_down_is_retried(make_engine, connections):
    connections(
        "dead_mail",
        conn_type="smtp",
        host="127.0.0.1",
        port=free_port(),
        extra={"from_email": "a@example.com", "disable_ssl": True, "disable_tls": True, "timeout": 2, "retry_limit": 0},
    )
    engine, _ = await make_engine(policy([{"type": "email", "identifier": "x@example.com", "conn_id": "dead_mail"}]))
    record_id = (await engine.trigger("inc-dead", {}, "pipeline")).record.id
    await engine.advance(timedelta(seconds=1))
    [delivery] = engine.get_deliveries(record_id)
    assert delivery.state is DeliveryState.PENDING and delivery.attempts == 1
    assert delivery.last_error
