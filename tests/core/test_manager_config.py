"""EscalationPolicyManager: the spec's YAML and dict forms, default policy (semantics 15)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from airflow_escalation import (
    EscalationEngineConfig,
    EscalationPolicyConfig,
    EscalationPolicyManager,
    EscalationTrigger,
    TargetType,
)
from core_support import CRIT, SEED, SEED_TIMELINE, seed_policy

DAY = timedelta(hours=24)

# The spec's "YAML Configuration" block, exactly as written there.
SPEC_YAML = """\
escalation:
  enabled: true
  default_policy: production_critical
  store:
    type: redis
    redis_url: redis://localhost:6379

  policies:
    - name: production_critical
      description: Production critical alerts
      severity_filter:
        - critical
        - high
      triggers:
        - unacknowledged
      cooldown_minutes: 60
      levels:
        - level: 1
          delay_minutes: 0
          targets:
            - type: user
              identifier: team-lead
              name: Team Lead
            - type: channel
              identifier: "#alerts"
              name: Alerts Channel
          repeat_count: 2
          repeat_interval_minutes: 5

        - level: 2
          delay_minutes: 15
          targets:
            - type: user
              identifier: eng-manager
              name: Engineering Manager
            - type: schedule
              identifier: oncall-primary

        - level: 3
          delay_minutes: 30
          targets:
            - type: user
              identifier: director
            - type: email
              identifier: leadership@company.com
