"""`make demo`: the example DAGs on a real local Airflow, a task failing, the escalation climbing.

Starts Airflow (api-server with the escalation service, scheduler, dag-processor, triggerer; each
its own process on 127.0.0.1; SQLite metadata database; LocalExecutor) in a fresh home, with the
example DAGs and the spec's ``production_critical`` policy on a clock ``--speed`` times faster
(60: one policy minute is one second). Targets are delivered through ordinary Airflow
connections: e-mail to a local SMTP server, every other target to a local webhook receiver.
Then it triggers ``escalation_on_failure``, whose task fails; its ``on_failure_callback`` starts
the escalation, and every notification and state change is printed as it happens.

Interactive (a terminal on stdin): after the climb it keeps Airflow running and prints what you
do in the UI (acknowledge, resolve) until Ctrl-C. Otherwise, or with ``--exit``, it acknowledges
and resolves the escalation through the REST API itself and exits: 0 when the whole climb was
seen, 1 when it was not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from airflow_escalation.channels.message import UI_RECORD_PATH
from airflow_escalation.core.types import ACTIVE_STATE_VALUES
from airflow_escalation.demo import EXAMPLES, POLICY_FILE
from airflow_escalation.demo.local_airflow import LocalAirflow, LocalAirflowError, free_port, stop_leftovers
from airflow_escalation.demo.policies import demo_policies
from airflow_escalation.demo.sinks import HttpSink, SmtpSink
from airflow_escalation.demo.timeline import Timeline, say

DAG_ID, TASK_ID = "escalation_on_failure", "load_orders"
INCIDENT = f"{DAG_ID}.{TASK_ID}"  # the notifier's default incident key
API = "/escalation/api/v1"
PASSWORDS = {"admin": "admin", "viewer": "viewer"}
MARKER = ".airflow-escalation-demo"  # only a home holding it is wiped on the next run
WEBHOOK_CONN, SMTP_CONN = "demo_webhook", "demo_smtp"
COMPONENTS = ("dag-processor", "scheduler", "triggerer")


class DemoFailed(RuntimeError):
    pass


def wait_for(
    fetch: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float,
    what: str,
    airflow: LocalAirflow,
    interval: float = 0.5,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        airflow.check_components()
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what}: not within {timeout:.0f} s (logs in {airflow.home})")
        time.sleep(interval)


class Demo:
    def __init__(self, home: Path, port: int, speed: float, interactive: bool) -> None:
        self.home, self.speed, self.interactive = home, speed, interactive
        self.timeline = Timeline(speed)
        self.webhook = HttpSink(on_receive=self.timeline.on_webhook)
        self.smtp = SmtpSink(on_receive=self.timeline.on_mail)
        policies = demo_policies(POLICY_FILE, speed=speed, webhook_conn_id=WEBHOOK_CONN, smtp_conn_id=SMTP_CONN)
        self.top_level = max(level["level"] for level in policies["escalation"]["policies"][0]["levels"])
        policies_file = home / "policies.yaml"
        policies_file.write_text(yaml.safe_dump(policies, sort_keys=False))
        self.airflow = LocalAirflow(
            home,
            port=port,
            dags_folder=EXAMPLES,
            policies_file=policies_file,
            passwords=PASSWORDS,
            extra_env=self._env(port),
        )

    def _env(self, port: int) -> dict[str, str]:
        base = f"http://127.0.0.1:{port}"
        return {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__ESCALATION__SPOOL_DIR": str(self.home / "spool"),
            # escalation_default (the service account's login) comes from LocalAirflow
            f"AIRFLOW_CONN_{WEBHOOK_CONN.upper()}": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": self.webhook.port, "schema": "http"}
            ),
            f"AIRFLOW_CONN_{SMTP_CONN.upper()}": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": self.smtp.port,
                    "extra": {
                        "from_email": "airflow@example.com",
                        "disable_ssl": True,
                        "disable_tls": True,
                        "timeout": 5,
                        "retry_limit": 0,
                    },
                }
            ),
        }

    # ------------------------------------------------------------------ steps
    def start_airflow(self) -> None:
        af = self.airflow
        say(f"Airflow home {af.home} (SQLite, LocalExecutor); logs: {af.home}/*.log")
        began = time.monotonic()
        af.migrate()
        say(
            f"  metadata database migrated (Airflow's tables and the escalation tables) in "
            f"{time.monotonic() - began:.0f} s"
        )
        began = time.monotonic()
        af.start_components(*COMPONENTS)
        af.start()
        say(
            f"  api-server (with the escalation service), {', '.join(COMPONENTS)} up in "
            f"{time.monotonic() - began:.0f} s"
        )
        wait_for(
            lambda: af.get(f"/api/v2/dags/{DAG_ID}").status_code,
            lambda code: code == 200,
            120,
            f"the dag-processor parsing {DAG_ID}",
            af,
        )
        dags = af.get("/api/v2/dags", params={"tags": "escalation"}).json()["dags"]
        say(f"  example DAGs from {EXAMPLES}: {', '.join(sorted(d['dag_id'] for d in dags))}")
        self.print_access()

    def print_access(self, record_id: str | None = None) -> None:
        base = self.airflow.base
        say()
        say(f"  Airflow UI    {base}/    login admin / admin  (viewer / viewer can look, not act)")
        say(f"  Escalations   {base}/plugin/escalations")
        if record_id:  # the page inside Airflow's UI (the Escalations view's frame follows the path)
            say(f"  This one      {base}{UI_RECORD_PATH}{record_id}")
            if link := self.timeline.one_click.get("acknowledge"):
                say(f"  One-click     {link}")
        say()

    def fail_the_task(self) -> str:
        af = self.airflow
        r = af.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
        if r.status_code not in (200, 201):
            raise DemoFailed(f"triggering {DAG_ID} failed: HTTP {r.status_code} {r.text[:300]}")
        run_id = r.json()["dag_run_id"]
        say(f"Triggered {DAG_ID} ({run_id}); its task {TASK_ID} raises ValueError.")
        ti = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"
        wait_for(lambda: af.get(ti).json().get("state"), lambda state: state == "failed", 180, f"{TASK_ID} failing", af)
        handoff = af.handoff_ms(DAG_ID, TASK_ID, run_id)
        say(
            f"  {TASK_ID} failed; its on_failure_callback (EscalationNotifier) handed the incident to the "
            f"service{f' in {handoff} ms' if handoff is not None else ''}."
        )
        record = wait_for(self._find_record, bool, 60, "the escalation of the failed task", af)
        ctx = record["context"]
        say(
            f"  escalation {record['id']}: incident {record['incident_id']}, severity {ctx.get('severity')}, "
            f"policy {record['policy_name']}"
        )
        say(f"  exception: {ctx.get('exception')}")
        say()
        return record["id"]

    def _find_record(self) -> dict | None:
        found = self.airflow.get(f"{API}/escalations", params={"incident": INCIDENT}).json()["escalations"]
        return self.record(found[0]["id"]) if found else None

    def record(self, record_id: str) -> dict[str, Any]:
        return self.airflow.get(f"{API}/escalations/{record_id}").json()

    def follow(self, record_id: str, until: Callable[[dict], bool], timeout: float | None) -> dict:
        """Print the timeline as it grows until ``until(record)`` (or forever when no timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            received = self.timeline.received()
            record = self.record(record_id)
            self.timeline.print_new(record, received)
            if until(record):
                self.timeline.print_new(record, self.timeline.received())  # what its last step sent
                return record
            self.airflow.check_components()
            if deadline is not None and time.monotonic() > deadline:
                raise DemoFailed(
                    f"the escalation did not get there in {timeout:.0f} s: state {record['state']}, "
                    f"level {record['current_level']} (logs in {self.home})"
                )
            time.sleep(0.4)

    def top_reached(self, record: dict) -> bool:
        if record["state"] not in ACTIVE_STATE_VALUES:
            return True  # acknowledged, resolved, … by someone in the UI
        top = [d for d in record["deliveries"] if d["level"] == self.top_level]
        return bool(top) and all(d["state"] in ("sent", "failed", "unknown") for d in top)

    def climb(self, record_id: str) -> dict:
        say(
            f"The escalation climbs (policy production_critical, {self.speed:g}x: level 2 after "
            f"{15 * 60 / self.speed:g} s, level 3 {30 * 60 / self.speed:g} s later):"
        )
        # the ladder takes 45 policy minutes; leave room for a slow machine
        return self.follow(record_id, self.top_reached, timeout=45 * 60 / self.speed + 120)

    def acknowledge_and_resolve(self, record_id: str) -> dict:
        for action, body in (
            ("acknowledge", {"note": "the demo acknowledged through the REST API"}),
            ("resolve", {"note": "feed restored"}),
        ):
            r = self.airflow.post(f"{API}/escalations/{record_id}/{action}", json=body)
            if r.status_code != 200:
                raise DemoFailed(f"{action} failed: HTTP {r.status_code} {r.text[:300]}")
        return self.follow(record_id, lambda rec: rec["state"] == "resolved", timeout=30)

    def summary(self, record: dict) -> None:
        sent = [d for d in record["deliveries"] if d["state"] == "sent"]
        by_level = {level: len([d for d in sent if d["level"] == level]) for level in range(1, self.top_level + 1)}
        say()
        say(
            f"{len(sent)} notifications sent ({', '.join(f'level {k}: {v}' for k, v in by_level.items())}); "
            f"the webhook receiver got {len(self.webhook.requests)}, the SMTP server "
            f"{len(self.smtp.messages)}; state {record['state']}."
        )

    def run(self) -> bool:
        self.start_airflow()
        record_id = self.fail_the_task()
        record = self.climb(record_id)
        reached = record["current_level"] == self.top_level
        say()
        if not reached:
            say(
                f"Stopped at level {record['current_level']}: {record['state']} by "
                f"{record.get('acknowledged_by') or record.get('resolved_by')}."
            )
        elif self.interactive:
            say(f"Nobody acknowledged: level {self.top_level} was told. Acknowledge or resolve it in the UI:")
        else:  # nobody at a terminal to do it: the demo acts itself, and says so
            say(f"Nobody acknowledged: level {self.top_level} was told. The demo now acknowledges and resolves it")
            say("through the REST API (run it in a terminal to do that yourself in the UI):")
        self.print_access(record_id)
        if not self.interactive:
            record = self.acknowledge_and_resolve(record_id)
            self.summary(record)
            return reached and record["state"] == "resolved"
        say("Airflow keeps running; what you do there shows up here. Ctrl-C stops it.")
        self.follow(record_id, lambda rec: False, timeout=None)
        return True

    def stop(self) -> None:
        self.airflow.stop_all()
        self.webhook.stop()
        self.smtp.stop()


def prepare_home(home: Path) -> Path:
    home = home.resolve()
    if home.exists():
        if not (home / MARKER).exists():
            raise SystemExit(f"{home} exists and is not a demo home; choose another --home")
        if stopped := stop_leftovers(home):
            say(f"stopped the Airflow processes a previous demo left running (pids {stopped})")
        shutil.rmtree(home)  # each run starts fresh
    home.mkdir(parents=True)
    (home / MARKER).write_text("made by `python -m airflow_escalation.demo`; removed by its next run\n")
    return home


def _stop_on_sigterm(*_: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP stop Airflow as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_escalation.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--home", type=Path, default=Path(".demo"), help="Airflow home, wiped and recreated (default: ./.demo)"
    )
    parser.add_argument("--port", type=int, default=8080, help="API server port (another when taken)")
    parser.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="how much faster the policy's clock runs (default 60: a minute per second)",
    )
    parser.add_argument(
        "--exit",
        action="store_true",
        help="acknowledge and resolve through the REST API after the climb, then stop "
        "(the default when stdin is not a terminal)",
    )
    args = parser.parse_args(argv)
    if not EXAMPLES.is_dir():
        raise SystemExit(f"the example DAGs are not at {EXAMPLES}: reinstall airflow-provider-escalation")
    interactive = sys.stdin.isatty() and not args.exit
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a closed terminal stops Airflow too
        signal.signal(sig, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background
    demo = Demo(prepare_home(args.home), free_port(args.port), args.speed, interactive)
    try:
        return 0 if demo.run() else 1
    except KeyboardInterrupt:
        say("\nstopping Airflow …")
        return 0
    except (DemoFailed, LocalAirflowError) as exc:
        say(f"\ndemo failed: {exc}")
        return 1
    finally:
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
