"""EscalationClient against a real local HTTP server: routes, retries, error mapping, token exchange."""

from __future__ import annotations

import asyncio
import sys

import pytest

from airflow_escalation.client import (
    EscalationAPIError,
    EscalationAuthError,
    EscalationClient,
    EscalationConflict,
    EscalationNotFound,
    EscalationServiceUnavailable,
    as_deliveries,
    as_policy,
    as_record,
    as_result,
    as_stats,
    split_base_url,
)

FAST = {"backoff": 0.01, "timeout": 2.0}


def login_client(service, **kwargs) -> EscalationClient:
    return EscalationClient(service.url, username="admin", password="secret", **{**FAST, **kwargs})


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("given", "airflow", "api"),
    [
        ("http://localhost:8080", "http://localhost:8080", "http://localhost:8080/escalation/api/v1"),
        ("localhost:8080/", "http://localhost:8080", "http://localhost:8080/escalation/api/v1"),
        (
            "https://af.example.com/airflow",
            "https://af.example.com/airflow",
            "https://af.example.com/airflow/escalation/api/v1",
        ),
        (
            "https://af.example.com/airflow/escalation",
            "https://af.example.com/airflow",
            "https://af.example.com/airflow/escalation/api/v1",
        ),
        ("http://h:1/escalation/api/v1/", "http://h:1", "http://h:1/escalation/api/v1"),
    ],
)
def test_split_base_url(given, airflow, api):
    assert split_base_url(given) == (airflow, api)


@pytest.mark.parametrize("bad", ["", "   ", "ftp://x", "http://x/?a=1"])
def test_split_base_url_rejects(bad):
    with pytest.raises(ValueError, match="base_url"):
        split_base_url(bad)


def test_constructor_validation():
    with pytest.raises(ValueError, match="at most one"):
        EscalationClient("http://x", token="t", username="u", password="p")
    with pytest.raises(ValueError, match="go together"):
        EscalationClient("http://x", username="u")
    with pytest.raises(ValueError, match="timeout"):
        EscalationClient("http://x", timeout=0)
    with pytest.raises(ValueError, match="retries"):
        EscalationClient("http://x", retries=-1)
    client = EscalationClient("http://x:1", username="u", password="p")
    assert client.token_url == "http://x:1/auth/token"
    assert "auth=password" in repr(client)


# --------------------------------------------------------------------------- every route


def test_every_route_sync(service):
    with login_client(service) as client:
        created = client.trigger(
            "orders-etl:1", {"dag_id": "orders_etl"}, policy_name="production_critical", severity="critical"
        )
        assert created["success"] is True and created["action"] == "trigger" and created["code"] == "ok"
        record = created["record"]
        assert record["context"] == {"dag_id": "orders_etl", "severity": "critical"}
        assert record["history"][0]["actor"] == "admin"  # who acted is the authenticated identity

        joined = client.trigger("orders-etl:1", {"severity": "critical"})
        assert joined["action"] == "trigger_existing" and joined["record"]["id"] == record["id"]

        refused = client.trigger("orders-etl:2", {"severity": "low"})
        assert refused["success"] is False and refused["code"] == "filtered"

        page = client.list_escalations(
            ["active", "escalating"], policy="production_critical", dag_id="orders_etl", active=True, limit=10, offset=0
        )
        assert page["total"] == 1 and page["escalations"][0]["id"] == record["id"]
        seen = service.requests("/escalation/api/v1/escalations", "GET")[-1]
        assert seen.query == {
            "state": ["active", "escalating"],
            "policy": ["production_critical"],
            "dag_id": ["orders_etl"],
            "active": ["true"],
            "limit": ["10"],
            "offset": ["0"],
        }

        detail = client.get_escalation(record["id"])
        assert detail["deliveries"][0]["state"] == "sent"

        escalated = client.escalate(record["id"], force=True)
        assert escalated["record"]["current_level"] == 2
        assert service.requests(f"/escalation/api/v1/escalations/{record['id']}/escalate")[-1].body == {"force": True}

        acked = client.acknowledge(record["id"], note="on it")
        assert acked["record"]["state"] == "acknowledged" and acked["record"]["acknowledged_by"] == "admin"
        assert service.seen[-1].body == {"note": "on it"}

        resolved = client.resolve(record["id"])
        assert resolved["record"]["state"] == "resolved"
        assert service.seen[-1].body == {}

        other = client.trigger("orders-etl:3", severity="high")["record"]
        cancelled = client.cancel(other["id"], reason="false alarm")
        assert cancelled["record"]["state"] == "cancelled"
        assert service.seen[-1].body == {"reason": "false alarm"}

        stats = client.stats()
        assert stats["total_escalations"] == 2 and 0 <= stats["resolution_rate"] <= 1

        policies = client.policies()
        assert [p["name"] for p in policies] == ["production_critical"]
        assert client.policy("production_critical")["levels"][1]["delay_minutes"] == 15

        assert client.validate_policy(policies[0]) == {"valid": True, "errors": [], "policies": ["production_critical"]}
        bad = client.validate_policy(yaml="policies:\n  - name: x\n    levels: []\n")
        assert bad["valid"] is False and "levels" in bad["errors"][0]

        assert client.health()["status"] == "ok"
        assert list(client.iter_escalations(page_size=1)) == client.list_escalations()["escalations"]
    # one login served every call
    assert len(service.requests("/auth/token")) == 1


