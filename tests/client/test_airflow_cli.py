"""``airflow escalation ...``: the real ``airflow`` command (provider info's ``cli`` key), the
same commands as ``airflow-escalation`` (one table, :data:`airflow_escalation.cli.COMMANDS`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from airflow_escalation.cli import COMMANDS
from airflow_escalation.cli.commands import Group
from airflow_escalation.get_provider_info import CLI_FUNCTION_NAME, get_provider_info

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "dags_examples" / "policies" / "production_critical.yaml"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ESCALATION_", "AIRFLOW_CONN_"))}
    return subprocess.run(
        [AIRFLOW, *argv],
        capture_output=True,
        text=True,
        timeout=240,
        env={**environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_provider_info_names_the_cli_function():
    from airflow_escalation.cli.definition import get_escalation_cli_commands

    (name,) = get_provider_info()["cli"]
    assert name == CLI_FUNCTION_NAME
    (group,) = get_escalation_cli_commands()
    assert group.name == "escalation"
    # every command of the table, in Airflow's form, hidden old names included
    assert [c.name for c in group.subcommands] == [c.name for c in COMMANDS]
    spool = next(c for c in group.subcommands if c.name == "spool")
    assert sorted(c.name for c in spool.subcommands) == ["drain", "list"]


def test_airflow_escalation_help_lists_the_commands():
    done = airflow("escalation", "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ")}
    assert {"list", "show", "ack", "resolve", "cancel", "trigger", "policy", "spool", "stats", "health"} <= listed
    assert not {"validate", "policies"} & listed  # old names work but stay out of the help


def test_airflow_escalation_end_to_end(service, tmp_path):
    """Against a service speaking the REST contract, through the default connection."""
    record = service.add_record(state="active")
    conn = json.dumps({"conn_type": "escalation", "host": service.url, "login": "admin", "password": "secret"})
    env = {"AIRFLOW_CONN_ESCALATION_DEFAULT": conn}

    done = airflow("escalation", "list", "-o", "json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    page = json.loads(done.stdout)
    assert [r["id"] for r in page["escalations"]] == [record["id"]]

    done = airflow("escalation", "ack", record["id"], "--note", "on it", "-o", "yaml", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = yaml.safe_load(done.stdout)
    assert answer["success"] and answer["record"]["state"] == "acknowledged"
    assert service.seen[-1].body == {"note": "on it"}

    done = airflow("escalation", "ack", record["id"], env=env)  # acknowledged already: exit 1
    assert done.returncode == 1 and "error: conflict" in done.stderr and "Traceback" not in done.stderr


def test_commands_are_declared_once():
    """Both parsers come from the same table: the standalone one knows every Airflow command."""
    from airflow_escalation.cli import build_parser

    parser = build_parser()
    for command in COMMANDS:
        argv = [command.name, *([command.commands[0].name] if isinstance(command, Group) else []), "--help"]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 0, argv
