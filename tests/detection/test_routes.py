"""Failure routes as data: parsing (refusals name the field), matching, precedence, explain."""

from __future__ import annotations

import pytest

from airflow_escalation import EscalationPolicyConfig
from airflow_escalation.detection.explain import explain
from airflow_escalation.detection.routes import FailureEvent, RouteError, incident_key, parse_routes
from airflow_escalation.notifications.incident import incident_fields, render_incident_key

POLICIES = {"oncall", "finance"}

YAML = """\
escalation:
  policies:
    - name: oncall
      levels:
        - {level: 1, targets: [{type: user, identifier: lead}]}
        - {level: 2, delay_minutes: 15, targets: [{type: user, identifier: manager}]}
    - name: finance
      severity_filter: [critical]
      levels:
        - {level: 1, targets: [{type: channel, identifier: "#finance"}]}
  routes:
    - name: payments-loads
      dag_id: "payments_*"
      task_id: "load_*"
      kind: task_failed
      policy: finance
      severity: critical
    - name: finance-tagged
      tags: [finance]
      kind: [task_failed, dag_run_failed]
      policy: oncall
    - name: retries
      dag_id: "*"
      owners: [data-eng]
      kind: task_up_for_retry
      min_try: 2
      policy: oncall
      incident_key: "{dag_id}.{task_id}.retry"
"""


def _event(kind="task_failed", dag_id="payments_daily", task_id="load_orders", **kw):
    fields = {"dag_id": dag_id, "task_id": task_id, "source": "task" if "task" in kind else "dag"}
    return FailureEvent(kind=kind, dag_id=dag_id, task_id=task_id, fields=fields, **kw)


def _table():
    config = EscalationPolicyConfig.from_yaml(YAML)
    return config, parse_routes(config.routes, set(config.policies))


def test_the_routes_section_loads_with_the_policies():
    config, table = _table()
    assert [r.label for r in table.routes] == ["payments-loads", "finance-tagged", "retries"]
    assert table.warnings == []
    assert table.routes[0].kind == ["task_failed"]  # one kind or a list


def test_first_matching_route_in_file_order_wins():
    _, table = _table()
    both = _event(tags=frozenset({"finance"}))
    checks = table.check(both)
    assert [c.matches for c in checks] == [True, True, False]
    assert table.route_for(both).label == "payments-loads"
    other_task = _event(task_id="report", tags=frozenset({"finance"}))
    assert table.route_for(other_task).label == "finance-tagged"
    assert table.route_for(_event(dag_id="hr", task_id="x")) is None


def test_retry_routes_count_tries_and_owners():
    _, table = _table()
    first = _event("task_up_for_retry", dag_id="hr", task_id="x", try_number=1, owners=frozenset({"data-eng"}))
    second = _event("task_up_for_retry", dag_id="hr", task_id="x", try_number=2, owners=frozenset({"data-eng"}))
    stranger = _event("task_up_for_retry", dag_id="hr", task_id="x", try_number=3, owners=frozenset({"bob"}))
    assert table.route_for(first) is None
    assert table.route_for(second).label == "retries"
    assert table.route_for(stranger) is None
    assert incident_key(table.route_for(second), second) == "hr.x.retry"


def test_run_types_filter():
    table = parse_routes([{"dag_id": "etl", "run_types": ["scheduled"], "policy": "oncall"}], POLICIES)
    assert table.route_for(_event(dag_id="etl", run_type="scheduled")) is not None
    assert "run type 'manual'" in table.check(_event(dag_id="etl", run_type="manual"))[0].reason


