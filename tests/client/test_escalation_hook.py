"""EscalationHook: connection parsing, the component JWT, sync/async calls against a real local server."""

from __future__ import annotations

import json
import threading
import time

import jwt
import pytest
from escalation_fake_service import JWT_SECRET

from airflow_escalation.client import EscalationServiceUnavailable

import airflow_escalation.hooks.escalation as hook_mod

EscalationHook = hook_mod.EscalationHook
EscalationConnectionError = hook_mod.EscalationConnectionError
AirflowJWTTokenProvider = hook_mod.AirflowJWTTokenProvider


def conn(**fields):
    from airflow.sdk import Connection

    fields.setdefault("conn_id", "escalation_test")
    fields.setdefault("conn_type", "escalation")
    extra = fields.pop("extra", None)
    if extra is not None and not isinstance(extra, str):
        extra = json.dumps(extra)
    return Connection(extra=extra, **fields)


def set_conn(monkeypatch, conn_id="escalation_default", **fields):
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "escalation", **fields}))


JWT = {"auth_type": "jwt"}  # signing with [api_auth] jwt_secret is opt-in


@pytest.fixture
def jwt_env(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", JWT_SECRET)


# --------------------------------------------------------------------------- class attributes


def test_hook_metadata():
    assert EscalationHook.conn_name_attr == "escalation_conn_id"
    assert EscalationHook.default_conn_name == "escalation_default"
    assert EscalationHook.conn_type == "escalation"
    assert EscalationHook.hook_name == "Escalation service"
    assert EscalationHook().escalation_conn_id == "escalation_default"


def test_ui_field_behaviour_matches_airflow_schema():
    import importlib.resources

    import jsonschema

    schema = json.loads(
        importlib.resources.files("airflow").joinpath("customized_form_field_behaviours.schema.json").read_text()
    )
    behaviour = EscalationHook.get_ui_field_behaviour()
    jsonschema.validate(behaviour, schema)
    assert behaviour["relabeling"]["host"] == "API server URL or host"
    behaviour["placeholders"]["x"] = "mutated"  # callers may mutate: the hook hands out copies
    assert "x" not in EscalationHook.get_ui_field_behaviour()["placeholders"]


def test_connection_type_entry_for_provider_info():
    """The declarative form (Airflow 3.2+) is processed by ProvidersManager like the official providers'."""
    import importlib.resources

    import jsonschema
    from airflow.providers_manager import ProvidersManager

    from airflow_escalation.hooks.connection_info import CONNECTION_TYPE

    schema = json.loads(importlib.resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(
        {"connection-types": [CONNECTION_TYPE]},
        {"type": "object", "properties": {"connection-types": schema["properties"]["connection-types"]}},
    )
    assert CONNECTION_TYPE["hook-class-name"] == f"{EscalationHook.__module__}.{EscalationHook.__name__}"
    pm = ProvidersManager.__new__(ProvidersManager)
    for name, field_def in CONNECTION_TYPE["conn-fields"].items():
        converted = pm._to_api_format(name, field_def)
        assert converted["schema"]["title"] and "type" in converted["schema"]
    assert CONNECTION_TYPE["conn-fields"]["timeout"]["schema"]["default"] == 5


# --------------------------------------------------------------------------- connection parsing


@pytest.mark.parametrize(
    ("fields", "api_url"),
    [
        ({"host": "localhost", "port": 8080}, "http://localhost:8080/escalation/api/v1"),
        ({"host": "airflow.example.com", "schema": "https"}, "https://airflow.example.com/escalation/api/v1"),
        ({"host": "airflow.example.com", "port": 443}, "https://airflow.example.com:443/escalation/api/v1"),
        ({"host": "https://af.example.com/airflow/"}, "https://af.example.com/airflow/escalation/api/v1"),
        ({"host": "http://10.0.0.5", "port": 8081}, "http://10.0.0.5:8081/escalation/api/v1"),
        ({"host": "http://10.0.0.5:9000", "port": 8081}, "http://10.0.0.5:9000/escalation/api/v1"),
        ({"host": "af.internal/sub", "port": 80, "schema": "HTTP"}, "http://af.internal:80/sub/escalation/api/v1"),
        ({"host": "h", "extra": {"api_path": "/esc/v2"}}, "http://h/esc/v2"),
    ],
)
def test_base_url_from_connection(fields, api_url):
    client = EscalationHook.from_connection(conn(login="svc", password="pw", **fields)).get_conn()
    assert client.api_url == api_url


def test_extras_and_password_auth():
    client = EscalationHook.from_connection(
        conn(
            host="localhost",
            port=8080,
            login="admin",
            password="pw",
            extra={"timeout": "2.5", "retries": "1", "verify": "false", "backoff": 0.1},
        )
    ).get_conn()
    assert (client.timeout, client.retries, client.backoff, client.verify) == (2.5, 1, 0.1, False)
    assert client.username == "admin" and client.token_url == "http://localhost:8080/auth/token"


def test_prefixed_extras_ca_bundle_and_overrides():
    hook = EscalationHook.from_connection(
        conn(
            host="h",
            login="u",
            password="p",
            extra={"extra__escalation__timeout": 7, "extra__escalation__verify": "/etc/ssl/ca.pem"},
        ),
        retries=0,
        timeout=1.5,
    )
    client = hook.get_conn()
    assert client.timeout == 1.5 and client.retries == 0 and client.verify == "/etc/ssl/ca.pem"
    assert (
        EscalationHook.from_connection(conn(host="h", login="u", password="p", extra={"extra__escalation__timeout": 7}))
        .get_conn()
        .timeout
        == 7
    )


def test_token_and_none_auth_types():
    client = EscalationHook.from_connection(conn(host="h", password="abc", extra={"auth_type": "token"})).get_conn()
    assert client._static_token == "abc"
    client = EscalationHook.from_connection(conn(host="h", extra={"auth_type": "none"})).get_conn()
    assert client._static_token is None and client._token_provider is None and client.username is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": ""}, "host is empty"),
        ({"host": "h", "schema": "ftp"}, "schema must be http or https"),
        ({"host": "ftp://h"}, "not an http(s) URL"),
        ({"host": "h", "extra": {"timeout": "soon"}}, "extra.timeout: expected a number"),
        ({"host": "h", "extra": {"timeout": 0}}, "extra.timeout: must be > 0"),
        ({"host": "h", "extra": {"retries": -1}}, "extra.retries: must be >= 0"),
        ({"host": "h", "extra": {"verify": "maybe"}}, "extra.verify: expected true or false"),
        ({"host": "h", "extra": {"auth_type": "kerberos"}}, "extra.auth_type: unknown value 'kerberos'"),
        ({"host": "h", "extra": {"auth_type": "token"}}, "needs the token in the password field"),
        ({"host": "h", "login": "u", "extra": {"auth_type": "password"}}, "needs both login and password"),
        ({"host": "h", "extra": {"auth_type": "jwt", "jwt_claims": "not json"}}, "extra.jwt_claims: not JSON"),
        # no credentials at all: a login is the default, signing is opt-in
        ({"host": "h"}, "no credentials. Set login/password of a service account"),
        ({"host": "h", "extra": {"jwt_role": "USER"}}, "no credentials"),
        # signing is capped: role, lifetime, subject, claims
        ({"host": "h", "extra": {"auth_type": "jwt", "jwt_role": "ADMIN"}}, "jwt_role: ADMIN is above"),
        ({"host": "h", "extra": {"auth_type": "jwt", "jwt_role": "ROOT"}}, "jwt_role: unknown role 'ROOT'"),
        (
            {"host": "h", "extra": {"auth_type": "jwt", "jwt_valid_for": 315_360_000}},
            "jwt_valid_for: must be > 0 and at most 3600 seconds",
        ),
        (
            {"host": "h", "extra": {"auth_type": "jwt", "jwt_subject": "admin"}},
            "jwt_subject: must start with 'airflow-escalation'",
        ),
        (
            {"host": "h", "extra": {"auth_type": "jwt", "jwt_claims": {"exp": 9999999999, "role": "ADMIN"}}},
            "jwt_claims: may not set exp, role",
        ),
    ],
)
def test_bad_connections_name_the_field(fields, message):
    with pytest.raises(EscalationConnectionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EscalationHook.from_connection(conn(**fields))


def test_connection_from_env_uri(monkeypatch, service):
    set_conn(monkeypatch, host=service.url, login="admin", password="secret", extra={"retries": 2, "timeout": 3})
    hook = EscalationHook()
    result = hook.trigger("env-inc", {"dag_id": "etl"}, severity="critical")
    assert result["success"] and result["record"]["history"][0]["actor"] == "admin"
    assert hook.get_conn().retries == 2 and hook.get_conn().timeout == 3
    assert hook.list_escalations(dag_id="etl")["total"] == 1
    rid = result["record"]["id"]
    assert hook.get_escalation(rid)["id"] == rid
    assert hook.escalate(rid)["record"]["current_level"] == 2
    assert hook.acknowledge(rid, "ok")["record"]["state"] == "acknowledged"
    assert hook.resolve(rid)["record"]["state"] == "resolved"
    other = hook.trigger("env-inc-2", severity="high")["record"]["id"]
    assert hook.cancel(other, "dup")["record"]["state"] == "cancelled"
    assert hook.stats()["total_escalations"] == 2
    assert hook.policies()[0]["name"] == hook.policy("production_critical")["name"]
    assert hook.validate_policy(yaml="policies: []")["valid"]
    assert hook.health()["status"] == "ok"
    hook.close()


def test_connection_uri_form(monkeypatch, service):
    host, port = service.url.removeprefix("http://").split(":")
    monkeypatch.setenv(
        "AIRFLOW_CONN_ESCALATION_URI", f"escalation://admin:secret@{host}:{port}/http?retries=1&timeout=2"
    )
    with EscalationHook("escalation_uri") as hook:
        assert hook.health()["status"] == "ok"
        assert hook.get_conn().retries == 1


def test_test_connection(monkeypatch, service, dead_url):
    set_conn(monkeypatch, host=service.url, login="admin", password="secret")
    ok, message = EscalationHook().test_connection()
    assert ok and "is healthy" in message and "fake-engine" in message
    set_conn(monkeypatch, "escalation_dead", host=dead_url, login="admin", password="secret", extra={"retries": 0})
    ok, message = EscalationHook("escalation_dead").test_connection()
    assert not ok and f"unavailable at {dead_url}/auth/token" in message
    ok, message = EscalationHook("escalation_missing").test_connection()
    assert not ok and "escalation_missing" in message


# --------------------------------------------------------------------------- async


async def test_async_methods_use_async_lookup(monkeypatch, service):
    set_conn(monkeypatch, host=service.url, login="admin", password="secret")
    hook = EscalationHook()
    calls = []
    original = EscalationHook.aget_connection.__func__

    async def spy(cls, conn_id):
        calls.append(conn_id)
        return await original(cls, conn_id)

    monkeypatch.setattr(EscalationHook, "aget_connection", classmethod(spy))
    monkeypatch.setattr(
        EscalationHook,
        "get_connection",
        classmethod(lambda cls, conn_id: pytest.fail("sync lookup inside the event loop")),
    )
    result = await hook.atrigger("async-inc", severity="critical")
    rid = result["record"]["id"]
    assert (await hook.alist_escalations("active"))["total"] == 1
    assert (await hook.aget_escalation(rid))["id"] == rid
    assert (await hook.aescalate(rid))["record"]["current_level"] == 2
    assert (await hook.aacknowledge(rid))["record"]["state"] == "acknowledged"
    assert (await hook.aresolve(rid, "done"))["record"]["state"] == "resolved"
    other = (await hook.atrigger("async-inc-2", severity="high"))["record"]["id"]
    assert (await hook.acancel(other, "dup"))["record"]["state"] == "cancelled"
    assert (await hook.astats())["total_escalations"] == 2
    assert (await hook.apolicies())[0]["name"] == (await hook.apolicy("production_critical"))["name"]
    assert (await hook.avalidate_policy(yaml="policies: []"))["valid"]
    assert (await hook.ahealth())["status"] == "ok"
    await hook.aclose()
    assert calls == ["escalation_default"]  # resolved once, asynchronously


async def test_async_lookup_falls_back_to_a_thread(monkeypatch, service):
    set_conn(monkeypatch, host=service.url, login="admin", password="secret")

    async def broken(cls, conn_id):
        raise RuntimeError("no async channel to the supervisor")

    threads = []
    original = EscalationHook.get_connection.__func__

    def sync_lookup(cls, conn_id):
        threads.append(threading.current_thread())
        return original(cls, conn_id)

    monkeypatch.setattr(EscalationHook, "aget_connection", classmethod(broken))
    monkeypatch.setattr(EscalationHook, "get_connection", classmethod(sync_lookup))
    async with EscalationHook() as hook:
        assert (await hook.ahealth())["status"] == "ok"
    assert len(threads) == 1 and threads[0] is not threading.current_thread()  # not on the loop's thread


async def test_async_unknown_connection_is_not_retried(monkeypatch):
    from airflow.sdk.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException):
        await EscalationHook("escalation_nowhere").ahealth()


