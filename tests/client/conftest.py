"""Fixtures of the client, hook and CLI tests: a real local HTTP server speaking the contract."""

from __future__ import annotations

import os
import tempfile

# Airflow reads AIRFLOW_HOME when first imported: keep the tests away from ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="escalation-client-tests-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest

from escalation_fake_service import JWT_SECRET, FakeEscalationService


@pytest.fixture
def service():
    svc = FakeEscalationService(jwt_secret=JWT_SECRET).start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def open_service():
    """A service that needs no authentication."""
    svc = FakeEscalationService(require_auth=False).start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def dead_url():
    """A URL nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("ESCALATION_", "AIRFLOW_CONN_", "AIRFLOW__API_AUTH__", "AIRFLOW__API__JWT")):
            monkeypatch.delenv(name, raising=False)
