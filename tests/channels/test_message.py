"""The message model and its renderers: titles, UI links, escaping in HTML and Slack mrkdwn,
the webhook schema, the PagerDuty payload builder."""

from __future__ import annotations

import html.parser
import json

import pytest

from airflow_escalation.channels.message import (
    EscalationMessage,
    airflow_ui_links,
    slack_escape,
    slack_link,
)
from airflow_escalation.channels.pagerduty import event_fields, events_base_url, pagerduty_severity
from airflow_escalation.channels.base import ConnectionInfo
from airflow_escalation.channels.http import redact, webhook_url
from airflow_escalation.channels.smtp import build_email, recipients
from airflow_escalation.channels.base import PermanentChannelError
from airflow_escalation.core.models import EscalationLevel, EscalationRecord, EscalationTarget

from channel_support import BASE_URL, FAILURE_CONTEXT, SECRET, T0

EVIL = "<img src=x onerror=alert(1)> & \"quotes\" 'single' </pre>"


def make_record(context=None, state="active", **kw) -> EscalationRecord:
    return EscalationRecord(
        id="esc-abc123",
        incident_id="orders_etl.load",
        policy_name="pipeline",
        state=state,
        created_at=T0,
        updated_at=T0,
        context=dict(FAILURE_CONTEXT if context is None else context),
        policy_snapshot={"name": "pipeline", "levels": [{"level": 1}, {"level": 2}, {"level": 3}]},
        **kw,
    )


LEVEL = EscalationLevel(
    level=2,
    targets=[
        EscalationTarget.user("lead", name="Team lead", priority=1),
        EscalationTarget.channel("#alerts", priority=0, conn_id="slack"),
    ],
)


def build(record=None, level=LEVEL, **kw) -> EscalationMessage:
    kw.setdefault("base_url", BASE_URL + "/")
    kw.setdefault("now", T0)
    return EscalationMessage.build(record or make_record(), level, level.targets[0], **kw)


# ---------------------------------------------------------------------------- content


def test_title_from_dag_and_task_and_fallbacks():
    assert build().title == "[ESCALATION L2] orders_etl.load failed"
    assert build(make_record({"dag_id": "d"})).title == "[ESCALATION L2] d failed"
    assert (
        build(make_record({"message": "Critical validation failure"})).title
        == "[ESCALATION L2] Critical validation failure"
    )
    assert build(make_record({})).title == "[ESCALATION L2] incident orders_etl.load"
    assert (
        build(make_record({"title": "nightly load\r\nBcc: x@evil", "dag_id": "d"})).title
        == "[ESCALATION L2] nightly load Bcc: x@evil"
    )  # one line: no header injection
    assert len(build(make_record({"title": "x" * 500})).title) == 200


def test_context_from_the_provider_notifier():
    """The keys EscalationNotifier puts in the context (notifications/incident.py)."""
    task = build(
        make_record(
            {
                "source": "task",
                "dag_id": "etl",
                "run_id": "r",
                "task_id": "load",
                "map_index": -1,
                "try_number": 1,
                "exception": "bad row",
                "exception_type": "ValueError",
                "log_url": f"{BASE_URL}/log",
            }
        )
    )
    assert task.title == "[ESCALATION L2] etl.load failed"
    assert task.exception == "ValueError: bad row" and task.map_index is None
    assert task.links["log"] == f"{BASE_URL}/log"
    deadline = build(
        make_record(
            {
                "source": "deadline",
                "dag_id": "etl",
                "run_id": "r",
                "deadline_id": "d1",
                "deadline_time": "2026-03-02T11:00:00+00:00",
            }
        )
    )
    assert deadline.title == "[ESCALATION L2] etl missed its deadline"
    assert ("Deadline", "2026-03-02T11:00:00+00:00") in deadline.facts()
    assert (
        build(make_record({"exception": "ValueError: x", "exception_type": "ValueError"})).exception == "ValueError: x"
    )


def test_facts_level_of_max_targets_by_priority():
    message = build()
    assert message.level_text == "2 of 3"
    assert message.targets_text == "#alerts, Team lead"
    facts = dict(message.facts())
    assert facts["Task"] == "load (try 2)" and facts["Severity"] == "critical"
    assert facts["Escalation"] == "esc-abc123"


def test_ui_links_follow_the_airflow_3_routes():
    links = airflow_ui_links("http://af/", "my dag", "manual__2026-01-01T00:00:00+00:00", "grp.task", 4, 3)
    run = "http://af/dags/my%20dag/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    assert links == {
        "task": f"{run}/tasks/grp.task/mapped/4?try_number=3",
        "run": run,
        "dag": "http://af/dags/my%20dag",
    }
    assert airflow_ui_links("", "d", "r", "t") == {}
    assert airflow_ui_links("http://af", "d") == {"dag": "http://af/dags/d"}


