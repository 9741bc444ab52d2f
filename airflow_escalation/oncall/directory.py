"""The users directory: who people are and how to reach them.

A ``user:<id>`` target, and whoever a schedule puts on call, resolve here to the targets that
reach that person: one target per contact method, each through the Airflow connection the
method names (``conn_id``), exactly like a target written in a policy. A contact without a
``conn_id`` goes to the engine's notification handler. Phone numbers are kept for a future
channel and not delivered today.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, field_validator, model_validator

from airflow_escalation.core import bounds
from airflow_escalation.core.models import EscalationTarget
from airflow_escalation.core.types import TargetType
from airflow_escalation.oncall._base import NAME_PATTERN, Model, check_unique, check_zone

ContactType = Literal["email", "slack", "webhook", "phone"]

# how each contact method is delivered: the target type a policy would use for it
_TARGET_TYPES: dict[str, TargetType] = {
    "email": TargetType.EMAIL,  # an smtp connection sends to the address
    "slack": TargetType.CHANNEL,  # a slack (API) connection posts to the member id: a direct message
    "webhook": TargetType.WEBHOOK,  # an http connection posts to this path under its URL
}


class ContactMethod(Model):
    """One way to reach a user: ``email``, ``slack`` (member id), ``webhook`` (a path under an
    http connection's URL) or ``phone`` (kept, not delivered yet)."""

    type: ContactType
    address: str = Field(min_length=1, max_length=bounds.MAX_IDENTIFIER)
    conn_id: str | None = Field(default=None, min_length=1, max_length=bounds.MAX_NAME)

    @property
    def deliverable(self) -> bool:
        return self.type in _TARGET_TYPES


class User(Model):
    """A person: ``id`` (what targets and schedules name), display ``name``, ``time_zone``, and
    contact methods in the order they are tried (all are sent to)."""

    id: str = Field(pattern=NAME_PATTERN)
    name: str = Field(default="", max_length=bounds.MAX_NAME)
    time_zone: str = Field(default="UTC", max_length=64)
    contacts: tuple[ContactMethod, ...] = Field(default=(), max_length=bounds.MAX_CONTACTS)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_zone(value)

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def targets(self) -> list[EscalationTarget]:
        """The targets that reach this user (deliverable contact methods, in order)."""
        return [
            EscalationTarget(
                type=_TARGET_TYPES[contact.type],
                identifier=contact.address,
                name=self.display_name,
                conn_id=contact.conn_id,
                metadata={"user": self.id},
            )
            for contact in self.contacts
            if contact.deliverable
        ]


class Directory(Model):
    """Users by id."""

    users: tuple[User, ...] = Field(default=(), max_length=bounds.MAX_USERS)

    @model_validator(mode="after")
    def _unique(self) -> Directory:
        check_unique((user.id for user in self.users), "users", "id", "user id")
        return self

    @cached_property
    def by_id(self) -> dict[str, User]:
        return {user.id: user for user in self.users}

    def get(self, user_id: str) -> User | None:
        return self.by_id.get(user_id)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self.by_id