def test_inline_policy_and_trigger_type(open_service):
    from airflow_escalation.core.models import EscalationLevel, EscalationPolicy, EscalationTarget

    policy = EscalationPolicy(name="inline", levels=[EscalationLevel(1, targets=[EscalationTarget.user("a")])])
    with EscalationClient(open_service.url, **FAST) as client:
        result = client.trigger("inc", policy=policy, trigger_type="manual")
    assert result["record"]["policy_name"] == "inline" and result["record"]["trigger_type"] == "manual"
    assert open_service.seen[-1].body["policy"]["levels"][0]["targets"][0]["identifier"] == "a"
    with pytest.raises(ValueError, match="exactly one"):
        EscalationClient(open_service.url).validate_policy()
    with pytest.raises(ValueError, match="incident_id"):
        EscalationClient(open_service.url).trigger("")


def test_typed_views(service):
    with login_client(service) as client:
        result = as_result(client.trigger("inc-typed", severity="critical"))
        assert result.success and result.code == "ok" and result.record.incident_id == "inc-typed"
        assert result.record.created_at.tzinfo is not None
        assert result.targets_notified[0].identifier == "team-lead"
        refused = as_result(client.trigger("inc-low", severity="low"))
        assert not refused.success and refused.code == "filtered"
        detail = client.get_escalation(result.record.id)
        assert as_record(detail).history and as_deliveries(detail)[0].target.identifier == "team-lead"
        assert as_policy(client.policy("production_critical")).max_level == 3
        stats = as_stats(client.stats())
        assert stats.total_escalations == 1 and stats.escalations_by_level == {1: 1}


def test_record_ids_are_quoted(open_service):
    with EscalationClient(open_service.url, **FAST) as client:
        with pytest.raises(EscalationNotFound):
            client.get_escalation("a/b c")
    assert open_service.seen[-1].path == "/escalation/api/v1/escalations/a%2Fb%20c"


# --------------------------------------------------------------------------- errors


def test_not_found_and_conflict(service):
    with login_client(service) as client:
        with pytest.raises(EscalationNotFound) as err:
            client.get_escalation("nope")
        assert err.value.status_code == 404 and "nope" in err.value.detail
        with pytest.raises(EscalationNotFound, match="policy 'ghost' not found"):
            client.trigger("inc", policy_name="ghost")
        record = client.trigger("inc", severity="critical")["record"]
        client.resolve(record["id"])
        with pytest.raises(EscalationConflict) as err:
            client.acknowledge(record["id"])
        assert err.value.status_code == 409 and "resolved" in err.value.detail
        assert err.value.after_retry is False


def test_4xx_is_not_retried(open_service):
    with EscalationClient(open_service.url, **FAST) as client:
        before = len(open_service.seen)
        with pytest.raises(EscalationAPIError) as err:
            client.list_escalations(limit=1000)
        assert (
            err.value.status_code == 422
            and err.value.detail == "query.limit: Input should be less than or equal to 500"
        )
        assert len(open_service.seen) == before + 1

        open_service.fail_next(403)
        with pytest.raises(EscalationAuthError) as err:
            client.stats()
        assert err.value.status_code == 403
        open_service.fail_next(400)
        with pytest.raises(EscalationAPIError) as err:
            client.stats()
        assert type(err.value) is EscalationAPIError and err.value.status_code == 400
        assert len(open_service.seen) == before + 3


def test_validation_error_detail_is_flattened(open_service):
    with EscalationClient(open_service.url, **FAST) as client:
        # bypass the client's own check to reach the server's validation
        from airflow_escalation.client.http import _Call

        with pytest.raises(EscalationAPIError, match="incident_id: Field required"):
            client._run(_Call("POST", "/escalations", json={"context": {}}))


# --------------------------------------------------------------------------- retries


def test_5xx_twice_then_success(open_service):
    open_service.fail_next(500, 503)
    with EscalationClient(open_service.url, retries=3, **FAST) as client:
        assert client.health()["status"] == "ok"
    assert len(open_service.requests("/escalation/api/v1/health")) == 3