"""

# The spec's "Create from Dictionary" shape, with its "[...]" target lists filled in.
SPEC_DICT = {
    "default_policy": "critical_alerts",
    "store_type": "redis",
    "policies": [
        {
            "name": "critical_alerts",
            "levels": [
                {"level": 1, "delay_minutes": 0, "targets": [{"type": "user", "identifier": "lead"}]},
                {
                    "level": 2,
                    "delay_minutes": 15,
                    "targets": [{"type": "user", "identifier": "manager"}, {"type": "team", "identifier": "platform"}],
                },
            ],
        }
    ],
}


def _assert_spec_yaml_config(config: EscalationPolicyConfig) -> None:
    assert config.default_policy == "production_critical"
    assert config.global_enabled is True
    assert config.store_type == "redis"
    assert config.store_config == {"redis_url": "redis://localhost:6379"}
    assert list(config.policies) == ["production_critical"]
    policy = config.get_policy()
    assert policy.name == "production_critical" and policy.description == "Production critical alerts"
    assert policy.severity_filter == ["critical", "high"]
    assert policy.triggers == [EscalationTrigger.UNACKNOWLEDGED]
    assert policy.cooldown_minutes == 60 and policy.enabled
    shape = [
        (
            lv.level,
            lv.delay_minutes,
            lv.repeat_count,
            lv.repeat_interval_minutes,
            [(t.type, t.identifier, t.name) for t in lv.targets],
        )
        for lv in policy.levels
    ]
    assert shape == [
        (1, 0, 2, 5, [(TargetType.USER, "team-lead", "Team Lead"), (TargetType.CHANNEL, "#alerts", "Alerts Channel")]),
        (
            2,
            15,
            0,
            5,
            [(TargetType.USER, "eng-manager", "Engineering Manager"), (TargetType.SCHEDULE, "oncall-primary", "")],
        ),
        (3, 30, 0, 5, [(TargetType.USER, "director", ""), (TargetType.EMAIL, "leadership@company.com", "")]),
    ]
    # the same ladder as the spec's Python example policy (names aside)
    expected = seed_policy().to_dict()
    got = policy.to_dict()
    for d in (expected, got):
        for level in d["levels"]:
            for target in level["targets"]:
                target["name"] = ""
    assert got == expected


def test_from_yaml_text_loads_the_spec_block():
    manager = EscalationPolicyManager.from_yaml(SPEC_YAML)
    _assert_spec_yaml_config(manager.config)
    assert manager.list_policies() == ["production_critical"]
    assert manager.get_policy("production_critical") is manager.config.policies["production_critical"]
    assert not manager.is_running and manager.engine is None  # the redis store is not touched yet


@pytest.mark.parametrize("as_path", [str, Path], ids=["str-path", "Path"])
def test_from_yaml_file_loads_the_spec_block(tmp_path, as_path):
    path = tmp_path / "escalation.yaml"
    path.write_text(SPEC_YAML)
    manager = EscalationPolicyManager.from_yaml(as_path(path))
    _assert_spec_yaml_config(manager.config)
    _assert_spec_yaml_config(EscalationPolicyConfig.from_yaml(as_path(path)))


def test_from_yaml_missing_path_raises():
    with pytest.raises(FileNotFoundError):
        EscalationPolicyManager.from_yaml(Path("/nonexistent/escalation.yaml"))


def test_from_yaml_disabled_globally():
    manager = EscalationPolicyManager.from_yaml(SPEC_YAML.replace("enabled: true", "enabled: false"))
    assert manager.config.global_enabled is False


def test_from_dict_spec_shape():
    manager = EscalationPolicyManager.from_dict(SPEC_DICT)
    config = manager.config
    assert config.default_policy == "critical_alerts" and config.store_type == "redis"
    assert config.store_config == {}
    policy = manager.get_policy("critical_alerts")
    assert [(lv.level, lv.delay_minutes, [t.key for t in lv.targets]) for lv in policy.levels] == [
        (1, 0, ["user:lead"]),
        (2, 15, ["user:manager", "team:platform"]),
    ]


def test_store_config_merges_store_block_and_store_config():
    config = EscalationPolicyConfig.from_dict(
        {
            "store": {"type": "sqlite", "db_path": "/tmp/a.db"},
            "store_config": {"timeout": 5},
            "policies": [{"name": "p", "levels": [{"level": 1}]}],
        }
    )
    assert config.store_type == "sqlite" and config.store_config == {"db_path": "/tmp/a.db", "timeout": 5}
    assert config.default_policy == "p"  # the first policy when none is named


def test_spec_constructor_and_round_trip():
    config = EscalationPolicyConfig(
        default_policy="default",
        global_enabled=True,
        store_type="redis",
        store_config={"redis_url": "redis://localhost:6379"},
        max_concurrent_escalations=1000,
        cleanup_interval_minutes=60,
    )
    config.add_policy(seed_policy(name="default"))
    again = EscalationPolicyConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


# ------------------------------------------------------------------ running the manager


@pytest.fixture
async def yaml_manager(clock, recorder):
    manager = EscalationPolicyManager.from_yaml(SPEC_YAML, clock=clock)
    manager.config.store_type, manager.config.store_config = "memory", {}
    manager.set_notification_handler(recorder)
    await manager.start()
    yield manager
    await manager.stop()


async def test_manager_trigger_uses_the_default_policy(yaml_manager, recorder):
    result = await yaml_manager.trigger("inc", CRIT)
    assert result.success and result.record.policy_name == "production_critical"
    await yaml_manager.engine.advance(DAY)
    assert recorder.timeline() == SEED_TIMELINE
    assert yaml_manager.get_stats().notifications_sent == len(SEED_TIMELINE)


async def test_manager_forwards_acknowledge_resolve_cancel(yaml_manager, recorder):
    a = (await yaml_manager.trigger("a", CRIT)).record.id
    b = (await yaml_manager.trigger("b", CRIT)).record.id
    await yaml_manager.engine.advance(timedelta(minutes=1))
    assert (await yaml_manager.acknowledge(a, "alice")).record.state == "acknowledged"
    assert (await yaml_manager.resolve(a, "alice")).record.state == "resolved"
    assert (await yaml_manager.cancel(b, "bob", "noise")).record.state == "cancelled"
    await yaml_manager.engine.advance(DAY)
    assert len(recorder.sent) == 4
    stats = yaml_manager.get_stats()
    assert stats.resolved_count == 1 and stats.cancelled_count == 1


async def test_manager_filters_like_the_engine(yaml_manager, recorder):
    assert (await yaml_manager.trigger("inc", {"severity": "low"})).code == "filtered"
    assert (await yaml_manager.trigger("inc", {"severity": "low"}, SEED)).code == "filtered"
    await yaml_manager.engine.advance(DAY)
    assert recorder.timeline() == []


async def test_manager_globally_disabled_triggers_nothing(clock, recorder):
    manager = EscalationPolicyManager.from_yaml(
        SPEC_YAML.replace("enabled: true", "enabled: false"),
        engine_config=EscalationEngineConfig(clock=clock, default_notification_handler=recorder),
    )
    await manager.start()
    try:
        result = await manager.trigger("inc", CRIT)
        assert not result.success and result.code == "filtered"
        await manager.engine.advance(DAY)
        assert recorder.timeline() == []
    finally:
        await manager.stop()


async def test_manager_added_policy_and_capacity(clock, recorder):
    manager = EscalationPolicyManager(EscalationPolicyConfig(max_concurrent_escalations=2), clock=clock)
    manager.set_notification_handler(recorder)
    manager.add_policy(seed_policy())
    assert manager.list_policies() == [SEED]
    await manager.start()
    try:
        # default_policy "default" is not registered: the first matching policy is used
        assert (await manager.trigger("a", CRIT)).record.policy_name == SEED
        assert (await manager.trigger("b", CRIT, SEED)).success
        full = await manager.trigger("c", CRIT, SEED)
        assert not full.success and full.code == "capacity"
        again = await manager.trigger("a", CRIT, SEED)  # joining an open escalation is always allowed
        assert again.success and again.action == "trigger_existing"
        assert manager.remove_policy(SEED) and manager.list_policies() == []
    finally:
        await manager.stop()


def test_manager_stats_before_start_are_empty():
    assert EscalationPolicyManager.from_yaml(SPEC_YAML).get_stats().total_escalations == 0
