"""The policies file's on-call sections: ``users:``, ``schedules:``, ``maintenance_windows:``.

:meth:`OnCallConfig.from_sections` validates them (pydantic) and raises ``ValueError`` naming
the field (``schedules[0].layers[1].rotation.participants[2]: unknown user 'erin'``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from airflow_escalation.core import bounds
from airflow_escalation.oncall._base import Model, check_unique, explain
from airflow_escalation.oncall.directory import Directory, User
from airflow_escalation.oncall.schedule import Schedule
from airflow_escalation.oncall.silence import MaintenanceWindow

#: the top-level keys of the policies file this module reads
SECTIONS = ("users", "schedules", "maintenance_windows")


class OnCallConfig(Model):
    users: tuple[User, ...] = Field(default=(), max_length=bounds.MAX_USERS)
    schedules: tuple[Schedule, ...] = Field(default=(), max_length=bounds.MAX_SCHEDULES)
    maintenance_windows: tuple[MaintenanceWindow, ...] = Field(default=(), max_length=bounds.MAX_WINDOWS)

    @model_validator(mode="after")
    def _references(self) -> OnCallConfig:
        Directory(users=self.users)  # duplicate ids
        known = {user.id for user in self.users}
        check_unique((schedule.name for schedule in self.schedules), "schedules", "name", "schedule name")
        for s_index, schedule in enumerate(self.schedules):
            where = f"schedules[{s_index}]"
            for l_index, layer in enumerate(schedule.layers):
                for p_index, user in enumerate(layer.rotation.participants):
                    if user not in known:
                        raise ValueError(
                            f"{where}.layers[{l_index}].rotation.participants[{p_index}]: unknown user {user!r} "
                            f"(add it to users:)"
                        )
            if schedule.fallback is not None and schedule.fallback not in known:
                raise ValueError(f"{where}.fallback: unknown user {schedule.fallback!r} (add it to users:)")
        check_unique((w.name for w in self.maintenance_windows), "maintenance_windows", "name", "window name")
        return self

    @classmethod
    def from_sections(cls, data: dict[str, Any]) -> OnCallConfig:
        """The on-call sections of a policies-file mapping (other keys are ignored)."""
        sections = {key: data[key] for key in SECTIONS if data.get(key) is not None}
        for key, value in sections.items():
            if not isinstance(value, list):
                raise ValueError(f"{key}: expected a list, got {type(value).__name__}")
        try:
            return cls.model_validate(sections)
        except ValidationError as exc:
            raise ValueError(explain(exc)) from None

    @property
    def directory(self) -> Directory:
        return Directory(users=self.users)

    def schedule(self, name: str) -> Schedule | None:
        return next((s for s in self.schedules if s.name == name), None)

    @property
    def empty(self) -> bool:
        return not (self.users or self.schedules or self.maintenance_windows)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)
