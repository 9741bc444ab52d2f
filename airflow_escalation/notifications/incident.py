"""What an Airflow callback context says about an incident, as plain JSON-safe fields.

Three kinds of context reach a notifier:

- **task** (``on_failure_callback``/``on_success_callback`` of a task, in the task process): ``ti``,
  ``dag``, ``run_id``, ``exception``, ``logical_date`` ...;
- **dag** (a DAG's callbacks, in the dag-processor; ``dag.test()`` runs them inline): the same
  keys for the run's last task instance plus ``reason`` (``task_failure``, ``success`` ...);
- **deadline** (a Deadline Alert ``AsyncCallback`` in the triggerer): only ``dag_run`` (the
  REST API's DAG-run JSON) and ``deadline`` (``id``, ``deadline_time``).

:func:`incident_fields` flattens any of them into the fields an incident key template and the
escalation's context use. No Airflow import.
"""

from __future__ import annotations

import string
from datetime import date, datetime
from typing import Any

MAX_EXCEPTION_CHARS = 2000
MAX_FIELD_CHARS = 1000

SOURCE_TASK = "task"
SOURCE_DAG = "dag"
SOURCE_DEADLINE = "deadline"

# one incident per DAG and task: a task's repeated failures join its open escalation
DEFAULT_INCIDENT_KEYS = {
    SOURCE_TASK: "{dag_id}.{task_id}",
    SOURCE_DAG: "{dag_id}",
    SOURCE_DEADLINE: "{dag_id}.deadline",
}
KEY_FIELDS = (
    "dag_id",
    "task_id",
    "run_id",
    "map_index",
    "try_number",
    "logical_date",
    "source",
    "severity",
    "deadline_id",
)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    try:
        return getattr(obj, name, default)
    except Exception:  # noqa: BLE001 - lazy proxies may fail
        return default


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _text(value: Any, limit: int = MAX_FIELD_CHARS) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 15] + "... [truncated]"


def context_source(context: dict[str, Any]) -> str:
    if "deadline" in context:
        return SOURCE_DEADLINE
    if "reason" in context:
        return SOURCE_DAG
    return SOURCE_TASK


def incident_fields(context: dict[str, Any]) -> dict[str, Any]:
    """The incident's fields from a callback context (JSON-safe; missing ones are ``None``)."""
    source = context_source(context)
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    task = context.get("task")

    dag_id = _get(dag, "dag_id") or _get(ti, "dag_id") or _get(dag_run, "dag_id")
    run_id = context.get("run_id") or _get(ti, "run_id") or _get(dag_run, "run_id") or _get(dag_run, "dag_run_id")
    fields: dict[str, Any] = {
        "source": source,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": _get(ti, "task_id") or _get(task, "task_id"),
        "map_index": None,
        "try_number": None,
        "logical_date": _iso(context.get("logical_date") or _get(dag_run, "logical_date")),
        "log_url": None,
        "exception": None,
        "exception_type": None,
        "reason": _text(context.get("reason")) if source == SOURCE_DAG else None,
        "deadline_id": None,
        "deadline_time": None,
    }
    if ti is not None:
        map_index = _get(ti, "map_index")
        fields["map_index"] = int(map_index) if isinstance(map_index, int) else -1
        try_number = _get(ti, "try_number")
        fields["try_number"] = int(try_number) if isinstance(try_number, int) else None
        try:
            fields["log_url"] = _text(ti.log_url)
        except Exception:  # noqa: BLE001 - needs [api] base_url; a context without it still pages
            fields["log_url"] = None
    exception = context.get("exception")
    if exception is not None:
        fields["exception"] = _text(exception, MAX_EXCEPTION_CHARS) or type(exception).__name__
        fields["exception_type"] = type(exception).__name__ if isinstance(exception, BaseException) else None
    deadline = context.get("deadline")
    if deadline is not None:
        fields["deadline_id"] = _text(_get(deadline, "id"))
        fields["deadline_time"] = _iso(_get(deadline, "deadline_time"))
    return fields


class IncidentKeyError(ValueError):
    """The incident key template names a field the context does not have."""


class _Fields(dict):
    def __missing__(self, key: str) -> Any:
        raise IncidentKeyError(
            f"incident_key: unknown field {{{key}}} (known: {', '.join('{' + k + '}' for k in sorted(self))})"
        )


def render_incident_key(template: str, fields: dict[str, Any]) -> str:
    """``template.format_map(fields)``; a field the context lacks renders as ``-``."""
    values = _Fields({k: ("-" if v is None else v) for k, v in fields.items()})
    try:
        key = string.Formatter().vformat(template, (), values)
    except IncidentKeyError:
        raise
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise IncidentKeyError(f"incident_key {template!r}: {exc}") from None
    key = key.strip()
    if not key:
        raise IncidentKeyError(f"incident_key {template!r} rendered to an empty string")
    return key[:255]


__all__ = [
    "DEFAULT_INCIDENT_KEYS",
    "SOURCE_DAG",
    "SOURCE_DEADLINE",
    "SOURCE_TASK",
    "IncidentKeyError",
    "context_source",
    "incident_fields",
    "render_incident_key",
]
