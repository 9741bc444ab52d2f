"""Failure routes: which failures the service pages for by itself, under which policy (docs/routes.md).

A route is data in the policies file, beside the policies (``escalation: routes:``)::

    routes:
      - name: payments
        dag_id: "payments_*"          # glob; default "*"
        tags: [finance]               # the DAG has every one of these tags
        owners: [data-eng]            # the DAG has one of these owners
        task_id: "load_*"             # glob; task kinds only
        run_types: [scheduled, backfill]
        kind: [task_failed, task_up_for_retry]
        min_try: 2                    # task_up_for_retry: from the 2nd failed try on
        over_minutes: 30              # the *_over_duration kinds
        policy: production_critical
        severity: critical
        incident_key: "{dag_id}.{task_id}"

**Precedence: the first route in the file that matches wins**; later matches are shown by the
explain, never used. A failure no route matches is not paged by the service (the notifier may
still page it). No Airflow import: the detector (:mod:`.watcher`) feeds it plain events.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_escalation.core import bounds
from airflow_escalation.core.severity import normalize_severity
from airflow_escalation.notifications.incident import (
    DEFAULT_INCIDENT_KEYS,
    KEY_FIELDS,
    SOURCE_DAG,
    SOURCE_DEADLINE,
    SOURCE_TASK,
    IncidentKeyError,
    render_incident_key,
)

TASK_FAILED = "task_failed"
TASK_UP_FOR_RETRY = "task_up_for_retry"
TASK_OVER_DURATION = "task_over_duration"
DAG_RUN_FAILED = "dag_run_failed"
DAG_RUN_OVER_DURATION = "dag_run_over_duration"
DEADLINE_MISSED = "deadline_missed"

KINDS = (TASK_FAILED, TASK_UP_FOR_RETRY, TASK_OVER_DURATION, DAG_RUN_FAILED, DAG_RUN_OVER_DURATION, DEADLINE_MISSED)
TASK_KINDS = frozenset({TASK_FAILED, TASK_UP_FOR_RETRY, TASK_OVER_DURATION})
DURATION_KINDS = frozenset({TASK_OVER_DURATION, DAG_RUN_OVER_DURATION})
# the notifier's incident-key sources, so a route's default key is the notifier's default key
KIND_SOURCE = {
    TASK_FAILED: SOURCE_TASK,
    TASK_UP_FOR_RETRY: SOURCE_TASK,
    TASK_OVER_DURATION: SOURCE_TASK,
    DAG_RUN_FAILED: SOURCE_DAG,
    DAG_RUN_OVER_DURATION: SOURCE_DAG,
    DEADLINE_MISSED: SOURCE_DEADLINE,
}
RUN_TYPES = ("scheduled", "manual", "backfill", "asset_triggered", "operator_triggered", "asset_materialization")
ROUTE_KEY_FIELDS = (*KEY_FIELDS, "kind")

RunType = Literal["scheduled", "manual", "backfill", "asset_triggered", "operator_triggered", "asset_materialization"]


class RouteError(ValueError):
    """A route that cannot be used; the message starts with the field (``routes[2].kind: ...``)."""


def check_glob(value: str, field_name: str) -> str:
    """``value`` if it is a usable glob (``*``, ``?``, ``[abc]``, ``[!abc]``), else a ValueError."""
    bounds.check_text(value, field_name, bounds.MAX_NAME, allow_empty=False)
    # fnmatch takes an unclosed '[' literally: refuse it, the author meant a class
    depth = 0
    for char in value:
        if char == "[":
            if depth:
                raise ValueError(f"{field_name}: invalid glob {value!r}: '[' inside a [...] class")
            depth = 1
        elif char == "]" and depth:
            depth = 0
    if depth:
        raise ValueError(f"{field_name}: invalid glob {value!r}: '[' is never closed")
    try:
        re.compile(fnmatch.translate(value))
    except re.error as exc:
        raise ValueError(f"{field_name}: invalid glob {value!r}: {exc}") from None
    return value


class Route(BaseModel):
    """One failure route (see the module docstring); built by :func:`parse_routes`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Optional[str] = Field(None, max_length=bounds.MAX_NAME)
    dag_id: str = "*"
    tags: list[str] = Field(default_factory=list, max_length=bounds.MAX_ROUTE_VALUES)
    owners: list[str] = Field(default_factory=list, max_length=bounds.MAX_ROUTE_VALUES)
    task_id: str = "*"
    run_types: list[RunType] = Field(default_factory=list, max_length=len(RUN_TYPES))
    kind: list[str] = Field(default_factory=lambda: [TASK_FAILED], min_length=1, max_length=len(KINDS))
    min_try: int = Field(1, ge=1, le=bounds.MAX_ROUTE_TRY)
    over_minutes: Optional[float] = Field(None, gt=0, le=bounds.MAX_ROUTE_OVER_MINUTES)
    policy: str = Field(..., min_length=1, max_length=bounds.MAX_NAME)
    severity: str = Field("high", min_length=1, max_length=bounds.MAX_ROUTE_SEVERITY)
    incident_key: Optional[str] = Field(None, min_length=1, max_length=bounds.MAX_NAME)
    resolve_on_success: bool = True

    @field_validator("kind", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("kind")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in KINDS:
                raise ValueError(f"unknown kind {item!r} (known: {', '.join(KINDS)})")
        return list(dict.fromkeys(value))

    @field_validator("dag_id", "task_id")
    @classmethod
    def _glob(cls, value: str) -> str:
        return check_glob(value, "glob")

    @field_validator("tags", "owners")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for item in value:
            bounds.check_text(item, "value", bounds.MAX_NAME, allow_empty=False)
        return value

    @field_validator("severity")
    @classmethod
    def _normalized(cls, value: str) -> str:
        return normalize_severity(value) or value

    @field_validator("incident_key")
    @classmethod
    def _key(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            sample = {name: "x" for name in ROUTE_KEY_FIELDS}
            try:
                render_incident_key(value, sample)
            except IncidentKeyError as exc:
                raise ValueError(str(exc).removeprefix("incident_key").lstrip(": ")) from None
        return value

    # ------------------------------------------------------------------ reading a route

    @property
    def label(self) -> str:
        return self.name or f"{self.dag_id} -> {self.policy}"

    @property
    def matches_every_dag(self) -> bool:
        """No DAG filter at all: every DAG of the deployment pages through this route."""
        return self.dag_id.strip("*") == "" and not self.tags and not self.owners

    def incident_template(self, kind: str) -> str:
        return self.incident_key or DEFAULT_INCIDENT_KEYS[KIND_SOURCE[kind]]

    def why_not(self, event: FailureEvent) -> Optional[str]:
        """``None`` when this route catches ``event``, else the first reason it does not."""
        if event.kind not in self.kind:
            return f"kind {event.kind} is not one of {self.kind}"
        if not fnmatch.fnmatchcase(event.dag_id, self.dag_id):
            return f"dag_id {event.dag_id!r} does not match {self.dag_id!r}"
        missing = [tag for tag in self.tags if tag not in event.tags]
        if missing:
            return f"the DAG lacks tag(s) {missing}"
        if self.owners and not set(self.owners) & set(event.owners):
            return f"the DAG's owners {sorted(event.owners)} are none of {self.owners}"
        if event.kind in TASK_KINDS and not fnmatch.fnmatchcase(event.task_id or "", self.task_id):
            return f"task_id {event.task_id!r} does not match {self.task_id!r}"
        if self.run_types and event.run_type not in self.run_types:
            return f"run type {event.run_type!r} is not one of {self.run_types}"
        if event.kind == TASK_UP_FOR_RETRY and (event.try_number or 0) < self.min_try:
            return f"try {event.try_number} is before min_try {self.min_try}"
        return None

    def over_seconds(self) -> Optional[float]:
        return self.over_minutes * 60 if self.over_minutes is not None else None


@dataclass(frozen=True)
class FailureEvent:
    """What the detector saw (or what an explain asks about): one failure of one DAG."""

    kind: str
    dag_id: str
    task_id: Optional[str] = None
    run_id: Optional[str] = None
    run_type: Optional[str] = None
    map_index: int = -1
    try_number: Optional[int] = None
    tags: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()
    at: Optional[datetime] = None  # when it happened (the task's or run's end, the deadline)
    began: Optional[datetime] = None  # the failed try's (or run's) start: a page since then is its page
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def identity(self) -> tuple[Any, ...]:
        """The same failure seen twice (two scans, two replicas) has the same identity."""
        return (self.kind, self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number)


@dataclass(frozen=True)
class RouteCheck:
    index: int
    route: Route
    reason: Optional[str]  # None: it matches

    @property
    def matches(self) -> bool:
        return self.reason is None


@dataclass
class RouteTable:
    """The routes in file order, and the warnings found while reading them."""

    routes: list[Route] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.routes)

    @property
    def kinds(self) -> set[str]:
        return {kind for route in self.routes for kind in route.kind}

    def duration_routes(self, kind: str) -> list[tuple[int, Route]]:
        return [(i, r) for i, r in enumerate(self.routes) if kind in r.kind and r.over_minutes is not None]

    def check(self, event: FailureEvent) -> list[RouteCheck]:
        return [RouteCheck(i, route, route.why_not(event)) for i, route in enumerate(self.routes)]

    def route_for(self, event: FailureEvent) -> Optional[Route]:
        """The route that catches ``event``: the first in file order that matches."""
        for route in self.routes:
            if route.why_not(event) is None:
                return route
        return None


def incident_key(route: Route, event: FailureEvent) -> str:
    """The incident id the route gives ``event`` (the notifier's rendering, same fields)."""
    fields = {**{name: None for name in ROUTE_KEY_FIELDS}, **event.fields}
    fields.update(kind=event.kind, severity=route.severity)
    try:
        return render_incident_key(route.incident_template(event.kind), fields)
    except IncidentKeyError:
        return render_incident_key(DEFAULT_INCIDENT_KEYS[KIND_SOURCE[event.kind]], fields)


def _field_of(error: dict[str, Any], index: int) -> str:
    path = f"routes[{index}]"
    for part in error.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_route(raw: Any, index: int, policy_names: Optional[set[str]] = None) -> Route:
    """One route, or a :class:`RouteError` naming its field (``routes[3].kind: ...``)."""
    where = f"routes[{index}]"
    if not isinstance(raw, dict):
        raise RouteError(f"{where}: expected a mapping, got {type(raw).__name__}")
    try:
        route = Route.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "literal_error" and error.get("loc", ("",))[0] == "run_types":
            # name the value, as the other refusals do
            message = f"unknown run type {error.get('input')!r} (known: {', '.join(RUN_TYPES)})"
        message = message.split(": ", 1)[1] if message.startswith(("glob: ", "value: ")) else message
        raise RouteError(bounds.truncate(f"{_field_of(error, index)}: {message}")) from None
    if policy_names is not None and route.policy not in policy_names:
        raise RouteError(
            bounds.truncate(f"{where}.policy: unknown policy {route.policy!r} (known: {sorted(policy_names)})")
        )
    duration_kinds = DURATION_KINDS & set(route.kind)
    if duration_kinds and route.over_minutes is None:
        raise RouteError(f"{where}.over_minutes: required for kind {sorted(duration_kinds)}")
    if route.over_minutes is not None and not duration_kinds:
        raise RouteError(f"{where}.over_minutes: only for kinds {sorted(DURATION_KINDS)}")
    if route.min_try > 1 and TASK_UP_FOR_RETRY not in route.kind:
        raise RouteError(f"{where}.min_try: only for kind {TASK_UP_FOR_RETRY}")
    if route.task_id != "*" and not TASK_KINDS & set(route.kind):
        # a Dag-level kind has no task: a task_id there would be silently ignored
        raise RouteError(f"{where}.task_id: only for task kinds {sorted(TASK_KINDS)}")
    return route


def parse_routes(raw: Any, policy_names: Optional[set[str]] = None) -> RouteTable:
    """The ``routes:`` list of the policies file, checked against the known ``policy_names``.

    Refuses (``RouteError`` naming the field) a route with an unknown policy, kind or run type, an
    invalid glob, a bad incident key template; a route matching every DAG is kept, with a warning.
    """
    if raw is None:
        return RouteTable()
    if not isinstance(raw, list):
        raise RouteError(f"routes: expected a list, got {type(raw).__name__}")
    if len(raw) > bounds.MAX_ROUTES:
        raise RouteError(f"routes: at most {bounds.MAX_ROUTES} routes, got {len(raw)}")
    table = RouteTable()
    names: set[str] = set()
    for index, item in enumerate(raw):
        route = parse_route(item, index, policy_names)
        if route.name is not None:
            if route.name in names:
                raise RouteError(f"routes[{index}].name: duplicate route name {route.name!r}")
            names.add(route.name)
        if route.matches_every_dag:
            table.warnings.append(
                f"routes[{index}] ({route.label}): matches every DAG (no dag_id, tags or owners filter); "
                f"every {'/'.join(route.kind)} of the deployment pages {route.policy!r}"
            )
        table.routes.append(route)
    return table


def config_routes(config: Any) -> RouteTable:
    """The routes of a loaded ``EscalationPolicyConfig``, checked against its own policies."""
    return parse_routes(config.routes, set(config.policies))


def route_dict(route: Route, index: int) -> dict[str, Any]:
    """A route as the REST API and the CLI show it."""
    data = route.model_dump(mode="json")
    data["index"] = index
    data["name"] = route.label
    data["incident_keys"] = {kind: route.incident_template(kind) for kind in route.kind}
    data["matches_every_dag"] = route.matches_every_dag
    return data


RouteSpec = Union[Route, dict[str, Any]]

__all__ = [
    "DAG_RUN_FAILED",
    "DAG_RUN_OVER_DURATION",
    "DEADLINE_MISSED",
    "KINDS",
    "RUN_TYPES",
    "TASK_FAILED",
    "TASK_OVER_DURATION",
    "TASK_UP_FOR_RETRY",
    "FailureEvent",
    "Route",
    "RouteCheck",
    "RouteError",
    "RouteTable",
    "check_glob",
    "config_routes",
    "incident_key",
    "parse_route",
    "parse_routes",
    "route_dict",
]