def test_429_retry_after_is_honoured(open_service):
    open_service.fail_next(("retry-after", 429, "0.3"))
    with EscalationClient(open_service.url, retries=2, **FAST) as client:
        assert client.health()["status"] == "ok"
    first, second = open_service.requests("/escalation/api/v1/health")
    assert second.at - first.at >= 0.25  # waited for Retry-After, not the 10 ms backoff


def test_backoff_grows_exponentially(open_service):
    open_service.fail_next(500, 500, 500)
    with EscalationClient(open_service.url, retries=3, backoff=0.05, timeout=2) as client:
        client.health()
    times = [s.at for s in open_service.requests("/escalation/api/v1/health")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 3
    # 0.05, 0.1, 0.2 each within +-20 % jitter (plus scheduling slack)
    assert 0.035 <= gaps[0] < 0.2 and 0.075 <= gaps[1] < 0.3 and 0.155 <= gaps[2] < 0.5
    assert gaps[0] < gaps[2]


def test_5xx_forever_gives_service_unavailable(open_service):
    open_service.fail_next(*[502] * 10)
    with EscalationClient(open_service.url, retries=2, **FAST) as client:
        with pytest.raises(EscalationServiceUnavailable) as err:
            client.stats()
    exc = err.value
    assert exc.attempts == 3 and exc.status_code == 502 and exc.url == f"{open_service.url}/escalation/api/v1/stats"
    assert f"unavailable at {open_service.url}/escalation/api/v1/stats: HTTP 502" in str(exc)
    assert len(open_service.requests("/escalation/api/v1/stats")) == 3


def test_501_is_not_retried(open_service):
    open_service.fail_next(501)
    with EscalationClient(open_service.url, retries=3, **FAST) as client:
        with pytest.raises(EscalationAPIError) as err:
            client.list_escalations()
    assert err.value.status_code == 501 and not isinstance(err.value, EscalationServiceUnavailable)
    assert len(open_service.requests("/escalation/api/v1/escalations")) == 1


def test_closed_connection_is_retried(open_service):
    open_service.fail_next("close", "close")
    with EscalationClient(open_service.url, retries=3, **FAST) as client:
        assert client.health()["running"] is True
    assert len(open_service.requests("/escalation/api/v1/health")) == 3


def test_closed_connection_forever(open_service):
    open_service.fail_next(*["close"] * 5)
    with EscalationClient(open_service.url, retries=1, **FAST) as client:
        with pytest.raises(EscalationServiceUnavailable, match="RemoteProtocolError") as err:
            client.health()
    assert err.value.status_code is None and err.value.cause is not None and err.value.attempts == 2


def test_service_down(dead_url):
    with EscalationClient(dead_url, retries=2, **FAST) as client:
        with pytest.raises(EscalationServiceUnavailable) as err:
            client.trigger("inc")
    assert f"escalation service unavailable at {dead_url}/escalation/api/v1/escalations" in str(err.value)
    assert "ConnectError" in str(err.value) and "after 3 attempts" in str(err.value)


def test_read_timeout_is_retried_then_unavailable(open_service):
    open_service.fail_next(("sleep", 0.6), ("sleep", 0.6))
    with EscalationClient(open_service.url, retries=1, backoff=0.01, timeout=0.2) as client:
        with pytest.raises(EscalationServiceUnavailable, match="ReadTimeout"):
            client.health()
    open_service.fail_next(("sleep", 0.6))
    with EscalationClient(open_service.url, retries=1, backoff=0.01, timeout=0.2) as client:
        assert client.health()["status"] == "ok"


def test_conflict_after_retry_is_flagged(service):
    with login_client(service) as client:
        record = client.trigger("inc", severity="critical")["record"]
        client.acknowledge(record["id"])
        service.fail_next(500)
        with pytest.raises(EscalationConflict) as err:
            client.acknowledge(record["id"])
    assert err.value.after_retry is True


# --------------------------------------------------------------------------- authentication


def test_login_token_cached_and_refreshed_once_on_401(service):
    with login_client(service) as client:
        client.health()
        client.stats()
        assert len(service.requests("/auth/token")) == 1
        service.revoke_tokens()  # the cached token is now rejected with 401
        assert client.health()["status"] == "ok"
        assert len(service.requests("/auth/token")) == 2
        tokens = [s.headers["authorization"] for s in service.requests("/escalation/api/v1/health")]
        assert tokens[0] == tokens[1] != tokens[-1]


def test_injected_401_then_200_after_refresh(service):
    with login_client(service) as client:
        client.health()
        service.fail_next(401)
        assert client.health()["status"] == "ok"
    assert len(service.requests("/auth/token")) == 2


def test_persistent_401_refreshes_only_once(service):
    with login_client(service) as client:
        client.health()
        service.fail_next(401, 401, 401)
        with pytest.raises(EscalationAuthError) as err:
            client.health()
    assert err.value.status_code == 401
    assert len(service.requests("/auth/token")) == 2  # first login + one refresh, no loop


def test_wrong_password(service):
    with EscalationClient(service.url, username="admin", password="wrong", **FAST) as client:
        with pytest.raises(EscalationAuthError) as err:
            client.health()
    assert f"login as 'admin' failed at {service.url}/auth/token: HTTP 401" in str(err.value)
    assert len(service.requests("/auth/token")) == 1  # a 401 on the login itself is not retried


def test_login_endpoint_5xx_is_retried(service):
    service.fail_next(503)
    with login_client(service) as client:
        assert client.health()["status"] == "ok"
    assert len(service.requests("/auth/token")) == 2


def test_no_credentials_gives_clear_401(service):
    with EscalationClient(service.url, **FAST) as client:
        with pytest.raises(EscalationAuthError, match="no credentials configured"):
            client.health()


def test_static_token_is_not_refreshed(service):
    with EscalationClient(service.url, token="tok-unknown", **FAST) as client:
        with pytest.raises(EscalationAuthError):
            client.health()
    assert len(service.requests("/escalation/api/v1/health")) == 1


def test_token_provider_invalidated_on_401(service):
    service.tokens["good"] = "provider-user"

    class Provider:
        def __init__(self):
            self.tokens = ["stale", "good"]
            self.invalidated = 0

        def __call__(self):
            return self.tokens[0]

        def invalidate(self):
            self.invalidated += 1
            self.tokens.pop(0)

    provider = Provider()
    with EscalationClient(service.url, token_provider=provider, **FAST) as client:
        result = client.trigger("inc", severity="critical")
    assert provider.invalidated == 1 and result["record"]["history"][0]["actor"] == "provider-user"


# --------------------------------------------------------------------------- async


async def test_every_route_async(service):
    client = login_client(service)
    try:
        created = await client.atrigger("inc-async", {"dag_id": "d"}, severity="critical")
        rid = created["record"]["id"]
        assert (await client.alist_escalations("active", dag_id="d"))["total"] == 1
        assert [r["id"] async for r in client.aiter_escalations(page_size=1)] == [rid]
        assert (await client.aget_escalation(rid))["deliveries"]
        assert (await client.aescalate(rid))["record"]["current_level"] == 2
        assert (await client.aacknowledge(rid, "mine"))["record"]["state"] == "acknowledged"
        assert (await client.aresolve(rid, "fixed"))["record"]["state"] == "resolved"
        with pytest.raises(EscalationConflict):
            await client.acancel(rid, "late")
        with pytest.raises(EscalationNotFound):
            await client.aget_escalation("missing")
        assert (await client.astats())["resolved_count"] == 1
        assert (await client.apolicies())[0]["name"] == "production_critical"
        assert (await client.apolicy("production_critical"))["name"] == "production_critical"
        assert (await client.avalidate_policy(yaml="policies: []\n"))["valid"] is True
        assert (await client.ahealth())["status"] == "ok"
    finally:
        await client.aclose()
    assert len(service.requests("/auth/token")) == 1


async def test_async_retries_and_refresh(service):
    async with login_client(service, retries=3) as client:
        await client.ahealth()
        service.fail_next(500, "close", 401)
        assert (await client.ahealth())["status"] == "ok"
        assert len(service.requests("/auth/token")) == 2
        service.fail_next(*[503] * 5)
        with pytest.raises(EscalationServiceUnavailable, match="HTTP 503"):
            await client.astats()


async def test_async_concurrent_calls_share_one_login(service):
    async with login_client(service) as client:
        results = await asyncio.gather(*(client.atrigger(f"inc-{i}", severity="high") for i in range(20)))
    assert all(r["success"] for r in results)
    assert len(service.requests("/auth/token")) == 1


async def test_async_service_down(dead_url):
    async with EscalationClient(dead_url, retries=1, **FAST) as client:
        with pytest.raises(EscalationServiceUnavailable, match=dead_url):
            await client.ahealth()


async def test_async_token_provider_may_be_async(service):
    service.tokens["async-good"] = "async-user"

    async def provider():
        return "async-good"

    async with EscalationClient(service.url, token_provider=provider, **FAST) as client:
        result = await client.atrigger("inc", severity="critical")
    assert result["record"]["history"][0]["actor"] == "async-user"


def test_async_client_survives_new_event_loops(open_service):
    client = EscalationClient(open_service.url, **FAST)
    assert asyncio.run(client.ahealth())["status"] == "ok"
    assert asyncio.run(client.ahealth())["status"] == "ok"  # a new loop gets a new AsyncClient
    asyncio.run(client.aclose())


def test_client_module_imports_no_airflow():
    import subprocess

    code = (
        "import sys, airflow_escalation.client.http as h; "
        "print(any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
