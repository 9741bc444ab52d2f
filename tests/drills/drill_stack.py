"""The drills' Airflow: two ``airflow api-server`` processes on one PostgreSQL metadata database
(a private cluster, :class:`servers.PrivatePostgres`), a scheduler, a dag-processor, a triggerer
(LocalExecutor), the failing DAG of ``dags/drill_dags.py`` and a webhook receiver
(:class:`~airflow_escalation.demo.sinks.HttpSink`) behind an ``http`` connection.

- Server **A** (``stack.base``) is the one Airflow's components talk to: the Execution API of
  task processes and of the triggerer. Both servers run the escalation service (each its own
  engine on the one store in the metadata database).
- Server **B** (``stack.base_b``, component ``api-server-b``) is the one ``escalation_default``
  points at: failure callbacks and sensors reach the service there. Killing or stopping B
  leaves Airflow itself running, which is what "one replica died" and "the service is down when
  the callback runs" mean (without any API server no task runs at all).

The policy ``drill`` runs on a fast clock: level 1 at once to two webhook paths, level 2 three
seconds later to a third (``drill_kill``: level 2 after 20 s); the outbox retries after 1 s
doubling to 4 s, 12 attempts, a sending lease of 15 s and a 10 s limit per attempt (the engine's
defaults are 30 s, 900 s, 5, 120 s and 30 s).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import httpx
import sqlalchemy as sa
import yaml
from sqlalchemy.pool import NullPool

from airflow_escalation.demo.local_airflow import LocalAirflow, LocalAirflowError, free_port
from airflow_escalation.demo.sinks import HttpSink
from airflow_escalation.stores import sql_schema

API = "/escalation/api/v1"
DAGS = Path(__file__).resolve().parent / "dags"
JWT_SECRET = "escalation-drills-jwt-secret-0123456789abcdef"
SINK_CONN = "drill_sink"
L1_PATHS = ("/l1/a", "/l1/b")
L2_PATHS = ("/l2",)
L2_DELAY_S = 3.0
LEASE_S = 15.0
JOB_TIMEOUT_S = 10.0
KILL_L2_DELAY_S = 20.0  # policy drill_kill: level 2 well after the kill


def _hook(path: str) -> dict[str, str]:
    return {"type": "webhook", "identifier": path, "conn_id": SINK_CONN}


def _policy(name: str, l2_delay_s: float) -> dict[str, Any]:
    return {
        "name": name,
        "levels": [
            {"level": 1, "targets": [_hook(path) for path in L1_PATHS]},
            {"level": 2, "delay_minutes": l2_delay_s / 60, "targets": [_hook(path) for path in L2_PATHS]},
        ],
    }


POLICIES = {
    "escalation": {
        "default_policy": "drill",
        # the outbox in seconds, not minutes (the engine's defaults: 30 s, 900 s, 5, 120 s, 30 s)
        "scheduler_config": {
            "lease_seconds": LEASE_S,
            "job_timeout_seconds": JOB_TIMEOUT_S,
            "retry_delay_seconds": 1,
            "max_retry_delay_seconds": 4,
            "max_attempts": 12,
        },
        "policies": [_policy("drill", L2_DELAY_S), _policy("drill_kill", KILL_L2_DELAY_S)],
    }
}

# every (level, path) an escalation of policy "drill" is delivered to, before acknowledgement
EXPECTED_STEPS = [(1, p) for p in L1_PATHS] + [(2, p) for p in L2_PATHS]


class DrillStack(LocalAirflow):
    """:class:`LocalAirflow` on PostgreSQL with a second API server; see the module docstring."""

    def __init__(self, home: Path, db_url: str, sink: HttpSink) -> None:
        policies = home / "policies.yaml"
        home.mkdir(parents=True, exist_ok=True)
        policies.write_text(yaml.safe_dump(POLICIES, sort_keys=False))
        self.sink = sink
        super().__init__(
            home,
            dags_folder=DAGS,
            policies_file=policies,
            jwt_secret=JWT_SECRET,
            db_url=db_url,
            extra_env={"AIRFLOW__API__SECRET_KEY": "escalation-drills-secret-key"},
        )
        self.port_b = free_port()
        self.api_ports["api-server-b"] = self.port_b
        self.base_b = f"http://127.0.0.1:{self.port_b}"
        self.spool_dir = home / "spool"
        self.env.update(
            {
                # psycopg 3 for Airflow's async engine too (asyncpg is not installed)
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": db_url,
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__ESCALATION__SPOOL_DIR": str(self.spool_dir),
                "AIRFLOW__API__BASE_URL": self.base,
                # callbacks and sensors reach the service on server B (see the module docstring)
                "AIRFLOW_CONN_ESCALATION_DEFAULT": json.dumps({**self.escalation_connection(), "host": self.base_b}),
                f"AIRFLOW_CONN_{SINK_CONN.upper()}": json.dumps(
                    {"conn_type": "http", "host": "127.0.0.1", "port": sink.port, "schema": "http"}
                ),
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            }
        )
        self.db = sa.create_engine(db_url, poolclass=NullPool)

    # ------------------------------------------------------------------ start
    def start_everything(self) -> dict[str, float]:
        """Migrate, start both API servers and the components; return the seconds each took."""
        timings = {}
        began = time.monotonic()
        self.migrate()
        timings["migrate"] = time.monotonic() - began
        began = time.monotonic()
        self.start_components("dag-processor", "scheduler", "triggerer")
        self.start_api_server("api-server-b", self.port_b, wait=False)  # both start at once
        self.start()
        self.wait_api_server("api-server-b")
        timings["servers up"] = time.monotonic() - began
        return timings

    # ------------------------------------------------------------------ HTTP
    def call(self, method: str, path: str, base: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token('admin')}"}
        return httpx.request(method, f"{base or self.base}{path}", headers=headers, timeout=30, **kwargs)

    def trigger(self, incident: str, base: str | None = None, policy: str = "drill") -> str:
        """Trigger ``incident`` under policy ``drill``; return the record id (201 created, or 200
        when a retried trigger joined the record an earlier attempt created)."""
        r = self.call(
            "POST",
            f"{API}/escalations",
            base,
            json={"incident_id": incident, "context": {"severity": "critical"}, "policy_name": policy},
        )
        assert r.status_code in (200, 201) and r.json()["record"], r.text
        return r.json()["record"]["id"]

    def record(self, incident: str) -> dict | None:
        found = self.call("GET", f"{API}/escalations", params={"incident": incident}).json()["escalations"]
        return self.call("GET", f"{API}/escalations/{found[0]['id']}").json() if found else None

    def trigger_dag(self, dag_id: str) -> str:
        r = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}})
        assert r.status_code in (200, 201), r.text
        return r.json()["dag_run_id"]

    def ti_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        r = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return r.json().get("state") if r.status_code == 200 else None

    # ------------------------------------------------------------------ the store, read directly
    def deliveries(self, record_ids: Iterable[str] | None = None) -> list[dict]:
        table = sql_schema.delivery_table
        query = sa.select(
            table.c.record_id,
            table.c.level,
            table.c.target_key,
            table.c.state,
            table.c.attempts,
            table.c.lease_owner,
            table.c.last_error,
        )
        if record_ids is not None:
            query = query.where(table.c.record_id.in_(list(record_ids)))
        with self.db.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def deliveries_of(self, incident_prefix: str) -> list[dict]:
        """Every delivery of the incidents starting with ``incident_prefix``, with ``incident_id``."""
        table, record = sql_schema.delivery_table, sql_schema.record_table
        query = (
            sa.select(
                record.c.incident_id,
                table.c.record_id,
                table.c.level,
                table.c.target_key,
                table.c.state,
                table.c.attempts,
                table.c.lease_owner,
            )
            .join(record, record.c.id == table.c.record_id)
            .where(record.c.incident_id.like(incident_prefix + "%"))
        )
        with self.db.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def engines_of(self, name: str) -> set[str]:
        """Engine ids a server (``api-server`` = A, or a component name) started, from its log."""
        path = self.log_path if name == "api-server" else self.home / f"{name}.log"
        return set(re.findall(r"escalation engine (\S+) started on", path.read_text(errors="replace")))

    # ------------------------------------------------------------------ waiting
    def check_components(self) -> None:
        try:
            super().check_components()
        except LocalAirflowError as exc:
            raise AssertionError(str(exc)) from None


# --------------------------------------------------------------------------- accounting


@dataclass
class Ledger:
    """What the receiver accepted for a set of incidents, against what it should have."""

    expected: set[tuple[str, int, str]]
    received: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, incidents: Iterable[str], steps: Iterable[tuple[int, str]] = EXPECTED_STEPS) -> "Ledger":
        return cls({(incident, level, path) for incident in incidents for level, path in steps})

    def count(self, sink: HttpSink) -> "Ledger":
        incidents = {key[0] for key in self.expected}
        self.received = Counter(
            (body.get("incident_id"), body.get("level"), path)
            for path, body in list(sink.requests)
            if body.get("incident_id") in incidents
        )
        return self

    @property
    def lost(self) -> list[tuple[str, int, str]]:
        return sorted(self.expected - set(self.received))

    @property
    def duplicated(self) -> dict[tuple[str, int, str], int]:
        return {key: n for key, n in sorted(self.received.items()) if n > 1}

    @property
    def unexpected(self) -> list[tuple[str, int, str]]:
        return sorted(set(self.received) - self.expected)

    def complete(self, sink: HttpSink) -> bool:
        return not self.count(sink).lost


def report(drill: str, ledger: Ledger, explained: dict[tuple[str, int, str], str] | None = None, **figures: Any) -> str:
    """The drill's printed verdict: expected, lost, duplicated (each with why), figures."""
    explained = explained or {}
    lines = [
        f"DRILL {drill}: expected {len(ledger.expected)} (incident, level, target) deliveries, "
        f"received {len(set(ledger.received))} distinct, {sum(ledger.received.values())} in all",
        f"  lost: {len(ledger.lost)}" + (f" {ledger.lost[:10]}" if ledger.lost else " (nothing)"),
        f"  duplicated: {len(ledger.duplicated)}" + ("" if ledger.duplicated else " (nothing)"),
    ]
    for key, n in ledger.duplicated.items():
        lines.append(f"    {key} x{n}: {explained.get(key, 'UNEXPLAINED')}")
    if ledger.unexpected:
        lines.append(f"  unexpected: {ledger.unexpected[:10]}")
    for name, value in figures.items():
        lines.append(
            f"  {name.replace('_', ' ')}: {value:.2f}"
            if isinstance(value, float)
            else f"  {name.replace('_', ' ')}: {value}"
        )
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    return text
