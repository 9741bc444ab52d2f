"""The airflow-escalation CLI end to end against a real local server (and offline validate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_escalation.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "dags_examples" / "policies" / "production_critical.yaml"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[dict[str, str]]:
    """The rows of AirflowConsole's ``-o table`` output (``a | b`` lines under a ``===`` rule)."""
    lines = [line for line in out.splitlines() if "|" in line or line.startswith("=")]
    header = [cell.strip() for cell in lines[0].split("|")]
    assert set(lines[1]) <= {"=", "+"}
    return [dict(zip(header, (cell.strip() for cell in line.split("|")))) for line in lines[2:]]


@pytest.fixture
def svc_args(service):
    return ["--url", service.url, "--username", "admin", "--password", "secret", "--retries", "1"]


# --------------------------------------------------------------------------- validate (offline)


def test_validate_example(capsys):
    code, out, err = run(capsys, "validate", str(EXAMPLE))
    assert code == 0, err
    assert "valid, 1 policy (default: production_critical)" in out
    assert "production_critical — Production critical alerts" in out
    assert "severity: critical, high" in out and "cooldown 60 min" in out
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("L")]
    assert lines[0].startswith("L1  at +0 min") and "Team Lead <team-lead> (user)" in lines[0]
    assert "[repeat 2x every 5 min]" in lines[0]
    assert lines[1].startswith("L2  at +15 min") and "oncall-primary (schedule)" in lines[1]
    assert lines[2].startswith("L3  at +45 min") and "leadership@company.com (email)" in lines[2]


def test_validate_json(capsys):
    code, out, _ = run(capsys, "validate", str(EXAMPLE), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["valid"] and data["policies"][0]["levels"][2]["delay_minutes"] == 30


def test_validate_invalid_names_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("delay_minutes: 15", "delay_minutes: -15"))
    code, out, err = run(capsys, "validate", str(bad))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {bad}: invalid: policies[0]: ")
    assert "levels[level=2].delay_minutes: must be >= 0, got -15" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_validate_unknown_field_and_bad_yaml(tmp_path, capsys):
    typo = tmp_path / "typo.yaml"
    typo.write_text("policies:\n  - name: p\n    levles: []\n")
    code, _, err = run(capsys, "validate", str(typo))
    assert code == 1 and "unknown field(s) 'levles'" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("policies: [\n  - name: p\n")
    code, _, err = run(capsys, "validate", str(broken))
    assert code == 1 and "cannot load" in err and "Traceback" not in err and err.count("\n") == 1
    code, _, err = run(capsys, "validate", str(tmp_path / "missing.yaml"))
    assert code == 1 and "no such file" in err


def test_validate_remote(capsys, svc_args, tmp_path):
    code, out, err = run(capsys, *svc_args, "validate", "--remote", str(EXAMPLE))
    assert code == 0, err
    assert "valid on the service (production_critical)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - name: p\n    levels: []\n")
    code, _, err = run(capsys, *svc_args, "validate", "--remote", str(bad))
    assert code == 1 and "invalid" in err and "levels" in err


# --------------------------------------------------------------------------- against the service


def test_lifecycle(capsys, service, svc_args):
    code, out, err = run(
        capsys,
        *svc_args,
        "trigger",
        "orders-etl:1",
        "--policy",
        "production_critical",
        "--severity",
        "critical",
        "--context",
        "dag_id=orders_etl",
        "--context",
        "try_number=2",
        "--context",
        "run_id=manual__2024",
    )
    assert code == 0, err
    assert out.startswith("trigger: ") and "state active, level 1" in out and "Team Lead <team-lead>" in out
    body = service.requests("/escalation/api/v1/escalations", "POST")[-1].body
    assert body == {
        "incident_id": "orders-etl:1",
        "policy_name": "production_critical",
        "context": {"dag_id": "orders_etl", "try_number": 2, "run_id": "manual__2024", "severity": "critical"},
    }
    rid = next(iter(service.records))

    code, out, _ = run(capsys, *svc_args, "list", "--state", "active", "--dag-id", "orders_etl")
    assert code == 0
    (row,) = table_rows(out)
    assert list(row) == ["id", "state", "level", "policy", "incident", "created", "next"]
    assert list(row.values())[:5] == [rid, "active", "1", "production_critical", "orders-etl:1"]
    assert out.strip().splitlines()[-1] == "1-1 of 1"
    assert service.seen[-1].query["state"] == ["active"] and service.seen[-1].query["dag_id"] == ["orders_etl"]

    code, out, _ = run(capsys, *svc_args, "escalate", rid, "--force")
    assert code == 0 and "level 2" in out
    code, out, _ = run(capsys, *svc_args, "ack", rid, "--note", "looking")
    assert code == 0 and "acknowledge:" in out and "state acknowledged" in out
    assert service.seen[-1].body == {"note": "looking"}

    code, out, _ = run(capsys, *svc_args, "show", rid)
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.split("context\n")[0].splitlines())
    assert fields["id"] == rid and fields["state"] == "acknowledged" and fields["level"] == "2"
    assert "by admin" in out and "dag_id = orders_etl" in out
    # one entry per step (core/timeline.steps), each delivery under the step that sent it
    assert fields["escalated"] == "1 time" and fields["next"] == "-"
    timeline = out.split("timeline (3 steps)\n")[1].splitlines()
    assert timeline[0].endswith("UTC  Triggered by admin: level 1 paged")
    assert timeline[1].strip() == "Team Lead <team-lead> (user): sent"
    assert timeline[2].endswith("UTC  Escalated to level 2 by admin")
    assert timeline[3].endswith("UTC  Acknowledged by admin  (Note: looking)") and len(timeline) == 4

    code, out, _ = run(capsys, *svc_args, "resolve", rid, "--note", "fixed")
    assert code == 0 and "state resolved" in out

    code, out, _ = run(capsys, *svc_args, "stats")
    assert code == 0 and "total_escalations" in out and "resolution_rate" in out and "1.000" in out

    code, out, _ = run(capsys, *svc_args, "policies")
    assert code == 0 and "L3  at +45 min" in out

    code, out, _ = run(capsys, *svc_args, "health")
    assert code == 0 and ": ok (engine fake-engine, store memory, clock running)" in out


