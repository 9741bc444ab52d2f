"""Hypothesis over the REST bodies (in-process service): whatever a caller sends to trigger or act,
the answer is a success, a gate's answer, or a 4xx naming the field -- never a 5xx -- and the
listing keeps answering everyone afterwards."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_service_inprocess import API, make_client

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

FUZZ = settings(
    max_examples=50, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
BODY_FIELDS = ("incident_id", "context", "policy_name", "trigger_type", "policy", "note", "reason", "force", "body")

text = st.one_of(st.text(max_size=12), st.sampled_from(["", "\ud800", "ops", "critical_only", "x" * 300]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), text)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10,
)
deep = st.integers(30, 40).map(lambda n: json.loads('{"a": ' * n + "1" + "}" * n))
policy = st.fixed_dictionaries(
    {
        "name": text,
        "levels": st.lists(
            st.fixed_dictionaries(
                {"level": st.integers(0, 3)},
                optional={
                    "targets": st.lists(st.one_of(text, values), max_size=2),
                    "delay_minutes": scalars,
                    "repeat_count": scalars,
                },
            ),
            max_size=2,
        ),
    },
    optional={"severity_filter": values, "metadata": st.one_of(values, deep), "timezone": text},
)
trigger_bodies = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "incident_id": st.one_of(text, scalars),
            "context": st.one_of(values, deep),
            "policy_name": scalars,
            "trigger_type": st.one_of(st.sampled_from(["unacknowledged", "unresolved"]), scalars),
            "policy": st.one_of(policy, values),
            "triggered_by": text,
        },
    ),
)
action_bodies = st.one_of(
    values, st.fixed_dictionaries({}, optional={"note": scalars, "reason": scalars, "force": scalars})
)


def encode(body) -> bytes:
    # json.dumps writes NaN/Infinity and lone surrogates as escapes: what a careless client sends
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def client():
    with make_client() as c:
        yield c


def answered_well(response) -> None:
    assert response.status_code < 500, response.text[:500]
    assert response.status_code in (200, 201, 404, 409, 413, 422), response.status_code
    if response.status_code == 422:
        assert any(name in response.text for name in BODY_FIELDS), response.text[:500]
        assert len(response.content) < 8000


@FUZZ
@given(body=trigger_bodies)
def test_trigger_bodies(client, body):
    answered_well(client.post(f"{API}/escalations", content=encode(body), headers={"content-type": "application/json"}))
    assert client.get(f"{API}/escalations?limit=500").status_code == 200


@FUZZ
@given(action=st.sampled_from(["acknowledge", "resolve", "cancel", "escalate"]), body=action_bodies)
def test_action_bodies(client, action, body):
    record = client.post(f"{API}/escalations", json={"incident_id": f"fuzz-{action}"}).json()["record"]
    answered_well(
        client.post(
            f"{API}/escalations/{record['id']}/{action}",
            content=encode(body),
            headers={"content-type": "application/json"},
        )
    )
    assert client.get(f"{API}/escalations/{record['id']}").status_code == 200
