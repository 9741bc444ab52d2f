"""Silences on every store backend through the engine: a suppressed trigger writes a closed
record (no open-incident key), the next trigger after the silence opens a new one; two engines
on one store agree. Servers as in tests/stores (skipped without them, failed under CI=true)."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest

from airflow_escalation import EscalationEngine, EscalationEngineConfig, EscalationLevel, EscalationPolicy
from airflow_escalation import EscalationTarget
from airflow_escalation.oncall.runtime import OnCall
from airflow_escalation.scheduling.base import SchedulerConfig
from airflow_escalation.testing import FakeClock, RecordingHandler

from oncall_support import T0

POSTGRES_URL = os.environ.get("ESCALATION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("ESCALATION_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("ESCALATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _stores(backend: str, tmp_path):
    prefix = f"o{uuid.uuid4().hex[:8]}_"
    if backend == "sqlite":
        from airflow_escalation.stores.sql import SQLiteEscalationStore

        path = str(tmp_path / "s.db")
        return SQLiteEscalationStore(path), SQLiteEscalationStore(path)
    if backend in ("postgresql", "mysql"):
        from airflow_escalation.stores.sql import SQLEscalationStore

        url = POSTGRES_URL if backend == "postgresql" else MYSQL_URL
        try:
            return SQLEscalationStore(url, table_prefix=prefix), SQLEscalationStore(url, table_prefix=prefix)
        except Exception as exc:
            _unavailable(f"no {backend} at {url}: {exc}")
    from airflow_escalation.stores.redis import RedisEscalationStore

    try:
        one = RedisEscalationStore(REDIS_URL, key_prefix=f"escalation-test:{prefix}:")
        one.client.ping()
    except Exception as exc:
        _unavailable(f"no Redis at {REDIS_URL}: {exc}")
    return one, RedisEscalationStore(REDIS_URL, key_prefix=f"escalation-test:{prefix}:")


def _drop(store) -> None:
    store.delete_oncall_items("silence", ends_before=T0 + timedelta(days=3650))
    store.delete_oncall_items("resolution", ends_before=T0 + timedelta(days=3650))
    store.clear()
    tables = getattr(store, "tables", None)
    if tables is not None:  # SQL: this test's own tables
        with store.engine.begin() as conn:
            for table in [store._oncall_items().table(), *reversed(tables)]:
                table.drop(conn, checkfirst=True)
    store.close()


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
async def test_silences_on_every_backend(backend, tmp_path):
    clock = FakeClock(T0)
    recorder = RecordingHandler(clock)
    stores = _stores(backend, tmp_path)
    policy = EscalationPolicy(name="p", levels=[EscalationLevel(level=1, targets=[EscalationTarget.user("lead")])])
    engines = []
    for store in stores:
        engine = EscalationEngine(
            EscalationEngineConfig(
                clock=clock,
                store=store,
                default_notification_handler=recorder,
                scheduler_config=SchedulerConfig(scheduler_type="memory"),
            )
        )
        engine.register_policy(policy)
        engine.set_oncall(OnCall(None, store, clock, cache_seconds=0))
        await engine.start()
        engines.append(engine)
    one, two = engines
    try:
        silence = one.oncall.create_silence({"dag_id": "etl"}, duration=timedelta(minutes=10), comment="c")
        suppressed = await two.trigger("inc", {"dag_id": "etl"})
        assert suppressed.code == "suppressed"
        stored = one.get_record(suppressed.record.id)
        assert stored.state == "cancelled" and stored.metadata["suppressed_by"]["id"] == silence.id
        assert [e["event"] for e in stored.history] == ["triggered", "suppressed", "cancel"]
        assert one.get_deliveries(stored.id) == []
        two.oncall.expire_silence(silence.id)
        paged = await one.trigger("inc", {"dag_id": "etl"})
        assert paged.success, paged.message
        await one.drain()
        assert [n.target for n in recorder.sent] == ["user:lead"]
        assert (await two.trigger("inc", {"dag_id": "etl"})).message.startswith("incident already has an open")
    finally:
        for engine in engines:
            await engine.stop(timeout=5)
        _drop(stores[0])
        stores[1].close()