def test_links_in_order_and_only_airflow_urls_from_the_context():
    # the context is whatever the triggering caller wrote: only Airflow's own URLs become links
    for foreign in (
        "javascript:alert(1)",
        "https://logs.example.com/x",
        "https://evil.example/phish",
        f"{BASE_URL}.evil.example/x",
        "//evil.example/x",
        f"{BASE_URL}@evil.example/x",
    ):
        assert "log" not in build(make_record({**FAILURE_CONTEXT, "log_url": foreign})).links, foreign
    log = f"{BASE_URL}/dags/etl/runs/r/tasks/load?try_number=2"
    message = build(make_record({**FAILURE_CONTEXT, "log_url": log}))
    assert message.links["log"] == log
    assert list(message.links) == ["task", "run", "dag", "log", "escalation"]  # no secret: no actions
    assert message.links["escalation"] == f"{BASE_URL}/plugin/escalations/escalation/ui/records/esc-abc123"


def test_escalation_page_url_matches_the_ui_routes():
    from airflow_escalation.channels.message import UI_RECORD_PATH
    from airflow_escalation.service.ui.act import NAV_URL_ROUTE
    from airflow_escalation.service.ui.pages import router

    assert UI_RECORD_PATH == f"/plugin/{NAV_URL_ROUTE}/escalation/ui/records/"
    assert any(getattr(r, "path", "").endswith("/records/{record_id}") for r in router.routes)


def test_action_links_come_from_the_links_module(fake_links):
    message = build(action_secret=SECRET, action_ttl_seconds=600)
    assert list(message.links)[-2:] == ["acknowledge", "resolve"]
    assert message.links["acknowledge"].startswith(f"{BASE_URL}/escalation/ui/action?token=acknowledge.esc-abc123.")
    assert fake_links.made == [("esc-abc123", "acknowledge", SECRET, 600), ("esc-abc123", "resolve", SECRET, 600)]
    assert "acknowledge" not in build(make_record(state="resolved"), action_secret=SECRET).links
    assert "acknowledge" not in build(action_secret=None).links


def test_a_record_url_from_the_links_module_is_the_escalation_page(fake_links):
    fake_links.record_url = lambda base, record_id: f"{base}/escalation/ui/escalations/{record_id}"
    assert build().links["escalation"] == f"{BASE_URL}/escalation/ui/escalations/esc-abc123"


def test_real_links_module_signs_links_the_ui_accepts():
    from airflow_escalation.service import links

    message = build(action_secret=SECRET, action_ttl_seconds=3600)
    for action in ("acknowledge", "resolve"):
        url = message.links[action]
        assert url.startswith(f"{BASE_URL}/escalation/act/")
        claims = links.verify_action_token(url.rsplit("/", 1)[1], secret=SECRET, record_id="esc-abc123", action=action)
        assert (claims.expires_at - claims.issued_at).total_seconds() == 3600
    with pytest.raises(links.InvalidActionLink):
        links.verify_action_token(message.links["resolve"].rsplit("/", 1)[1], secret="other")


def test_exception_excerpt_is_bounded():
    message = build(make_record({"exception": "E" * 5000}))
    assert len(message.exception) < 2100 and message.exception.endswith("(3000 more characters)")
    assert build(make_record({"error": "from error key"})).exception == "from error key"


# ---------------------------------------------------------------------------- renderers


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.hrefs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k == "href"]

    def handle_data(self, data):
        self.text.append(data)


def test_html_escapes_every_value(fake_links):
    record = make_record({**FAILURE_CONTEXT, "exception": EVIL, "dag_id": EVIL, "message": EVIL})
    out = build(record, action_secret=SECRET).to_html()
    assert "<img" not in out and "</pre>'" not in out
    parser = _Collect()
    parser.feed(out)
    assert "img" not in parser.tags and "script" not in parser.tags
    assert EVIL in "".join(parser.text)  # shown, as text
    assert all(h.startswith(BASE_URL) for h in parser.hrefs)


def test_text_rendering_has_facts_error_and_links(fake_links):
    text = build(action_secret=SECRET).to_text()
    assert text.startswith("[ESCALATION L2] orders_etl.load failed\n")
    assert "Level:" in text and "2 of 3" in text
    assert "Error:\n    ValueError: bad row" in text
    assert "Acknowledge: http://airflow.example.com:8080/escalation/ui/action?token=" in text


def test_slack_blocks_escape_mrkdwn_and_fit_slack_limits(fake_links):
    record = make_record({**FAILURE_CONTEXT, "exception": EVIL + "x" * 5000, "dag_id": "<!channel>"})
    blocks = build(record, action_secret=SECRET).to_slack_blocks()
    mrkdwn = json.dumps([b for b in blocks if b["type"] != "header"])  # header: plain_text, unparsed
    assert "<!channel>" not in mrkdwn and "&lt;!channel&gt;" in mrkdwn  # no @channel pings
    assert "<img" not in mrkdwn
    assert blocks[0]["text"]["type"] == "plain_text"
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150
    for block in blocks:
        if block.get("text"):
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
        assert len(block.get("fields", [])) <= 10
    assert blocks[-1]["type"] == "actions"


