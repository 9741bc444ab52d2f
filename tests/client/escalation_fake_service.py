"""A small but real HTTP server that speaks the escalation service's REST contract (docs/api.md).

It stands in for the network peer of the client: it listens on 127.0.0.1, answers the contract's
routes from an in-memory table, authenticates like the API server (``POST /auth/token`` tokens,
or JWTs signed with a shared secret) and can be told to misbehave for the next requests
(``fail_next(500, 500)``, ``"close"`` to drop the connection unanswered, ``401``, ``("sleep", s)``).
The service engineer's real FastAPI app is tested against ``airflow api-server`` elsewhere.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from airflow_escalation.core.models import EscalationPolicy

API = "/escalation/api/v1"
JWT_SECRET = "test-jwt-secret-for-escalation-client-0123456789-0123456789-abcdef"  # >= 64 bytes for HS512
OPEN = {"pending", "active", "escalating", "acknowledged"}
ACTIVE = {"pending", "active", "escalating"}

DEFAULT_POLICY = {
    "name": "production_critical",
    "description": "Production critical alerts",
    "severity_filter": ["critical", "high"],
    "levels": [
        {
            "level": 1,
            "delay_minutes": 0,
            "repeat_count": 2,
            "repeat_interval_minutes": 5,
            "targets": [
                {"type": "user", "identifier": "team-lead", "name": "Team Lead"},
                {"type": "channel", "identifier": "#alerts"},
            ],
        },
        {"level": 2, "delay_minutes": 15, "targets": [{"type": "user", "identifier": "eng-manager"}]},
        {"level": 3, "delay_minutes": 30, "targets": [{"type": "user", "identifier": "director"}]},
    ],
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class FakeEscalationService:
    users: dict[str, str] = field(default_factory=lambda: {"admin": "secret"})
    jwt_secret: str | None = None
    jwt_audience: str = "apache-airflow"
    require_auth: bool = True

    def __post_init__(self) -> None:
        self.policies: dict[str, dict] = {DEFAULT_POLICY["name"]: EscalationPolicy.from_dict(DEFAULT_POLICY).to_dict()}
        self.records: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}  # login token -> username
        self.faults: deque[Any] = deque()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeEscalationService:
        service = self

        class Handler(_Handler):
            pass

        Handler.service = service
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, *actions: Any) -> None:
        """Queue misbehaviours for the next requests, one per request, in order."""
        self.faults.extend(actions)

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def requests(self, path: str | None = None, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if (path is None or s.path == path) and (method is None or s.method == method)]

    def add_record(self, **fields: Any) -> dict:
        record = self._new_record(
            fields.pop("incident_id", "inc-seeded"),
            fields.pop("policy_name", "production_critical"),
            fields.pop("context", {}),
            "seed",
        )
        record.update(fields)
        return record

    # ------------------------------------------------------------------ auth

    def _identity(self, headers: dict[str, str]) -> tuple[int, str] | str:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return 401, "Not authenticated"
        token = auth[7:].strip()
        if token in self.tokens:
            return self.tokens[token]
        if self.jwt_secret and token.count(".") == 2:
            try:
                claims = jwt.decode(
                    token,
                    self.jwt_secret,
                    algorithms=["HS512"],
                    audience=self.jwt_audience,
                    options={"require": ["exp", "iat", "nbf"]},
                )
            except jwt.ExpiredSignatureError:
                return 401, "Token Expired"
            except jwt.InvalidTokenError:
                return 403, "Invalid JWT token"
            return claims["sub"]
        return 401, "Token Expired"

    # ------------------------------------------------------------------ records

    def _new_record(self, incident: str, policy: str, context: dict, actor: str) -> dict:
        now = _now()
        record = {
            "id": uuid.uuid4().hex,
            "incident_id": incident,
            "policy_name": policy,
            "current_level": 1,
            "state": "active",
            "created_at": now,
            "updated_at": now,
            "acknowledged_at": None,
            "acknowledged_by": None,
            "resolved_at": None,
            "resolved_by": None,
            "next_escalation_at": now,
            "next_action": "escalate",
            "escalation_count": 0,
            "notification_count": 2,
            "context": context,
            "metadata": {},
            "version": 1,
            "trigger_type": "unacknowledged",
            "closed_at": None,
            "history": [  # the service's shape: triggered, then level 1's notification
                {"event": "triggered", "at": now, "actor": actor, "state": "active", "level": 1},
                {
                    "event": "notified",
                    "at": now,
                    "actor": "system",
                    "state": "active",
                    "level": 1,
                    "details": {"round": 0, "targets": ["user:team-lead"]},
                },
            ],
            "deliveries": [
                {
                    "id": uuid.uuid4().hex,
                    "record_id": "",
                    "level": 1,
                    "round": 0,
                    "target": {
                        "type": "user",
                        "identifier": "team-lead",
                        "name": "Team Lead",
                        "priority": 0,
                        "metadata": {},
                    },
                    "state": "sent",
                    "attempts": 1,
                    "created_at": now,
                    "updated_at": now,
                    "next_attempt_at": None,
                    "sent_at": now,
                    "last_error": None,
                },
            ],
        }
        record["deliveries"][0]["record_id"] = record["id"]
        self.records[record["id"]] = record
        return record

    @staticmethod
    def _public(record: dict, *, deliveries: bool = False) -> dict:
        out = {k: v for k, v in record.items() if k != "deliveries"}
        if deliveries:
            out["deliveries"] = record["deliveries"]
        return out

    def _result(
        self,
        record: dict | None,
        action: str,
        *,
        success: bool = True,
        code: str = "ok",
        message: str = "",
        error: str | None = None,
    ) -> dict:
        return {
            "success": success,
            "action": action,
            "code": code,
            "message": message or f"{action} {'succeeded' if success else 'failed'}",
            "error": error,
            "record": self._public(record) if record else None,
            "targets_notified": [
                {"type": "user", "identifier": "team-lead", "name": "Team Lead", "priority": 0, "metadata": {}}
            ]
            if success and action == "trigger"
            else [],
        }

    # ------------------------------------------------------------------ routes

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: dict[str, str]
    ) -> tuple[int, Any]:
        if path == "/auth/token" and method == "POST":
            if not isinstance(body, dict) or self.users.get(body.get("username")) != body.get("password"):
                return 401, {"detail": "Invalid credentials"}
            token = f"tok-{uuid.uuid4().hex[:12]}"
            self.tokens[token] = body["username"]
            return 201, {"access_token": token}
        if not path.startswith(API):
            return 404, {"detail": "Not Found"}
        route = path[len(API) :]
        actor = "anonymous"
        if self.require_auth:
            who = self._identity(headers)
            if isinstance(who, tuple):
                return who[0], {"detail": who[1]}
            actor = who
        with self._lock:
            return self._route(method, route, query, body, actor)

    def _route(self, method: str, route: str, query: dict[str, list[str]], body: Any, actor: str) -> tuple[int, Any]:
        if route == "/health" and method == "GET":
            return 200, {"status": "ok", "engine_id": "fake-engine", "store": "memory", "running": True}
        if route == "/stats" and method == "GET":
            records = list(self.records.values())
            total = len(records)
            acked = sum(1 for r in records if r["acknowledged_at"])
            resolved = sum(1 for r in records if r["state"] == "resolved")
            return 200, {
                "total_escalations": total,
                "active_escalations": sum(r["state"] in ACTIVE for r in records),
                "acknowledged_count": acked,
                "resolved_count": resolved,
                "timed_out_count": 0,
                "cancelled_count": sum(r["state"] == "cancelled" for r in records),
                "failed_count": 0,
                "acknowledgment_rate": acked / total if total else 0.0,
                "resolution_rate": resolved / total if total else 0.0,
                "avg_time_to_acknowledge_seconds": 0.0,
                "avg_time_to_resolve_seconds": 0.0,
                "escalations_by_level": {"1": total} if total else {},
                "escalations_by_policy": {"production_critical": total} if total else {},
                "notifications_sent": 2 * total,
                "notifications_by_target": {"user:team-lead": total},
                "notifications_failed": 0,
            }
        if route == "/policies" and method == "GET":
            return 200, {"policies": list(self.policies.values())}
        if route == "/policies/validate" and method == "POST":
            return self._validate(body)
        if (m := re.fullmatch(r"/policies/([^/]+)", route)) and method == "GET":
            name = m.group(1)
            if name not in self.policies:
                return 404, {"detail": f"policy {name!r} not found"}
            return 200, self.policies[name]
        if route == "/escalations" and method == "POST":
            return self._trigger(body, actor)
        if route == "/escalations" and method == "GET":
            return self._list(query)
        if (m := re.fullmatch(r"/escalations/([^/]+)", route)) and method == "GET":
            record = self.records.get(m.group(1))
            if record is None:
                return 404, {"detail": f"escalation {m.group(1)!r} not found"}
            return 200, self._public(record, deliveries=True)
        if (
            m := re.fullmatch(r"/escalations/([^/]+)/(acknowledge|resolve|cancel|escalate)", route)
        ) and method == "POST":
            return self._act(m.group(1), m.group(2), body or {}, actor)
        return 404, {"detail": "Not Found"}

    def _validate(self, body: Any) -> tuple[int, Any]:
        from airflow_escalation.runtime.policy_config import EscalationPolicyConfig, load_yaml

        if not isinstance(body, dict) or ("policy" in body) == ("yaml" in body):
            return 422, {"detail": "give exactly one of policy or yaml"}
        try:
            if "policy" in body:
                names = [EscalationPolicy.from_dict(body["policy"]).name]
            else:
                names = list(EscalationPolicyConfig.from_dict(load_yaml(body["yaml"])).policies)
        except Exception as exc:
            return 200, {"valid": False, "errors": [str(exc)], "policies": []}
        return 200, {"valid": True, "errors": [], "policies": names}

    def _trigger(self, body: Any, actor: str) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("incident_id"), str):
            return 422, {
                "detail": [{"type": "missing", "loc": ["body", "incident_id"], "msg": "Field required", "input": body}]
            }
        context = body.get("context") or {}
        if body.get("policy") is not None:
            try:
                policy = EscalationPolicy.from_dict(body["policy"]).to_dict()
            except ValueError as exc:
                return 422, {"detail": f"policy: {exc}"}
        else:
            name = body.get("policy_name") or "production_critical"
            if name not in self.policies:
                return 404, {"detail": f"policy {name!r} not found"}
            policy = self.policies[name]
        severity = str(context.get("severity", "")).lower()
        if policy["severity_filter"] and severity not in policy["severity_filter"]:
            return 200, self._result(
                None,
                "trigger",
                success=False,
                code="filtered",
                error=f"severity {severity or None!r} is not in the policy's severity_filter",
            )
        for record in self.records.values():
            if (
                record["incident_id"] == body["incident_id"]
                and record["policy_name"] == policy["name"]
                and record["state"] in OPEN
            ):
                return 200, self._result(record, "trigger_existing")
        record = self._new_record(body["incident_id"], policy["name"], context, actor)
        if body.get("trigger_type"):
            record["trigger_type"] = body["trigger_type"]
        return 201, self._result(record, "trigger")

    def _list(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        try:
            limit = int(query.get("limit", ["50"])[0])
            offset = int(query.get("offset", ["0"])[0])
        except ValueError:
            return 422, {"detail": "limit/offset: expected integers"}
        if not 1 <= limit <= 500:
            return 422, {"detail": [{"loc": ["query", "limit"], "msg": "Input should be less than or equal to 500"}]}
        rows = sorted(self.records.values(), key=lambda r: r["created_at"], reverse=True)
        if states := query.get("state"):
            rows = [r for r in rows if r["state"] in states]
        if policy := query.get("policy"):
            rows = [r for r in rows if r["policy_name"] == policy[0]]
        if incident := query.get("incident"):
            rows = [r for r in rows if r["incident_id"] == incident[0]]
        if dag_id := query.get("dag_id"):
            rows = [r for r in rows if r["context"].get("dag_id") == dag_id[0]]
        if query.get("active") == ["true"]:
            rows = [r for r in rows if r["state"] in ACTIVE]
        page = rows[offset : offset + limit]
        return 200, {
            "escalations": [self._public(r) for r in page],
            "total": len(rows),
            "limit": limit,
            "offset": offset,
        }

    def _act(self, record_id: str, action: str, body: dict, actor: str) -> tuple[int, Any]:
        record = self.records.get(record_id)
        if record is None:
            return 404, {"detail": f"escalation {record_id!r} not found"}
        state = record["state"]
        now = _now()
        if action == "acknowledge":
            if state not in ACTIVE:
                return 409, {"detail": f"cannot acknowledge an escalation in state {state!r}"}
            record.update(state="acknowledged", acknowledged_at=now, acknowledged_by=actor)
        elif action == "resolve":
            if state not in OPEN:
                return 409, {"detail": f"cannot resolve an escalation in state {state!r}"}
            record.update(state="resolved", resolved_at=now, resolved_by=actor, closed_at=now)
        elif action == "cancel":
            if state not in OPEN:
                return 409, {"detail": f"cannot cancel an escalation in state {state!r}"}
            record.update(state="cancelled", closed_at=now)
        else:
            if state not in ACTIVE or (record["current_level"] >= 3 and not body.get("force")):
                return 409, {
                    "detail": f"cannot escalate an escalation in state {state!r} at level {record['current_level']}"
                }
            body = {**body, "to_level": min(3, record["current_level"] + 1)}  # the event names the climb
            record.update(state="escalating")
            record["escalation_count"] += 1
        details = {k: v for k, v in body.items() if v not in (None, "", False)}
        event = {"event": action, "at": now, "actor": actor, "state": record["state"], "level": record["current_level"]}
        if action == "escalate":
            record["current_level"] = details["to_level"]
        if details:
            event["details"] = details
        record["history"].append(event)
        record["updated_at"] = now
        record["version"] += 1
        return 200, self._result(record, action)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    service: FakeEscalationService

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        svc = self.service
        svc.seen.append(Seen(method, parts.path, parse_qs(parts.query), headers, body, time.monotonic()))
        fault = svc.faults.popleft() if svc.faults else None
        extra_headers: dict[str, str] = {}
        if isinstance(fault, tuple) and fault[0] == "sleep":
            time.sleep(fault[1])
            fault = None
        if fault == "close":
            self.close_connection = True
            return
        if isinstance(fault, tuple) and fault[0] == "retry-after":
            status, payload = fault[1], {"detail": "slow down"}
            extra_headers["Retry-After"] = str(fault[2])
        elif isinstance(fault, int):
            status, payload = fault, {"detail": f"injected {fault}"}
        else:
            status, payload = svc.handle(method, parts.path, parse_qs(parts.query), body, headers)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra_headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
