"""``airflow-escalation oncall``, ``silence add/list/expire`` and ``override add/list/delete``
against the real service app served over HTTP on a free local port (Airflow's authentication
replaced by a fixed user; the service's own routes, store and engine are the real ones)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI

from airflow_escalation.cli import main
from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig, parse_yaml
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.service.routes import oncall as oncall_routes
from airflow_escalation.stores.memory import InMemoryEscalationStore
from airflow_escalation.testing import FakeClock

from oncall_support import T0
from test_oncall_api import POLICIES, User


@pytest.fixture
def url(monkeypatch):
    async def authorize_write(user, dag_id=None):
        return None

    monkeypatch.setattr(oncall_routes, "authorize_write", authorize_write)
    config = EscalationPolicyConfig.from_dict(parse_yaml(POLICIES))
    engine = EscalationEngine(
        EscalationEngineConfig(
            store=InMemoryEscalationStore(),
            clock=FakeClock(T0),
            scheduler_config=SchedulerConfig(scheduler_type="memory"),
        )
    )
    service = create_app(engine=engine, policy_config=config)
    service.dependency_overrides[auth.require_read] = User
    service.dependency_overrides[auth.require_write] = User
    service.dependency_overrides[auth.read_scope] = auth.DagScope.everything
    # as the API server does: the mounted service's lifespan runs with the root app's
    root = FastAPI(lifespan=lambda _: service.router.lifespan_context(service))
    root.mount("/escalation", service)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def run(capsys, url, *argv):
    code = main([*argv, "--url", url, "--token", "t", "--retries", "0"])
    out, err = capsys.readouterr()
    return code, out, err


def test_oncall(capsys, url):
    code, out, err = run(capsys, url, "oncall", "-o", "plain")
    assert code == 0, err
    assert (
        "oncall-primary" in out and "Alice" in out and "layer:daily" in out and "2026-03-02 08:00:00 UTC → bob" in out
    )
    code, out, err = run(capsys, url, "oncall", "oncall-primary", "--at", "2026-03-02T08:00:00Z")
    assert code == 0, err
    assert out.startswith("oncall-primary: bob (layer:daily) at 2026-03-02 08:00:00 UTC")
    code, out, err = run(capsys, url, "oncall", "nope")
    assert code == 1 and "not found" in err


def test_silence_add_list_expire(capsys, url):
    code, out, err = run(
        capsys, url, "silence", "add", "--dag-id", "etl", "--duration", "2h", "--comment", "deploy", "--json"
    )
    assert code == 0, err
    silence = json.loads(out)
    assert silence["matchers"]["dag_id"] == "etl" and silence["ends_at"] == "2026-03-02T09:00:00+00:00"
    code, out, err = run(capsys, url, "silence", "list", "-o", "plain")
    assert code == 0 and silence["id"] in out and "dag_id=etl" in out and "deploy" in out
    code, out, err = run(capsys, url, "silence", "expire", silence["id"])
    assert code == 0 and f"silence {silence['id']} expired" in out
    code, out, err = run(capsys, url, "silence", "list", "--json")
    assert json.loads(out) == []
    code, out, err = run(capsys, url, "silence", "add", "--dag-id", "etl")
    assert code == 2 and "--duration" in err
    code, out, err = run(capsys, url, "silence", "add", "--duration", "1h")
    assert code == 1 and "at least one matcher" in err


def test_override_add_list_delete(capsys, url):
    code, out, err = run(
        capsys,
        url,
        "override",
        "add",
        "oncall-primary",
        "carol",
        "--start",
        "2026-03-02T07:00:00Z",
        "--end",
        "2026-03-02T10:00:00Z",
        "--json",
    )
    assert code == 0, err
    override = json.loads(out)
    code, out, err = run(capsys, url, "oncall", "oncall-primary")
    assert out.startswith("oncall-primary: carol (override:")
    code, out, err = run(capsys, url, "override", "list", "-o", "plain")
    assert override["id"] in out and "carol" in out
    code, out, err = run(capsys, url, "override", "delete", override["id"])
    assert code == 0 and "removed" in out