def test_slack_escape_and_links():
    assert slack_escape("a < b & c > d") == "a &lt; b &amp; c &gt; d"
    assert slack_link("http://x/?a=1&b=<2>|3", "Lab|el <x>") == "<http://x/?a=1&amp;b=%3C2%3E%7C3|Lab¦el &lt;x&gt;>"


def test_webhook_json_schema_is_stable(fake_links):
    body = build(action_secret=SECRET).to_webhook_json()
    assert list(body) == [
        "event",
        "schema_version",
        "sent_at",
        "title",
        "text",
        "record_id",
        "incident_id",
        "policy",
        "state",
        "level",
        "max_level",
        "severity",
        "trigger_type",
        "triggered_at",
        "escalation_count",
        "target",
        "targets",
        "dag",
        "exception",
        "summary",
        "links",
        "context",
    ]
    assert body["event"] == "escalation.notify" and body["schema_version"] == 1
    assert body["target"] == {"type": "user", "identifier": "lead", "name": "Team lead"}
    assert set(body["links"]) == {"task", "run", "dag", "escalation", "acknowledge", "resolve"}
    json.dumps(body)  # serialisable as is


def test_webhook_json_without_dag_and_odd_context_values():
    record = make_record({"when": T0, "obj": object(), "n": 1})
    body = build(record).to_webhook_json()
    assert body["dag"] is None and body["exception"] is None
    assert body["context"]["when"] == str(T0) and body["context"]["n"] == 1
    json.dumps(body)


def test_email_is_text_and_html_alternatives():
    mail = build_email(build(), "airflow@example.com", ["a@example.com", "b@example.com"])
    assert mail["To"] == "a@example.com, b@example.com"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]


def test_recipients():
    assert recipients(EscalationTarget.email("a@x.io; b@y.io")) == ["a@x.io", "b@y.io"]
    assert recipients(EscalationTarget.user("lead", metadata={"email": "lead@x.io"})) == ["lead@x.io"]
    with pytest.raises(PermanentChannelError, match="'lead' is not an e-mail address"):
        recipients(EscalationTarget.user("lead"))


# ---------------------------------------------------------------------------- HTTP / PagerDuty helpers


def test_webhook_url_joining_and_containment():
    assert webhook_url("http://h:1", "hooks/a", True) == "http://h:1/hooks/a"
    assert webhook_url("http://h:1/", "/hooks/a", True) == "http://h:1/hooks/a"
    assert webhook_url("http://h:1/base/", "/hooks/a", True) == "http://h:1/base/hooks/a"
    assert webhook_url("http://h:1", "#alerts", True) == "http://h:1/%23alerts"  # a path, not a fragment
    assert webhook_url("http://h:1", "on call/a b?x=1", True) == "http://h:1/on%20call/a%20b?x=1"
    assert webhook_url("http://h:1", "a..b/c.d?next=../x", True) == "http://h:1/a..b/c.d?next=../x"
    for absolute in ("https://h/x", "https://other/x", "//other/x", "ftp://x/y", " //other"):
        with pytest.raises(PermanentChannelError, match="not an absolute"):
            webhook_url("https://h", absolute, True)
    for dots in ("..", "a/../b", "a/%2e%2e/b", "%2E%2e", "a/%252E%252E/b", "./a", "a/.", "a/%2e/b"):
        with pytest.raises(PermanentChannelError, match="'..'"):
            webhook_url("https://h/base", dots, True)
    with pytest.raises(PermanentChannelError, match="has no host"):
        webhook_url("http://", "https://any.example.com/x", False)
    assert redact("https://user:pw@h.example.com/services/T/B/secret?token=1") == "https://h.example.com/…"


def test_pagerduty_payload_builder():
    fields = event_fields(build(), "trigger")
    assert fields["dedup_key"] == "esc-abc123" and fields["action"] == "trigger"
    assert fields["severity"] == "critical" and fields["summary"].startswith("[ESCALATION L2]")
    assert fields["group"] == "orders_etl" and fields["component"] == "load"
    assert fields["custom_details"]["level"] == "2 of 3"
    assert event_fields(build(), "resolve")["action"] == "resolve"
    with pytest.raises(ValueError):
        event_fields(build(), "page")
    assert [pagerduty_severity(s) for s in ("critical", "HIGH", "medium", "low", None, "weird")] == [
        "critical",
        "error",
        "warning",
        "info",
        "error",
        "error",
    ]


def test_pagerduty_events_base_url():
    def info(**kw):
        return ConnectionInfo(conn_id="pd", conn_type="pagerduty_events", **kw)

    assert events_base_url(info()) == "https://events.pagerduty.com"
    assert events_base_url(info(host="events.eu.pagerduty.com")) == "https://events.eu.pagerduty.com"
    assert events_base_url(info(host="127.0.0.1", schema="http", port=9)) == "http://127.0.0.1:9"
    assert events_base_url(info(host="http://proxy:8/pd/")) == "http://proxy:8/pd"
