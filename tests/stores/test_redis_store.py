"""Redis-specific tests of RedisEscalationStore: races, counters, prefixes, failures.

The behaviour every store shares is in test_store_contract.py. Redis comes from
ESCALATION_TEST_REDIS_URL (default redis://127.0.0.1:6379/15); each test works under its own
uuid key prefix and clears it afterwards.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from datetime import datetime, timedelta

import pytest

redis = pytest.importorskip("redis")

from airflow_escalation.core.models import (  # noqa: E402
    Delivery,
    EscalationRecord,
    EscalationStats,
    EscalationTarget,
    StatsAccumulator,
)
from airflow_escalation.core.timeutil import UTC  # noqa: E402
from airflow_escalation.core.types import DeliveryState  # noqa: E402
from airflow_escalation.stores.base import StoreError  # noqa: E402
from airflow_escalation.stores.memory import InMemoryEscalationStore  # noqa: E402
from airflow_escalation.stores.redis import RedisEscalationStore  # noqa: E402

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("ESCALATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


@pytest.fixture(scope="module")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        message = (
            f"Redis is not reachable at {REDIS_URL} ({exc}); start Redis or point ESCALATION_TEST_REDIS_URL at one"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def make_store(redis_url):
    """Stores on their own clients; the same prefix may be passed to share data between them."""
    made: list[RedisEscalationStore] = []

    def make(prefix: str | None = None) -> RedisEscalationStore:
        store = RedisEscalationStore(redis_url, key_prefix=prefix or f"test:{uuid.uuid4().hex}:")
        made.append(store)
        return store

    yield make
    for store in made:
        store.clear()
        store.close()


@pytest.fixture
def store(make_store) -> RedisEscalationStore:
    return make_store()


def make_record(incident: str = "inc-1", policy: str = "p", **kwargs) -> EscalationRecord:
    kwargs.setdefault("state", "active")
    kwargs.setdefault("created_at", T0)
    kwargs.setdefault("updated_at", T0)
    kwargs.setdefault("next_escalation_at", T0 + timedelta(minutes=5))
    return EscalationRecord(id=uuid.uuid4().hex, incident_id=incident, policy_name=policy, **kwargs)


def make_delivery(record: EscalationRecord, target: str = "lead", level: int = 1, round: int = 0) -> Delivery:
    return Delivery(
        id=uuid.uuid4().hex,
        record_id=record.id,
        level=level,
        round=round,
        target=EscalationTarget.user(target),
        created_at=T0,
        updated_at=T0,
    )


def run_together(workers) -> list:
    """Run callables in threads released at the same instant; return their results in order."""
    barrier = threading.Barrier(len(workers))
    results: list = [None] * len(workers)
    errors: list[BaseException] = []

    def run(i, work):
        try:
            barrier.wait()
            results[i] = work()
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def recompute(store, record_ids) -> EscalationStats:
    """What StatsAccumulator computes from the records and deliveries the store holds."""
    acc = StatsAccumulator()
    for record_id in record_ids:
        record = store.get(record_id)
        if record is None:
            continue
        acc.add_record(record)
        for delivery in store.get_deliveries(record_id):
            acc.add_delivery(delivery.target.key, delivery.state)
    return acc.result()


def assert_same_stats(actual: EscalationStats, expected: EscalationStats) -> None:
    got, want = actual.to_dict(), expected.to_dict()
    for key in (
        "avg_time_to_acknowledge_seconds",
        "avg_time_to_resolve_seconds",
        "acknowledgment_rate",
        "resolution_rate",
    ):
        assert got.pop(key) == pytest.approx(want.pop(key), rel=1e-9, abs=1e-6), key
    assert got == want


# --------------------------------------------------------------------------- basics


def test_round_trip_keeps_every_field_and_returns_aware_utc(store):
    record = make_record(
        context={"severity": "critical", "n": [1, 2]},
        metadata={"k": "v"},
        policy_snapshot={"name": "p"},
        level_fired_at=T0,
        current_level=2,
    )
    record.add_history_event("triggered", T0)
    created = store.create(record, [make_delivery(record)])
    assert created is not None and created.version == 1

    loaded = store.get(record.id)
    assert loaded.to_dict() == {**record.to_dict(), "version": 1}
    assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.next_escalation_at == T0 + timedelta(minutes=5)
    assert store.next_due_at() == T0 + timedelta(minutes=5)
    assert [d.target.key for d in store.get_deliveries(record.id)] == ["user:lead"]
    assert store.next_delivery_at() == T0


def test_update_never_overwrites_notification_count(store):
    record = make_record()
    delivery = make_delivery(record)
    store.create(record, [delivery])
    stale = store.get(record.id)

    assert store.start_delivery(delivery.id, T0, "sender", LEASE) is not None
    assert store.finish_delivery(delivery.id, T0, sent=True).state == DeliveryState.SENT
    assert store.get(record.id).notification_count == 1

    stale.current_level = 2
    assert store.update(stale, expected_version=1)  # stale.notification_count is still 0
    assert store.get(record.id).notification_count == 1
    assert store.get_stats().notifications_by_target == {"user:lead": 1}


def test_update_cancels_pending_deliveries_and_clears_the_lease(store):
    record = make_record()
    first, second = make_delivery(record, "a"), make_delivery(record, "b")
    store.create(record, [first, second])
    assert store.start_delivery(first.id, T0, "sender", LEASE) is not None
    assert [r.id for r in store.claim_due(T0 + timedelta(hours=1), 10, "engine-1", LEASE)] == [record.id]

    current = store.get(record.id)
    current.state, current.acknowledged_at = "acknowledged", T0 + timedelta(minutes=2)
    current.updated_at = T0 + timedelta(minutes=2)
    event = current.add_history_event("acknowledged", current.updated_at, actor="alice")
    assert store.update(current, 1, [event], cancel_pending=True)

    states = {d.id: d.state for d in store.get_deliveries(record.id)}
    assert states == {first.id: DeliveryState.SENDING, second.id: DeliveryState.CANCELLED}
    assert store.next_delivery_at() is None
    # the lease was dropped by the update: another engine may claim at once
    assert [r.id for r in store.claim_due(T0 + timedelta(hours=1), 10, "engine-2", LEASE)] == [record.id]
    assert store.get(record.id).history[-1]["actor"] == "alice"


# --------------------------------------------------------------------------- races


def test_racing_compare_and_swap_has_exactly_one_winner(make_store):
    first = make_store()
    second = make_store(first.key_prefix)
    record = make_record()
    first.create(record)

    for round_no in range(1, 26):
        copies = [first.get(record.id), second.get(record.id)]
        assert copies[0].version == copies[1].version == round_no

        def attempt(store, copy, who):
            copy.escalation_count += 1
            copy.metadata = {"writer": who}
            event = copy.add_history_event("escalated", T0, actor=who)
            return store.update(copy, round_no, [event])

        won = run_together(
            [
                lambda: attempt(first, copies[0], "a"),
                lambda: attempt(second, copies[1], "b"),
            ]
        )
        assert sorted(won) == [False, True]
        stored = first.get(record.id)
        winner = "a" if won[0] else "b"
        assert stored.version == round_no + 1 and stored.metadata == {"writer": winner}
        assert len(stored.history) == round_no and stored.history[-1]["actor"] == winner
    assert first.get(record.id).escalation_count == 25


def test_eight_threads_creating_one_incident_write_one_record(make_store):
    first = make_store()
    stores = [first] + [make_store(first.key_prefix) for _ in range(7)]

    for n in range(10):
        incident = f"inc-{n}"
        candidates = [make_record(incident, "p") for _ in stores]
        results = run_together([(lambda s=s, r=r: s.create(r, [make_delivery(r)])) for s, r in zip(stores, candidates)])
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert first.find_open(incident, "p").id == winners[0].id
        assert [r.id for r in first.get_by_incident(incident)] == [winners[0].id]
        # the losers wrote nothing, deliveries included
        for loser in candidates:
            if loser.id != winners[0].id:
                assert first.get(loser.id) is None and first.get_deliveries(loser.id) == []

    stats = first.get_stats()
    assert stats.total_escalations == stats.active_escalations == 10
    assert len(first.get_active("p")) == 10


def test_two_claimers_never_get_the_same_record(make_store):
    first = make_store()
    second = make_store(first.key_prefix)
    ids = set()
    for n in range(60):
        record = make_record(f"inc-{n}", next_escalation_at=T0 + timedelta(seconds=n))
        first.create(record)
        ids.add(record.id)
    now = T0 + timedelta(minutes=5)

    def drain(store, owner):
        # a fresh owner per call: an owner may re-claim its own leases, another may not
        got, calls = [], 0
        while batch := store.claim_due(now, 7, f"{owner}-{calls}", LEASE):
            got += [r.id for r in batch]
            calls += 1
        return got

    a, b = run_together([lambda: drain(first, "engine-a"), lambda: drain(second, "engine-b")])
    assert not set(a) & set(b)
    assert len(a) + len(b) == len(set(a) | set(b)) == 60 and set(a) | set(b) == ids

    # live leases keep others out; once they lapse a crashed engine's work is taken over
    assert second.claim_due(now + LEASE - timedelta(seconds=1), 100, "engine-c", LEASE) == []
    assert {r.id for r in second.claim_due(now + LEASE, 100, "engine-c", LEASE)} == ids
    # a released record is claimable again at once
    first.release(a[0] if a else b[0], "engine-c")
    assert len(first.claim_due(now + LEASE, 100, "engine-d", LEASE)) == 1


def test_two_senders_never_claim_the_same_delivery(make_store):
    first = make_store()
    second = make_store(first.key_prefix)
    ids = set()
    for n in range(20):
        record = make_record(f"inc-{n}")
        deliveries = [make_delivery(record, f"t{k}") for k in range(3)]
        first.create(record, deliveries)
        ids |= {d.id for d in deliveries}

    def drain(store, owner):
        got = []
        while batch := store.claim_deliveries(T0, 4, owner, LEASE):
            got += [d.id for d in batch]
        return got

    a, b = run_together([lambda: drain(first, "sender-a"), lambda: drain(second, "sender-b")])
    assert not set(a) & set(b) and set(a) | set(b) == ids
    assert first.expire_deliveries(T0 + LEASE) == 60
    assert first.next_delivery_at() is None


# --------------------------------------------------------------------------- counters


def _random_operations(seed: int, redis_store: RedisEscalationStore) -> None:
    """Drive the Redis store and the in-memory reference with the same random operations."""
    rng = random.Random(seed)
    memory = InMemoryEscalationStore()
    both = (redis_store, memory)
    ids: list[str] = []
    policies = ["p1", "p2", "p3"]
    targets = ["lead", "oncall", "manager", "cto"]

    def at(max_minutes: int = 600) -> datetime:
        return T0 + timedelta(seconds=rng.randrange(max_minutes * 60), microseconds=rng.randrange(10**6))

    def deliveries_for(record, n):
        return [
            Delivery(
                id=uuid.uuid4().hex,
                record_id=record.id,
                level=record.current_level,
                round=rng.randrange(3),
                target=EscalationTarget.user(rng.choice(targets)),
                created_at=at(),
                updated_at=T0,
            )
            for _ in range(n)
        ]

    for _ in range(400):
        op = rng.choices(["create", "update", "delete", "deliver", "expire", "cleanup"], weights=[30, 40, 5, 20, 2, 3])[
            0
        ]
        if op == "create" or not ids:
            created_at = at(60)
            record = make_record(
                f"inc-{rng.randrange(15)}",
                rng.choice(policies),
                state=rng.choice(["pending", "active", "escalating"]),
                current_level=rng.randint(1, 3),
                created_at=created_at,
                updated_at=created_at,
                next_escalation_at=created_at + timedelta(minutes=rng.randrange(30)),
                context={"dag_id": rng.choice(["dag_a", "dag_b"])} if rng.random() < 0.7 else {},
            )
            record.add_history_event("triggered", created_at)
            deliveries = deliveries_for(record, rng.randrange(3))
            results = [s.create(record.clone(), deliveries) for s in both]
            assert (results[0] is None) == (results[1] is None)
            if results[0] is not None:
                ids.append(record.id)
            continue

        record_id = rng.choice(ids)
        current = redis_store.get(record_id)
        if op == "update":
            if current is None:
                continue
            change = rng.choice(["escalate", "acknowledge", "resolve", "close", "reopen", "level_down"])
            when = current.created_at + timedelta(seconds=rng.randrange(1, 7200), microseconds=rng.randrange(10**6))
            current.updated_at = when
            cancel = False
            if change == "escalate":
                current.current_level += 1
                current.state = "escalating"
                current.next_escalation_at = when + timedelta(minutes=15)
            elif change == "level_down":
                current.current_level = max(1, current.current_level - 1)
            elif change == "acknowledge":
                current.state, current.acknowledged_at, current.acknowledged_by = "acknowledged", when, "alice"
                cancel = True
            elif change == "resolve":
                current.state, current.resolved_at, current.closed_at = "resolved", when, when
                current.next_escalation_at = None
                cancel = True
            elif change == "close":
                current.state = rng.choice(["cancelled", "timed_out", "failed"])
                current.closed_at, current.next_escalation_at = when, None
                cancel = True
            else:
                current.state, current.closed_at, current.resolved_at = "active", None, None
                current.next_escalation_at = when
            event = current.add_history_event(change, when)
            new = deliveries_for(current, rng.randrange(2))
            results = [s.update(current.clone(), current.version, [event], new, cancel) for s in both]
            assert results[0] == results[1]
        elif op == "delete":
            assert redis_store.delete(record_id) == memory.delete(record_id)
        elif op == "deliver":
            pending = [d for d in redis_store.get_deliveries(record_id) if d.state == DeliveryState.PENDING]
            if not pending:
                continue
            delivery = rng.choice(pending)
            now = at()
            started = [s.start_delivery(delivery.id, now, "sender", LEASE) for s in both]
            assert (started[0] is None) == (started[1] is None)
            if started[0] is None:  # a retry whose backoff has not run out
                continue
            assert started[0].to_dict() == started[1].to_dict()
            outcome = rng.choice(["sent", "sent", "failed", "retry", "leave"])
            if outcome == "leave":  # the sender "dies": expire_deliveries finds it later
                continue
            retry_at = now + timedelta(minutes=1) if outcome == "retry" else None
            error = None if outcome == "sent" else "boom"
            finished = [
                s.finish_delivery(delivery.id, now, sent=outcome == "sent", error=error, retry_at=retry_at)
                for s in both
            ]
            assert finished[0].to_dict() == finished[1].to_dict()
        elif op == "expire":
            now = at(2000)
            assert redis_store.expire_deliveries(now) == memory.expire_deliveries(now)
        elif op == "cleanup":
            now = at(2000)
            assert redis_store.cleanup_resolved(timedelta(hours=1), now) == memory.cleanup_resolved(
                timedelta(hours=1), now
            )

    # counters equal a recomputation over what Redis holds, and the reference store's stats
    assert_same_stats(redis_store.get_stats(), recompute(redis_store, ids))
    assert_same_stats(redis_store.get_stats(), memory.get_stats())
    # per DAG: the DAGs' counters, and a recount from the records (a store written before
    # records were counted per DAG) agree with the reference
    for dags in ([None], ["dag_a"], ["dag_b", None], ["dag_a", "dag_b", "nothing"], []):
        assert_same_stats(redis_store.get_stats(dag_ids=dags), memory.get_stats(dag_ids=dags))
        assert_same_stats(redis_store._stats_of_dags_loaded(set(dags)), memory.get_stats(dag_ids=dags))
    assert redis_store._counted_by_dag  # the first record of the empty store started the counts
    # and every record, delivery and index agrees with the reference
    for record_id in ids:
        mine, reference = redis_store.get(record_id), memory.get(record_id)
        assert (mine and mine.to_dict()) == (reference and reference.to_dict())
        assert [d.to_dict() for d in redis_store.get_deliveries(record_id)] == [
            d.to_dict() for d in memory.get_deliveries(record_id)
        ]
    for incident in {f"inc-{n}" for n in range(15)}:
        assert [r.id for r in redis_store.get_by_incident(incident)] == [r.id for r in memory.get_by_incident(incident)]
        for policy in policies:
            for query in ("find_open", "last_closed"):
                mine = getattr(redis_store, query)(incident, policy)
                reference = getattr(memory, query)(incident, policy)
                assert (mine and mine.id) == (reference and reference.id), (query, incident, policy)
    for policy in (None, *policies):
        assert {r.id for r in redis_store.get_active(policy)} == {r.id for r in memory.get_active(policy)}
    assert redis_store.next_due_at() == memory.next_due_at()
    for states in (None, ["active"], ["resolved", "acknowledged"], ["pending", "active", "escalating"]):
        for policy in (None, "p1"):
            for incident in (None, "inc-3"):
                for dag in (None, "dag_a"):
                    for limit, offset in ((50, 0), (3, 2), (0, 0)):
                        query = dict(
                            states=states,
                            policy_name=policy,
                            incident_id=incident,
                            dag_id=dag,
                            limit=limit,
                            offset=offset,
                        )
                        mine, mine_total = redis_store.list_records(**query)
                        reference, reference_total = memory.list_records(**query)
                        assert ([r.to_dict() for r in mine], mine_total) == (
                            [r.to_dict() for r in reference],
                            reference_total,
                        ), query
    assert redis_store.next_delivery_at() == memory.next_delivery_at()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_counter_stats_equal_a_recomputation_after_random_operations(make_store, seed):
    _random_operations(seed, make_store())


def test_stats_follow_level_and_state_moves(store):
    record = make_record(current_level=1)
    store.create(record)
    current = store.get(record.id)
    current.current_level, current.state = 3, "escalating"
    assert store.update(current, 1)
    stats = store.get_stats()
    assert stats.escalations_by_level == {3: 1} and stats.active_escalations == 1

    current.state, current.resolved_at = "resolved", T0 + timedelta(seconds=90)
    current.closed_at = current.resolved_at
    assert store.update(current, 2)
    stats = store.get_stats()
    assert (stats.active_escalations, stats.resolved_count) == (0, 1)
    assert stats.avg_time_to_resolve_seconds == 90.0

    assert store.cleanup_resolved(timedelta(minutes=1), now=T0 + timedelta(minutes=3)) == 1
    assert store.get_stats().to_dict() == EscalationStats().to_dict()


# --------------------------------------------------------------------------- prefixes


def test_key_prefixes_isolate_stores(make_store):
    one, two = make_store(), make_store()
    a, b = make_record("inc", "p"), make_record("inc", "p")
    assert one.create(a, [make_delivery(a)]) is not None
    assert two.create(b) is not None  # same incident and policy: no clash across prefixes

    assert one.get(b.id) is None and two.get(a.id) is None
    assert [r.id for r in one.get_active()] == [a.id]
    assert two.find_open("inc", "p").id == b.id
    assert two.claim_deliveries(T0, 10, "sender", LEASE) == []
    assert one.get_stats().total_escalations == two.get_stats().total_escalations == 1
    assert two.get_stats().notifications_sent == 0


def test_clear_removes_only_its_own_prefix(make_store, redis_url):
    mine = make_store()
    nested = make_store(mine.key_prefix + "nested:")  # a longer prefix inside mine
    other = make_store()
    for store in (mine, nested, other):
        record = make_record()
        store.create(record, [make_delivery(record)])
    foreign = mine.key_prefix + "not-a-store-key"
    mine.client.set(foreign, "keep me")

    mine.clear()

    left = set(mine.client.scan_iter(match=mine.key_prefix + "*"))
    assert left == {foreign} | set(nested.client.scan_iter(match=nested.key_prefix + "*"))
    assert mine.get_stats().total_escalations == 0 and mine.next_due_at() is None
    assert nested.get_stats().total_escalations == 1 and nested.get_active()
    assert other.get_stats().total_escalations == 1 and other.get_active()
    mine.client.delete(foreign)


# --------------------------------------------------------------------------- failures


def test_unreachable_redis_raises_store_error_without_leaking_the_password():
    store = RedisEscalationStore("redis://:s3cret@127.0.0.1:1/0", key_prefix="x:", socket_connect_timeout=1)
    try:
        with pytest.raises(StoreError, match="unreachable") as info:
            store.get("anything")
        assert "127.0.0.1:1" in str(info.value) and "s3cret" not in str(info.value)
        with pytest.raises(StoreError):
            store.create(make_record())
    finally:
        store.close()


def test_an_injected_client_must_decode_responses(redis_url):
    raw = redis.Redis.from_url(redis_url)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisEscalationStore(client=raw)
    finally:
        raw.close()


# --------------------------------------------------------------------------- per-Dag indexes


def test_records_stored_before_the_no_dag_index_are_indexed_when_first_asked(make_store):
    prefix = f"test:{uuid.uuid4().hex}:"
    old = make_store(prefix)
    none, a = make_record("n"), make_record("a", context={"dag_id": "A"})
    old.create(none)
    old.create(a)
    # as a store of the previous version left them: no no_dag index, no marker
    old.client.delete(prefix + "no_dag", prefix + "no_dag_indexed")
    new = make_store(prefix)
    assert [r.id for r in new.list_records(dag_ids=[None])[0]] == [none.id]
    assert new.get_stats(dag_ids=[None, "A"]).total_escalations == 2
    assert new.client.get(prefix + "no_dag_indexed") == "1"
    assert new.get_stats(dag_ids=["A"]).total_escalations == 1
