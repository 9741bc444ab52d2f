"""``deferrable=False``: ``EscalationOperator(wait_for=...)`` polls and ``EscalationSensor`` pokes
from the worker (a deployment without a triggerer), run with ``dag.test()``; and ``deferrable``
defaults to ``[operators] default_deferrable`` as for Airflow's own operators."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from test_example_dags import Acker, records, states

pytestmark = pytest.mark.usefixtures("airflow_db")

# dag.test() runs only DAGs of the DAGs folder: these live in a folder of their own
DAGS = """
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_escalation.notifications.escalation import EscalationNotifier
from airflow_escalation.operators.escalation import EscalationOperator
from airflow_escalation.sensors.escalation import EscalationSensor

START = datetime(2024, 1, 1)

with DAG(dag_id="nodefer_operator", schedule=None, start_date=START) as operator_dag:
    EscalationOperator(task_id="escalate", incident_id="{dag_id}.quality", wait_for="acknowledged",
                       timeout=timedelta(minutes=2), poll_interval=0.2, deferrable=False)

with DAG(dag_id="nodefer_timeout", schedule=None, start_date=START) as timeout_dag:
    EscalationOperator(task_id="escalate", incident_id="{dag_id}.quality", wait_for="resolved",
                       timeout=1, poll_interval=0.2, deferrable=False)

with DAG(dag_id="nodefer_sensor", schedule=None, start_date=START) as sensor_dag:

    @task(on_failure_callback=EscalationNotifier(policy_name="production_critical", severity="critical"))
    def load() -> None:
        raise ValueError("empty feed")

    load() >> EscalationSensor(task_id="wait", incident_id="{dag_id}.load", trigger_rule="all_failed",
                               poke_interval=0.2, timeout=120, mode="poke", deferrable=False)
"""


@pytest.fixture(scope="module")
def dags(dag_env, tmp_path_factory):
    from airflow import settings

    folder = tmp_path_factory.mktemp("nodefer_dags")
    path = folder / "nodefer_dags.py"
    path.write_text(DAGS)
    saved_env, saved_folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"], settings.DAGS_FOLDER
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = settings.DAGS_FOLDER = str(folder)
    try:
        spec = importlib.util.spec_from_file_location("nodefer_dags", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"], settings.DAGS_FOLDER = saved_env, saved_folder


def test_operator_waits_in_the_worker(dags, service, clean_spool):
    acker = Acker(service, "nodefer_operator.quality", delay=0.5)
    acker.start()
    try:
        run = dags.operator_dag.test()
    finally:
        acker.stop.set()
    assert states(run) == {"escalate": "success"}
    (record,) = records(service, incident="nodefer_operator.quality")
    assert record["id"] == acker.record_id and record["state"] == "acknowledged"
    (ti,) = run.get_task_instances()
    assert ti.xcom_pull(task_ids="escalate") == record["id"]
    assert ti.next_method is None  # it never deferred


def test_operator_in_the_worker_fails_on_timeout(dags, service, clean_spool):
    run = dags.timeout_dag.test()
    assert states(run) == {"escalate": "failed"}
    (record,) = records(service, incident="nodefer_timeout.quality")
    assert record["state"] == "active"


def test_sensor_pokes_in_the_worker(dags, service, clean_spool):
    acker = Acker(service, "nodefer_sensor.load", delay=0.5)
    acker.start()
    try:
        run = dags.sensor_dag.test()
    finally:
        acker.stop.set()
    assert states(run) == {"load": "failed", "wait": "success"}
    ti = {t.task_id: t for t in run.get_task_instances()}["wait"]
    assert ti.next_method is None  # it never deferred
    assert ti.xcom_pull(task_ids="wait")["id"] == acker.record_id


@pytest.mark.parametrize("configured", ["True", "False"])
def test_deferrable_defaults_to_operators_default_deferrable(configured):
    code = (
        "from airflow_escalation.operators.escalation import EscalationOperator as O\n"
        "from airflow_escalation.sensors.escalation import EscalationSensor as S\n"
        "print(O(task_id='o', wait_for='resolved').deferrable, S(task_id='s', record_id='r').deferrable)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": configured},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [configured, configured]
