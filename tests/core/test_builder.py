"""The one engine builder and the one trigger path (runtime/builder.py), on the fake clock."""

from __future__ import annotations

import pytest

from airflow_escalation import EscalationPolicyConfig, EscalationPolicyManager
from airflow_escalation.runtime.builder import build_engine, scheduler_config_for, trigger_with_gates
from core_support import ladder


def config(**fields) -> EscalationPolicyConfig:
    return EscalationPolicyConfig(policies={"a": ladder("a"), "b": ladder("b")}, default_policy="b", **fields)


def test_scheduler_settings_come_from_the_config_under_what_the_caller_owns(clock):
    cfg = config(
        scheduler_type="apscheduler",
        cleanup_interval_minutes=5,
        scheduler_config={"max_concurrent_jobs": 7, "max_attempts": 9},
    )
    mine = scheduler_config_for(cfg)
    assert (mine.scheduler_type.value, mine.cleanup_interval_seconds) == ("apscheduler", 300)
    assert (mine.max_concurrent_jobs, mine.max_attempts) == (7, 9)
    owned = scheduler_config_for(cfg, owned={"scheduler_type": "asyncio", "max_concurrent_jobs": 2})
    assert (owned.scheduler_type.value, owned.max_concurrent_jobs, owned.max_attempts) == ("asyncio", 2, 9)
    assert scheduler_config_for(cfg, clock=clock).scheduler_type.value == "memory"


def test_refused_scheduler_config_raises_or_is_reported_and_left_out():
    cfg = config(scheduler_config={"max_attempts": 0})
    with pytest.raises(ValueError, match="scheduler_config"):
        scheduler_config_for(cfg)
    errors: list[str] = []
    assert scheduler_config_for(cfg, on_error=errors.append).max_attempts >= 1
    assert len(errors) == 1 and "scheduler_config" in errors[0]


def test_the_built_engine_has_every_policy_and_the_configs_settings(clock, recorder):
    engine = build_engine(config(check_business_hours=False, retention_days=3), clock=clock, handler=recorder)
    assert sorted(engine.policies) == ["a", "b"]
    assert engine.clock is clock and engine.scheduler.__class__.__name__ == "InMemoryScheduler"


async def test_gates_default_policy_capacity_and_global_switch(clock, recorder):
    cfg = config(max_concurrent_escalations=1)
    engine = build_engine(cfg, clock=clock, handler=recorder)
    first = await trigger_with_gates(engine, cfg, "inc-1")
    assert first.success and first.record.policy_name == "b"  # the default policy
    joined = await trigger_with_gates(engine, cfg, "inc-1")
    assert joined.success and joined.action == "trigger_existing"  # joining is never refused for capacity
    full = await trigger_with_gates(engine, cfg, "inc-2")
    assert not full.success and full.code == "capacity"
    cfg.global_enabled = False
    off = await trigger_with_gates(engine, cfg, "inc-3")
    assert not off.success and off.code == "filtered" and "disabled globally" in off.error
    await engine.stop()


async def test_the_manager_triggers_through_the_same_gates(clock):
    manager = EscalationPolicyManager(config(max_concurrent_escalations=1), clock=clock)
    assert (await manager.trigger("inc-1")).success
    assert (await manager.trigger("inc-2")).code == "capacity"
    await manager.stop()
