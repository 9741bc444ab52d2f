"""Fixtures of the DAG-layer tests: a migrated metadata DB for ``dag.test()``, the escalation
service in a thread (real app, memory store, JWT checked with Airflow's validator), and the
environment the task processes of ``dag.test()`` read (connection, JWT secret, spool dir).

Airflow reads AIRFLOW_HOME when first imported: keep the tests away from ~/airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="escalation-dags-tests-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest

from escalation_service_thread import JWT_SECRET, ServiceThread

from dag_helpers import EXAMPLES

AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata DB this process's Airflow is configured with, migrated once."""
    from airflow import settings

    url = settings.SQL_ALCHEMY_CONN
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
    done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return url


@pytest.fixture(scope="module")
def dag_env(tmp_path_factory):
    """Environment every test here runs with: JWT secret, examples as the DAGs folder, a spool dir."""
    spool = tmp_path_factory.mktemp("spool")
    values = {
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
        "AIRFLOW__ESCALATION__SPOOL_DIR": str(spool),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    from airflow import settings

    # read once when airflow.settings is imported (the dags-folder bundle's path)
    saved_folder, settings.DAGS_FOLDER = settings.DAGS_FOLDER, str(EXAMPLES)
    try:
        yield {"spool_dir": spool, **values}
    finally:
        settings.DAGS_FOLDER = saved_folder
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def service(dag_env):
    """The escalation service on 127.0.0.1, and ``escalation_default`` pointing at it."""
    with ServiceThread() as svc:
        saved = os.environ.get("AIRFLOW_CONN_ESCALATION_DEFAULT")
        os.environ["AIRFLOW_CONN_ESCALATION_DEFAULT"] = json.dumps(svc.connection())
        try:
            yield svc
        finally:
            if saved is None:
                os.environ.pop("AIRFLOW_CONN_ESCALATION_DEFAULT", None)
            else:
                os.environ["AIRFLOW_CONN_ESCALATION_DEFAULT"] = saved


@pytest.fixture
def clean_spool(dag_env):
    """An empty spool directory before and after the test."""
    import shutil

    spool = Path(dag_env["spool_dir"])

    def wipe():
        for child in spool.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    wipe()
    yield spool
    wipe()