def test_default_incident_key_is_the_notifiers():
    """A route without incident_key gives the notifier's default key, so both land on one incident."""
    table = parse_routes(
        [{"dag_id": "etl", "kind": ["task_failed", "dag_run_failed", "deadline_missed"], "policy": "oncall"}], POLICIES
    )
    route = table.routes[0]

    class TI:
        dag_id, run_id, task_id, map_index, try_number, log_url = "etl", "r1", "load", -1, 1, "http://x/log"

    task_fields = incident_fields({"ti": TI(), "run_id": "r1"})
    task = FailureEvent(kind="task_failed", dag_id="etl", task_id="load", fields=task_fields)
    assert incident_key(route, task) == render_incident_key("{dag_id}.{task_id}", task_fields) == "etl.load"
    run = FailureEvent(kind="dag_run_failed", dag_id="etl", fields={"dag_id": "etl", "source": "dag"})
    assert incident_key(route, run) == "etl"
    late = FailureEvent(kind="deadline_missed", dag_id="etl", fields={"dag_id": "etl", "source": "deadline"})
    assert incident_key(route, late) == "etl.deadline"


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"policy": "nope", "dag_id": "a"}, "routes[0].policy: unknown policy 'nope'"),
        ({"policy": "oncall", "kind": "task_exploded"}, "routes[0].kind: unknown kind 'task_exploded'"),
        ({"policy": "oncall", "dag_id": "etl_[ab"}, "routes[0].dag_id: invalid glob 'etl_[ab'"),
        ({"policy": "oncall", "dag_id": "a", "task_id": "[[x]"}, "routes[0].task_id: invalid glob"),
        (
            {"policy": "oncall", "dag_id": "a", "run_types": ["hourly"]},
            "routes[0].run_types[0]: unknown run type 'hourly'",
        ),
        ({"policy": "oncall", "dag_id": "a", "incident_key": "{dag}"}, "routes[0].incident_key: unknown field {dag}"),
        ({"policy": "oncall", "dag_id": "a", "colour": "red"}, "routes[0].colour:"),
        ({"policy": "oncall", "dag_id": "a", "kind": "task_over_duration"}, "routes[0].over_minutes: required"),
        ({"policy": "oncall", "dag_id": "a", "over_minutes": 5}, "routes[0].over_minutes: only for kinds"),
        ({"policy": "oncall", "dag_id": "a", "min_try": 3}, "routes[0].min_try: only for kind task_up_for_retry"),
        ({"policy": "oncall", "dag_id": "a", "kind": "dag_run_failed", "task_id": "x"}, "routes[0].task_id: only for"),
        ({"dag_id": "a"}, "routes[0].policy:"),
        ({"policy": "oncall", "tags": ["x"] * 101}, "routes[0].tags:"),
        ("just a string", "routes[0]: expected a mapping"),
    ],
)
def test_bad_routes_are_refused_naming_the_field(route, message):
    with pytest.raises(RouteError) as caught:
        parse_routes([route], POLICIES)
    assert str(caught.value).startswith(message), str(caught.value)


def test_bad_routes_are_refused_when_the_policies_file_loads():
    with pytest.raises(ValueError, match="routes: expected a list"):
        EscalationPolicyConfig.from_dict({"policies": [], "routes": {"a": 1}})


def test_a_route_matching_every_dag_is_kept_and_flagged():
    table = parse_routes([{"policy": "oncall"}, {"dag_id": "*", "tags": ["t"], "policy": "oncall"}], POLICIES)
    assert len(table.routes) == 2
    assert len(table.warnings) == 1 and table.warnings[0].startswith("routes[0] (* -> oncall): matches every DAG")


def test_explain_shows_every_route_the_winner_and_what_would_happen():
    config, table = _table()
    answer = explain(table, config.policies, _event(tags=frozenset({"finance"})))
    assert [(r["name"], r["matches"], r["wins"]) for r in answer["routes"]] == [
        ("payments-loads", True, True),
        ("finance-tagged", True, False),
        ("retries", False, False),
    ]
    assert answer["policy"] == "finance" and answer["incident_id"] == "payments_daily.load_orders"
    assert answer["outcome"] == {
        "pages": True,
        "why": None,
        "steps": [{"level": 1, "after_minutes": 0.0, "targets": ["channel:#finance"]}],
    }
    tagged = explain(table, config.policies, _event(task_id="report", tags=frozenset({"finance"})))
    assert tagged["policy"] == "oncall"
    assert [s["after_minutes"] for s in tagged["outcome"]["steps"]] == [0.0, 15.0]
    nothing = explain(table, config.policies, _event(dag_id="hr"))
    assert nothing["route"] is None and nothing["outcome"]["pages"] is False
    assert nothing["routes"][0]["reason"] == "dag_id 'hr' does not match 'payments_*'"


def test_explain_says_when_the_policy_would_filter_the_severity():
    config = EscalationPolicyConfig.from_yaml(YAML)
    table = parse_routes([{"dag_id": "x", "policy": "finance", "severity": "low"}], set(config.policies))
    answer = explain(table, config.policies, _event(dag_id="x"))
    assert answer["outcome"]["pages"] is False
    assert "severity 'low' is not in policy 'finance'" in answer["outcome"]["why"]


def test_the_documented_example_loads():
    """docs/routes.md's YAML is what a user copies: it must load as written."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "routes.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = EscalationPolicyConfig.from_yaml(example)
    table = parse_routes(config.routes, set(config.policies))
    assert [r.label for r in table.routes] == ["payments-loads", "finance-retries", "slow-nightly", "late"]
    assert table.warnings == []
    tagged = FailureEvent(
        kind="task_up_for_retry", dag_id="ledger", task_id="t", try_number=2,
        tags=frozenset({"finance"}), owners=frozenset({"data-eng"}), run_type="scheduled",
        fields={"dag_id": "ledger", "task_id": "t", "source": "task"},
    )  # fmt: skip
    assert table.route_for(tagged).label == "finance-retries"
