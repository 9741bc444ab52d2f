"""The escalation service app on 127.0.0.1 in a background thread (uvicorn), for ``dag.test()``
tests and the hand-off benchmark.

The real app (``airflow_escalation.service.app.create_app``) on the memory store, with one
difference: instead of asking the Airflow API server's auth manager (there is no API server),
every route checks the bearer token with Airflow's own ``JWTValidator`` and ``[api_auth]
jwt_secret``. So a hook that signs component JWTs is checked for real; a request without a valid
token gets 401/403. A middleware counts requests per ``METHOD path`` (the benchmark's and the
shared-poller tests' measure), and ``fail_next(n)`` makes the next ``n`` requests answer 503.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import uvicorn
from fastapi import Body, Depends, HTTPException, Request

from airflow_escalation.runtime.engine import EscalationEngine, EscalationEngineConfig
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.demo.local_airflow import free_port
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.service import auth
from airflow_escalation.service.app import create_app
from airflow_escalation.service.delivery_log import make_log_handler
from airflow_escalation.stores.memory import InMemoryEscalationStore

JWT_SECRET = "escalation-dag-tests-jwt-secret-0123456789abcdef-0123456789abcdef-0123"  # >= 64 bytes (HS512)

FAST_POLICIES: dict[str, Any] = {
    "escalation": {
        "default_policy": "production_critical",
        "policies": [
            {
                "name": "production_critical",
                "description": "the example policy on a fast clock",
                "severity_filter": ["critical", "high"],
                "triggers": ["unacknowledged"],
                "levels": [
                    {"level": 1, "targets": [{"type": "user", "identifier": "team-lead"}]},
                    {"level": 2, "delay_minutes": 60, "targets": [{"type": "user", "identifier": "eng-manager"}]},
                ],
            },
        ],
    }
}


#: the service account escalation_default logs in as (role USER, like LocalAirflow's)
SERVICE_ACCOUNT, SERVICE_PASSWORD = "airflow-escalation", "escalation-test-password"


def sign(subject: str, role: str, valid_for: float = 600) -> str:
    """A token as the API server issues it (Airflow's JWTGenerator, the fixed secret)."""
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    from airflow_escalation.hooks.escalation import airflow_api_jwt_audience

    generator = JWTGenerator(secret_key=JWT_SECRET, valid_for=valid_for, audience=airflow_api_jwt_audience())
    return generator.generate({"sub": subject, "role": role})


class TokenUser:
    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def get_name(self) -> str:
        return str(self.claims.get("sub"))

    def get_id(self) -> str:
        return str(self.claims.get("sub"))


async def jwt_user(request: Request) -> TokenUser:
    from airflow.api_fastapi.auth.tokens import JWTValidator

    from airflow_escalation.hooks.escalation import airflow_api_jwt_audience

    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise HTTPException(401, "Not authenticated")
    # the API server's secret is fixed here: a test may change the components' secret
    validator = JWTValidator(secret_key=JWT_SECRET, audience=airflow_api_jwt_audience())
    try:
        claims = await validator.avalidated_claims(header.split(" ", 1)[1])
    except Exception as exc:
        raise HTTPException(403, f"Invalid JWT token: {exc}") from None
    return TokenUser(claims)


async def jwt_writer(user: TokenUser = Depends(jwt_user)) -> TokenUser:
    if user.claims.get("role") not in ("OP", "USER", "ADMIN"):
        raise HTTPException(403, "Forbidden")
    return user


class ServiceThread:
    """``with ServiceThread() as service:`` ... ``service.base_url``, ``service.requests``."""

    def __init__(
        self,
        policies: dict[str, Any] | None = None,
        *,
        port: int | None = None,
        check_interval_seconds: float = 1.0,
        access_log: bool = False,
    ) -> None:
        self.policy_config = EscalationPolicyConfig.from_dict(policies or FAST_POLICIES)
        self.store = InMemoryEscalationStore()
        self.engine = EscalationEngine(
            EscalationEngineConfig(
                store=self.store,
                scheduler_config=SchedulerConfig(
                    scheduler_type="asyncio", check_interval_seconds=check_interval_seconds
                ),
                default_notification_handler=make_log_handler(),
            )
        )
        for policy in self.policy_config.policies.values():
            self.engine.register_policy(policy)
        self.app = create_app(engine=self.engine, policy_config=self.policy_config)
        self.app.dependency_overrides[auth.require_read] = jwt_user
        self.app.dependency_overrides[auth.require_write] = jwt_writer
        self.app.dependency_overrides[auth.read_scope] = auth.DagScope.everything

        @self.app.post("/auth/token", status_code=201)
        async def login(body: dict[str, Any] = Body(...)) -> Any:
            """The API server's POST /auth/token, for the service account only."""
            if (body.get("username"), body.get("password")) != (SERVICE_ACCOUNT, SERVICE_PASSWORD):
                raise HTTPException(401, "Invalid credentials")
            return {"access_token": sign(SERVICE_ACCOUNT, "USER")}

        self.requests: collections.Counter[str] = collections.Counter()
        self._fail_next = 0
        self._lock = threading.Lock()

        @self.app.middleware("http")
        async def count(request: Request, call_next: Any) -> Any:
            from fastapi.responses import JSONResponse

            path = request.url.path
            for prefix in ("/api/v1/escalations/",):
                if path.startswith(prefix) and path.count("/") == 4:
                    path = prefix + "{id}"
            with self._lock:
                self.requests[f"{request.method} {path}"] += 1
                failing = self._fail_next > 0
                if failing:
                    self._fail_next -= 1
            if failing:
                return JSONResponse({"detail": "injected failure"}, status_code=503)
            return await call_next(request)

        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._access_log = access_log

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ServiceThread:
        # the app alone (its lifespan starts the engine); the connection's api_path says where
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=self._access_log, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="escalation-service", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the escalation service thread died")
            if time.monotonic() > deadline:
                raise RuntimeError("the escalation service did not start within 30 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers
    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail_next = n

    def failures_left(self) -> int:
        """How many of the injected 503s no request has had yet."""
        with self._lock:
            return self._fail_next

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def connection(self, **extra: Any) -> dict[str, Any]:
        """The ``escalation_default`` connection as JSON (for ``AIRFLOW_CONN_...``)."""
        return {
            "conn_type": "escalation",
            "host": self.base_url,
            "login": SERVICE_ACCOUNT,
            "password": SERVICE_PASSWORD,
            "extra": {"api_path": "/api/v1", "retries": 0, **extra},
        }

    def client(self) -> Any:
        """An ``EscalationClient`` of a person ("tester", role OP) acting on escalations."""
        from airflow_escalation.client.http import EscalationClient

        return EscalationClient(
            self.base_url, api_path="/api/v1", token_provider=lambda: sign("tester", "OP"), retries=0
        )