def test_cancel_requires_reason(capsys, service, svc_args):
    record = service.add_record()
    code, _, err = run(capsys, *svc_args, "cancel", record["id"])
    assert code == 2 and "--reason" in err
    code, out, _ = run(capsys, *svc_args, "cancel", record["id"], "--reason", "duplicate")
    assert code == 0 and "state cancelled" in out
    assert service.seen[-1].body == {"reason": "duplicate"}


def test_json_output(capsys, service, svc_args):
    code, out, _ = run(capsys, *svc_args, "--json", "trigger", "inc-json", "--severity", "high")
    assert code == 0
    result = json.loads(out)
    assert result["success"] and result["code"] == "ok"
    rid = result["record"]["id"]
    for argv, key in (
        (["list"], "escalations"),
        (["show", rid], "deliveries"),
        (["stats"], "total_escalations"),
        (["health"], "engine_id"),
    ):
        code, out, _ = run(capsys, *svc_args, *argv, "--json")  # --json after the command works too
        assert code == 0 and key in json.loads(out)
    code, out, _ = run(capsys, *svc_args, "policies", "--json")
    assert json.loads(out)[0]["name"] == "production_critical"


def test_env_configuration(capsys, service, monkeypatch):
    monkeypatch.setenv("ESCALATION_URL", service.url)
    monkeypatch.setenv("ESCALATION_USERNAME", "admin")
    monkeypatch.setenv("ESCALATION_PASSWORD", "secret")
    code, out, err = run(capsys, "list")
    assert code == 0, err and out.strip() == "no escalations"
    assert len(service.requests("/auth/token")) == 1


def test_conn_id(capsys, service, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ESCALATION_CLI",
        json.dumps({"conn_type": "escalation", "host": service.url, "login": "admin", "password": "secret"}),
    )
    code, out, err = run(capsys, "--conn-id", "escalation_cli", "trigger", "inc-conn", "--severity", "critical")
    assert code == 0, err and "trigger:" in out
    code, _, err = run(capsys, "--conn-id", "escalation_nowhere", "stats")
    assert code == 1 and "'escalation_nowhere'" in err and "Traceback" not in err
    code, _, err = run(capsys, "--conn-id", "escalation_cli", "--url", service.url, "stats")
    assert code == 2 and "not both" in err


# --------------------------------------------------------------------------- expected errors


def test_not_found(capsys, svc_args):
    code, out, err = run(capsys, *svc_args, "show", "does-not-exist")
    assert (code, out) == (1, "")
    assert err == "error: not found: escalation 'does-not-exist' not found\n"


def test_conflict(capsys, service, svc_args):
    record = service.add_record(state="resolved")
    code, _, err = run(capsys, *svc_args, "ack", record["id"])
    assert code == 1 and err == "error: conflict: cannot acknowledge an escalation in state 'resolved'\n"


def test_refused_trigger_exits_1(capsys, svc_args):
    code, out, err = run(capsys, *svc_args, "trigger", "inc-low", "--severity", "low")
    assert code == 1 and out == ""
    assert err.startswith("error: trigger refused (filtered): severity 'low'")


def test_unknown_policy(capsys, svc_args):
    code, _, err = run(capsys, *svc_args, "trigger", "inc", "--policy", "ghost")
    assert code == 1 and err == "error: not found: policy 'ghost' not found\n"


def test_service_down(capsys, dead_url):
    code, out, err = run(capsys, "--url", dead_url, "--retries", "1", "--token", "t", "stats")
    assert code == 1 and out == ""
    assert err.startswith(f"error: escalation service unavailable at {dead_url}/escalation/api/v1/stats: ConnectError")
    assert err.count("\n") == 1


def test_service_failing(capsys, service, svc_args):
    service.fail_next(*[500] * 5)
    code, _, err = run(capsys, *svc_args, "list")
    assert code == 1 and "unavailable" in err and "HTTP 500" in err


def test_bad_credentials(capsys, service):
    code, _, err = run(capsys, "--url", service.url, "--username", "admin", "--password", "nope", "stats")
    assert code == 1 and err.startswith("error: not authorised: login as 'admin' failed at ")
    code, _, err = run(capsys, "--url", service.url, "stats")
    assert code == 1 and "not authorised" in err and "no credentials configured" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["list"], "no escalation service given"),
        (["--url", "http://x", "frobnicate"], "invalid choice"),
        (["--url", "http://x", "trigger", "inc", "--context", "novalue"], "--context: expected key=value"),
        (["--url", "http://x", "--username", "u", "stats"], "--username needs --password"),
        (["--url", "http://x", "--token", "t", "--username", "u", "--password", "p", "stats"], "not both"),
        (["--url", "ftp://x", "stats"], "base_url"),
        (["--url", "http://x", "list", "--limit", "many"], "invalid int value"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "validate" in out and "escalate" in out