# --------------------------------------------------------------------------- component JWT


def _validator(**kwargs):
    """The validator the API server builds (BaseAuthManager._get_token_validator, uncached)."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.api_fastapi.auth.tokens import JWTValidator, get_sig_validation_args
    from airflow.configuration import conf

    return JWTValidator(
        **get_sig_validation_args(make_secret_key_if_needed=False),
        leeway=conf.getint("api_auth", "jwt_leeway"),
        audience=BaseAuthManager._get_jwt_audience(),
        **kwargs,
    )


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_jwt_is_what_the_api_server_accepts(monkeypatch, jwt_env):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_ISSUER", "https://airflow.example.com")
    client = EscalationHook.from_connection(conn(host="h", extra=JWT)).get_conn()
    before = int(time.time())
    token = client._token_provider()
    claims = _validator().validated_claims(token)
    assert claims["aud"] == "apache-airflow" and claims["iss"] == "https://airflow.example.com"
    assert claims["sub"] == "airflow-escalation" and claims["role"] == "USER" and claims["escalation_component"]
    assert claims["exp"] - claims["iat"] == 120 and before <= claims["iat"] <= int(time.time())
    assert claims["nbf"] == claims["iat"] and claims["jti"]
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    user = SimpleAuthManager().deserialize_user(claims)
    assert user.get_name() == "airflow-escalation" and user.role == "USER"
    # decoded with the bare secret too
    assert jwt.decode(token, JWT_SECRET, algorithms=["HS512"], audience="apache-airflow")["sub"] == "airflow-escalation"


def test_jwt_follows_configured_audience(monkeypatch, jwt_env):
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_AUDIENCE", "my-airflow")
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    assert hook_mod.airflow_api_jwt_audience() == BaseAuthManager._get_jwt_audience() == "my-airflow"
    token = EscalationHook.from_connection(conn(host="h", extra=JWT)).get_conn()._token_provider()
    assert _validator().validated_claims(token)["aud"] == "my-airflow"


def test_jwt_extras(jwt_env):
    provider = (
        EscalationHook.from_connection(
            conn(
                host="h",
                extra={
                    "auth_type": "jwt",
                    "jwt_subject": "airflow-escalation-etl",
                    "jwt_role": "op",
                    "jwt_valid_for": 30,
                    "jwt_audience": "escalation",
                    "jwt_claims": {"dept": "data"},
                },
            )
        )
        .get_conn()
        ._token_provider
    )
    claims = jwt.decode(provider(), JWT_SECRET, algorithms=["HS512"], audience="escalation")
    assert (claims["sub"], claims["role"], claims["dept"], claims["exp"] - claims["iat"]) == (
        "airflow-escalation-etl",
        "OP",
        "data",
        30,
    )


def test_jwt_role_admin_only_when_the_deployment_says_so(monkeypatch, jwt_env):
    extra = {"auth_type": "jwt", "jwt_role": "ADMIN", "jwt_valid_for": 3600}
    monkeypatch.setenv("AIRFLOW__ESCALATION__COMPONENT_JWT_MAX_ROLE", "ADMIN")
    provider = EscalationHook.from_connection(conn(host="h", extra=extra)).get_conn()._token_provider
    claims = jwt.decode(provider(), JWT_SECRET, algorithms=["HS512"], audience="apache-airflow")
    assert claims["role"] == "ADMIN" and claims["exp"] - claims["iat"] == 3600
    monkeypatch.setenv("AIRFLOW__ESCALATION__COMPONENT_JWT_MAX_ROLE", "VIEWER")
    with pytest.raises(EscalationConnectionError, match="jwt_role: USER is above"):
        EscalationHook.from_connection(conn(host="h", extra={"auth_type": "jwt"}))


def test_jwt_is_cached_and_renewed(jwt_env):
    provider = AirflowJWTTokenProvider(valid_for=60)
    first = provider()
    assert provider() == first
    provider.invalidate()
    second = provider()
    assert second != first
    provider._renew_at = 0  # half its life has passed
    assert provider() != second


def test_jwt_without_secret_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "")
    client = EscalationHook.from_connection(conn(host="h", extra=JWT)).get_conn()
    with pytest.raises(EscalationConnectionError, match=r"\[api_auth\] jwt_secret is not set"):
        client.health()


def test_jwt_end_to_end(monkeypatch, service, jwt_env):
    set_conn(monkeypatch, host=service.url, extra={**JWT, "jwt_subject": "airflow-escalation-callback"})
    with EscalationHook() as hook:
        result = hook.trigger("jwt-inc", severity="critical")
        assert result["record"]["history"][0]["actor"] == "airflow-escalation-callback"
        auth = service.seen[-1].headers["authorization"]
        assert auth.startswith("Bearer ") and auth.count(".") == 2
        assert not service.requests("/auth/token")  # no password anywhere
        # a rejected token is replaced once
        service.fail_next(401)
        assert hook.health()["status"] == "ok"
        tokens = [s.headers["authorization"] for s in service.seen[-2:]]
        assert tokens[0] != tokens[1]


async def test_jwt_end_to_end_async(monkeypatch, service, jwt_env):
    set_conn(monkeypatch, host=service.url, extra=JWT)
    async with EscalationHook() as hook:
        result = await hook.atrigger("jwt-async", severity="high")
    assert result["record"]["history"][0]["actor"] == "airflow-escalation"


def test_wrong_secret_is_rejected(monkeypatch, service):
    monkeypatch.setenv(
        "AIRFLOW__API_AUTH__JWT_SECRET", "another-secret-of-sufficient-length-0123456789abcdef-0123456789abcdef"
    )
    set_conn(monkeypatch, host=service.url, extra={**JWT, "retries": 0})
    from airflow_escalation.client import EscalationAuthError

    with pytest.raises(EscalationAuthError) as err:
        EscalationHook().health()
    assert err.value.status_code == 403


def test_unavailable_service_from_hook(monkeypatch, dead_url, jwt_env):
    set_conn(monkeypatch, host=dead_url, login="svc", password="pw", extra={"retries": 1, "backoff": 0.01})
    with pytest.raises(EscalationServiceUnavailable, match=dead_url):
        EscalationHook().trigger("x")
