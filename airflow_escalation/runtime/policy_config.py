"""The policies config: the spec's ``EscalationPolicyConfig`` and its YAML form, bounded."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_escalation.core import bounds
from airflow_escalation.core.models import MAX_MINUTES, EscalationPolicy, _number

if TYPE_CHECKING:
    from airflow_escalation.oncall.config import OnCallConfig

_CONFIG_FIELDS = {
    "default_policy",
    "policies",
    "global_enabled",
    "enabled",
    "store_type",
    "store_config",
    "store",
    "scheduler_type",
    "scheduler_config",
    "max_concurrent_escalations",
    "cleanup_interval_minutes",
    "metrics_enabled",
    "check_business_hours",
    "retention_days",
    # the on-call sections (airflow_escalation.oncall.config.SECTIONS), parsed there
    "users",
    "schedules",
    "maintenance_windows",
    "routes",  # failure routes: parsed by airflow_escalation.detection.routes (docs/routes.md)
}


@dataclass
class EscalationPolicyConfig:
    """Settings of the policy system (the spec's fields).

    ``max_concurrent_escalations`` caps the escalations paging at once: a trigger beyond it fails
    with code ``capacity``. Closed escalations older than ``retention_days`` are removed every
    ``cleanup_interval_minutes``.
    """

    default_policy: str = "default"
    policies: dict[str, EscalationPolicy] = field(default_factory=dict)
    global_enabled: bool = True
    store_type: str = "memory"
    store_config: dict[str, Any] = field(default_factory=dict)
    scheduler_type: str = "asyncio"
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    max_concurrent_escalations: int = 1000
    cleanup_interval_minutes: float = 60
    metrics_enabled: bool = True
    check_business_hours: bool = True
    retention_days: float = 30
    #: users, schedules and maintenance windows (docs/oncall.md); None when the file has none
    oncall: OnCallConfig | None = None
    #: the ``routes:`` list as written; airflow_escalation.detection.routes checks it
    routes: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.policies, list):
            self.policies = {p.name: p for p in map(EscalationPolicy.from_dict, self.policies)}
        if self.max_concurrent_escalations < 1:
            raise ValueError(f"max_concurrent_escalations: must be >= 1, got {self.max_concurrent_escalations!r}")
        if self.cleanup_interval_minutes <= 0:
            raise ValueError(f"cleanup_interval_minutes: must be > 0, got {self.cleanup_interval_minutes!r}")

    def get_policy(self, name: str | None = None) -> EscalationPolicy | None:
        return self.policies.get(name or self.default_policy)

    def add_policy(self, policy: EscalationPolicy) -> None:
        self.policies[policy.name] = policy

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_policy": self.default_policy,
            "policies": [p.to_dict() for p in self.policies.values()],
            "global_enabled": self.global_enabled,
            "store_type": self.store_type,
            "store_config": dict(self.store_config),
            "scheduler_type": self.scheduler_type,
            "scheduler_config": dict(self.scheduler_config),
            "max_concurrent_escalations": self.max_concurrent_escalations,
            "cleanup_interval_minutes": self.cleanup_interval_minutes,
            "metrics_enabled": self.metrics_enabled,
            "check_business_hours": self.check_business_hours,
            "retention_days": self.retention_days,
            **(self.oncall.to_dict() if self.oncall is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EscalationPolicyConfig:
        """Load the spec's dict form, or the YAML block's form (``escalation:`` with ``store:``)."""
        if not isinstance(data, dict):
            raise ValueError(f"escalation config: expected a mapping, got {type(data).__name__}")
        if "escalation" in data and set(data) <= {"escalation", "users", "schedules", "maintenance_windows", "routes"}:
            # the on-call sections and routes may sit beside the escalation: block (docs/oncall.md)
            beside = {k: v for k, v in data.items() if k != "escalation"}
            data = data["escalation"] or {}
            if not isinstance(data, dict):
                raise ValueError(f"escalation: expected a mapping, got {type(data).__name__}")
            for key in beside:
                if key in data:
                    raise ValueError(f"{key}: given both inside and beside the escalation: block")
            data = {**data, **beside}
        unknown = sorted(map(str, set(data) - _CONFIG_FIELDS))
        if unknown:
            raise ValueError(
                bounds.truncate(f"escalation config: unknown field(s) {', '.join(map(repr, unknown))}", 300)
            )
        for key in ("store", "store_config", "scheduler_config"):
            if not isinstance(data.get(key) or {}, dict):
                raise ValueError(f"{key}: expected a mapping, got {type(data[key]).__name__}")
        for key in ("global_enabled", "enabled", "metrics_enabled", "check_business_hours"):
            if key in data and not isinstance(data[key], bool):
                raise ValueError(f"{key}: expected true or false, got {type(data[key]).__name__}")
        for key in ("default_policy", "store_type", "scheduler_type"):
            if data.get(key) is not None:
                bounds.check_text(data[key], key)
        store = dict(data.get("store") or {})
        store_type = data.get("store_type") or store.pop("type", "memory")
        store_config = {**store, **(data.get("store_config") or {})}
        if not isinstance(data.get("routes") or [], list):
            raise ValueError(f"routes: expected a list, got {type(data['routes']).__name__}")
        raw_policies = data.get("policies") or []
        if not isinstance(raw_policies, list):
            raise ValueError(f"policies: expected a list, got {type(raw_policies).__name__}")
        if len(raw_policies) > bounds.MAX_POLICIES:
            raise ValueError(f"policies: at most {bounds.MAX_POLICIES} policies, got {len(raw_policies)}")
        policies = {}
        for index, raw in enumerate(raw_policies):
            try:
                policy = EscalationPolicy.from_dict(raw)
            except ValueError as exc:
                raise ValueError(f"policies[{index}]: {exc}") from None
            if policy.name in policies:
                raise ValueError(f"policies[{index}]: duplicate policy name {policy.name!r}")
            policies[policy.name] = policy
        default = data.get("default_policy") or (next(iter(policies)) if policies else "default")
        if policies and default not in policies:
            raise ValueError(f"default_policy: {default!r} is not one of the policies {sorted(policies)}")
        return cls(
            default_policy=default,
            policies=policies,
            global_enabled=bool(data.get("global_enabled", data.get("enabled", True))),
            store_type=store_type,
            store_config=store_config,
            scheduler_type=data.get("scheduler_type", "asyncio"),
            scheduler_config=dict(data.get("scheduler_config") or {}),
            max_concurrent_escalations=_number(
                data.get("max_concurrent_escalations", 1000), "max_concurrent_escalations", integer=True
            ),
            cleanup_interval_minutes=_number(
                data.get("cleanup_interval_minutes", 60), "cleanup_interval_minutes", maximum=MAX_MINUTES
            ),
            metrics_enabled=data.get("metrics_enabled", True),
            check_business_hours=data.get("check_business_hours", True),
            retention_days=_number(data.get("retention_days", 30), "retention_days", maximum=MAX_MINUTES),
            oncall=_oncall_sections(data),
            routes=list(data.get("routes") or []),
        )

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> EscalationPolicyConfig:
        return cls.from_dict(load_yaml(source))


def _oncall_sections(data: dict[str, Any]) -> OnCallConfig | None:
    """The on-call sections, validated by their own module (imported only when present)."""
    if not any(data.get(key) for key in ("users", "schedules", "maintenance_windows")):
        return None
    from airflow_escalation.oncall.config import OnCallConfig

    return OnCallConfig.from_sections(data)


def load_yaml(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse YAML from a file path or from YAML text (bounded: see :func:`parse_yaml`)."""
    text = str(source)
    path = Path(text) if isinstance(source, os.PathLike) or "\n" not in text else None
    if path is not None and path.is_file():
        size = path.stat().st_size
        if size > bounds.MAX_YAML_BYTES:
            raise ValueError(f"yaml: at most {bounds.MAX_YAML_BYTES} bytes, the file {str(path)!r} has {size}")
        text = path.read_text(encoding="utf-8")
    elif isinstance(source, os.PathLike):
        raise FileNotFoundError(f"escalation policies file not found: {source}")
    data = parse_yaml(text)
    if not isinstance(data, dict):
        raise ValueError("escalation config: the YAML must hold a mapping at its top")
    return data


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` without its amplifications: aliases (``*name``) are refused (a few
    hundred bytes of nested aliases expand to gigabytes), and so are text over
    ``MAX_YAML_BYTES`` and collections nested deeper than ``MAX_YAML_DEPTH``. Every refusal is a
    ``ValueError`` starting with ``yaml:``, short enough to show."""
    import yaml

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > bounds.MAX_YAML_BYTES:
        raise ValueError(f"yaml: at most {bounds.MAX_YAML_BYTES} bytes, got {size}")
    loader = None
    try:
        loader = _bounded_yaml_loader()(text)  # the reader already refuses unprintable text
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ValueError(bounds.truncate(f"yaml: {exc}")) from None
    except RecursionError:
        raise ValueError(f"yaml: nested too deep (more than {bounds.MAX_YAML_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()


@functools.cache
def _bounded_yaml_loader() -> type:
    import yaml

    class BoundedYamlLoader(yaml.SafeLoader):
        """SafeLoader that refuses aliases and deep nesting while composing (before expansion)."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in escalation policies", event.start_mark
                )
            self._depth += 1
            try:
                if self._depth > bounds.MAX_YAML_DEPTH:
                    mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                    raise yaml.composer.ComposerError(
                        None, None, f"nested deeper than {bounds.MAX_YAML_DEPTH} levels", mark
                    )
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return BoundedYamlLoader
