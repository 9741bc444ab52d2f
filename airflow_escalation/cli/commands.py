"""The escalation commands: validate policy files offline, operate the escalation service,
drain the local spool. One implementation behind three entry points:

    airflow escalation list --state active -o json       (Airflow's CLI, provider info's `cli` key)
    airflow-escalation --url http://localhost:8080 --username admin --password ... list
    python -m airflow_escalation.spool drain             (the spool group alone)

    ... policy validate POLICIES.yaml [--remote]
    ... show ID; ack ID --note "looking"; resolve ID; cancel ID --reason ...; escalate ID
    ... trigger orders-etl --policy production_critical --severity critical --context dag_id=orders_etl
    ... stats; health; policy list; spool list; spool drain [--budget 60]

:data:`COMMANDS` declares every command once; :func:`build_parser` builds the standalone parser
from it and :mod:`airflow_escalation.cli.definition` builds Airflow's ``GroupCommand``.

The service is chosen by ``--url`` (or ``ESCALATION_URL``) with ``--username/--password``
(``ESCALATION_USERNAME``/``ESCALATION_PASSWORD``) or ``--token`` (``ESCALATION_TOKEN``), or by
``--conn-id`` (an Airflow connection, through ``EscalationHook``; under ``airflow escalation`` it
defaults to ``escalation_default``). ``-o table|json|yaml|plain`` as Airflow's own commands
(``--json`` is ``-o json``). Exit status: 0 success, 1 failure (service down, not found,
conflict, refused, invalid policy, spool entries left), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from airflow_escalation.cli.spool import drain_spool, list_spool
from airflow_escalation.client.errors import (
    EscalationAPIError,
    EscalationAuthError,
    EscalationClientError,
    EscalationConflict,
    EscalationNotFound,
    EscalationServiceUnavailable,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command line: exit 2."""


class Failure(Exception):
    """Expected failure with a one-line message: exit 1."""


# --------------------------------------------------------------------------- formatting


def _ts(value: Any) -> str:
    """The one time format (core/timefmt.py), ``-`` for none."""
    from airflow_escalation.core.timefmt import format_time

    if not value:
        return "-"
    try:
        return format_time(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)


def _times(count: int) -> str:
    return "not yet" if not count else f"{count} time" if count == 1 else f"{count} times"


def _next(record: dict[str, Any]) -> str:
    """``level 2 → eng-manager in 12 min (2026-… UTC)``: the API's next_step (the planner's)."""
    from airflow_escalation.core.timefmt import format_relative

    step = record.get("next_step")
    if not step:
        return "-"
    due = str(step.get("due_at") or "")
    when = format_relative(due, datetime.now(timezone.utc)) if due else ""
    return f"{step.get('text')} {when} ({_ts(due)})"


def _minutes(value: float) -> str:
    if value == int(value):
        return f"{int(value)} min"
    return f"{value:g} min"


def _target(t: Any) -> str:
    if isinstance(t, str):
        return t
    ident = t.get("identifier", "?")
    name = t.get("name")
    label = f"{name} <{ident}>" if name and name != ident else ident
    return f"{label} ({t.get('type', 'user')})"


def _describe_policy(policy: Any) -> list[str]:
    """The ladder of one ``EscalationPolicy`` as lines of text."""
    from airflow_escalation.core.types import DelayBasis

    head = f"{policy.name}" + (f" — {policy.description}" if policy.description else "")
    if not policy.enabled:
        head += "  [disabled]"
    lines = [head]
    facts = [
        "severity: " + (", ".join(policy.severity_filter) if policy.severity_filter else "any"),
        "triggers: " + ", ".join(t.value for t in policy.triggers),
    ]
    if policy.cooldown_minutes:
        facts.append(f"cooldown {_minutes(policy.cooldown_minutes)}")
    facts.append(f"max escalations: {policy.max_escalations or 'unlimited'}")
    lines.append("  " + "; ".join(facts))
    if policy.business_hours_only:
        days = ",".join("Mon Tue Wed Thu Fri Sat Sun".split()[d] for d in policy.business_days)
        lines.append(
            f"  business hours: {days} {policy.business_hours_start:02d}:00-"
            f"{policy.business_hours_end:02d}:00 {policy.timezone} "
            f"(outside: {policy.business_hours_mode.value})"
        )
    at = 0.0
    for level in policy.levels:
        at = at + level.delay_minutes if policy.delay_basis == DelayBasis.PREVIOUS_LEVEL else level.delay_minutes
        targets = ", ".join(_target(t.to_dict()) for t in level.targets) or "(no targets)"
        extra = []
        if level.repeat_count:
            extra.append(f"repeat {level.repeat_count}x every {_minutes(level.repeat_interval_minutes)}")
        if not level.require_ack:
            extra.append("notify only")
        if level.auto_resolve_minutes:
            extra.append(f"auto-resolve after {_minutes(level.auto_resolve_minutes)}")
        suffix = f"  [{'; '.join(extra)}]" if extra else ""
        lines.append(f"  L{level.level}  at +{_minutes(at):<8} {targets}{suffix}")
    return lines


def _result_line(result: dict[str, Any]) -> str:
    record = result.get("record") or {}
    action = result.get("action") or "?"
    if not result.get("success"):
        return f"{action} refused ({result.get('code', 'invalid')}): {result.get('error') or result.get('message')}"
    bits = [f"{action}: {record.get('id', '?')}"]
    if record:
        bits.append(
            f"incident {record.get('incident_id')}, policy {record.get('policy_name')}, "
            f"state {record.get('state')}, level {record.get('current_level')}"
        )
    targets = result.get("targets_notified") or []
    if targets:
        bits.append("notified " + ", ".join(_target(t) for t in targets))
    return " — ".join(bits)


def _timeline(record: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The record's steps (core/timeline.steps, as the pages show them): ``(at, lines)``, the
    step's title then one line per delivery."""
    from airflow_escalation.core.timeline import steps

    entries: list[tuple[str, list[str]]] = []
    for step in steps(record.get("history") or [], record.get("deliveries") or []):
        lines = [step.title + (f"  ({step.detail})" if step.detail else "")]
        for d in step.deliveries:
            line = f"{_target(d.get('target') or {})}: {d.get('state')}"
            if (d.get("attempts") or 0) > 1:
                line += f" after {d['attempts']} attempts"
            if d.get("last_error"):
                line += f"  error: {d['last_error']}"
            lines.append(line)
        if not step.deliveries and step.targets:
            lines.append("targets: " + ", ".join(step.targets))
        entries.append((step.at, lines))
    return entries


def _show(record: dict[str, Any], out: TextIO) -> None:
    fields = [
        ("id", record.get("id")),
        ("incident", record.get("incident_id")),
        ("policy", record.get("policy_name")),
        ("state", record.get("state")),
        ("level", record.get("current_level")),
        ("trigger", record.get("trigger_type")),
        ("created", _ts(record.get("created_at"))),
        ("updated", _ts(record.get("updated_at"))),
        (
            "acknowledged",
            f"{_ts(record.get('acknowledged_at'))}"
            + (f" by {record['acknowledged_by']}" if record.get("acknowledged_by") else ""),
        ),
        (
            "resolved",
            f"{_ts(record.get('resolved_at'))}" + (f" by {record['resolved_by']}" if record.get("resolved_by") else ""),
        ),
        ("closed", _ts(record.get("closed_at"))),
        ("next", _next(record)),
        ("escalated", _times(record.get("escalation_count") or 0)),
        ("notifications sent", record.get("notification_count")),
    ]
    width = max(len(k) for k, _ in fields)
    for name, value in fields:
        out.write(f"{name.ljust(width)}  {value if value is not None else '-'}\n")
    if record.get("context"):
        out.write("context\n")
        for k, v in record["context"].items():
            out.write(f"  {k} = {v}\n")
    timeline = _timeline(record)
    out.write(f"timeline ({len(timeline)} steps)\n")
    for when, lines in timeline:
        out.write(f"  {_ts(when):<23}  {lines[0]}\n")
        for line in lines[1:]:
            out.write(f"  {'':<23}    {line}\n")


def _structured(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") in ("json", "yaml")


def _console(out: TextIO) -> Any:
    # Airflow's console: the same -o table|json|yaml|plain rendering as `airflow pools list`
    from airflow.cli.simple_table import AirflowConsole

    return AirflowConsole(file=out)


def _emit(data: Any, args: argparse.Namespace, out: TextIO) -> None:
    """A whole answer as JSON or YAML (``-o json|yaml``)."""
    data = json.loads(json.dumps(data, default=str))  # datetimes and the like as strings
    if args.output == "yaml":
        _console(out).print_as_yaml(data)
    else:
        _console(out).print_as_json(data)


def _rows(rows: list[dict[str, Any]], args: argparse.Namespace, out: TextIO) -> None:
    """Rows as ``-o table`` or ``-o plain`` (``-o json|yaml``: print the whole answer instead)."""
    if args.output == "plain":
        from tabulate import tabulate  # what AirflowConsole's plain table uses, written to `out`

        if rows:
            out.write(tabulate([list(r.values()) for r in rows], tablefmt="plain", headers=list(rows[0])) + "\n")
        return
    _console(out).print_as(rows, output="table")


# --------------------------------------------------------------------------- commands


def _cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.runtime.builder import scheduler_config_for
    from airflow_escalation.runtime.policy_config import EscalationPolicyConfig

    path = args.file
    if not os.path.isfile(path):
        raise Failure(f"{path}: no such file")
    if args.remote:
        with open(path, encoding="utf-8") as fh:
            answer = _client(args).validate_policy(yaml=fh.read())
        if _structured(args):
            _emit(answer, args, out)
        if not answer.get("valid"):
            raise Failure(f"{path}: invalid: " + "; ".join(answer.get("errors") or ["(no detail)"]))
        if not _structured(args):
            out.write(f"{path}: valid on the service ({', '.join(answer.get('policies') or [])})\n")
            for warning in answer.get("warnings") or []:
                out.write(f"warning: {warning}\n")
        return EXIT_OK
    try:
        config = EscalationPolicyConfig.from_yaml(Path(path))
        scheduler_config_for(config)  # what the engine builder would refuse, refused here too
    except (ValueError, TypeError) as exc:
        if str(exc).startswith("yaml:"):  # not loadable YAML (syntax, aliases, size, depth)
            raise Failure(f"{path}: cannot load: {' '.join(str(exc).split())}") from None
        raise Failure(f"{path}: invalid: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - an unreadable file and the like
        message = " ".join(str(exc).split())
        raise Failure(f"{path}: cannot load: {type(exc).__name__}: {message}") from None
    from airflow_escalation.detection.routes import RouteError, config_routes

    try:
        routes = config_routes(config)
    except RouteError as exc:
        raise Failure(f"{path}: invalid: {exc}") from None
    if _structured(args):
        _emit(
            {
                "valid": True,
                "default_policy": config.default_policy,
                "policies": [p.to_dict() for p in config.policies.values()],
                "routes": len(routes.routes),
                "warnings": routes.warnings,
            },
            args,
            out,
        )
        return EXIT_OK
    count = len(config.policies)
    out.write(
        f"{path}: valid, {count} polic{'y' if count == 1 else 'ies'}"
        + (f" (default: {config.default_policy})" if count else "")
        + "\n"
    )
    for policy in config.policies.values():
        out.write("\n" + "\n".join(_describe_policy(policy)) + "\n")
    if routes.routes:
        out.write(f"\n{len(routes.routes)} failure route(s) (the first that matches wins)\n")
    for warning in routes.warnings:
        out.write(f"warning: {warning}\n")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    page = _client(args).list_escalations(
        args.state,
        policy=args.policy,
        incident=args.incident,
        dag_id=args.dag_id,
        active=True if args.active else None,
        limit=args.limit,
        offset=args.offset,
    )
    if _structured(args):
        _emit(page, args, out)
        return EXIT_OK
    records = page.get("escalations") or []
    if not records:
        out.write("no escalations\n")
        return EXIT_OK
    _rows(
        [
            {
                "id": r.get("id", ""),
                "state": r.get("state", ""),
                "level": r.get("current_level", ""),
                "policy": r.get("policy_name", ""),
                "incident": r.get("incident_id", ""),
                "created": _ts(r.get("created_at")),
                "next": _ts(r.get("next_escalation_at")),
            }
            for r in records
        ],
        args,
        out,
    )
    total = page.get("total", len(records))
    offset = page.get("offset", 0) or 0
    out.write(f"{offset + 1}-{offset + len(records)} of {total}\n")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    record = _client(args).get_escalation(args.id)
    if _structured(args):
        _emit(record, args, out)
    else:
        _show(record, out)
    return EXIT_OK


def _parse_context(pairs: Sequence[str]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--context: expected key=value, got {pair!r}")
        try:  # numbers, booleans, null, lists and objects in JSON; anything else is a string
            parsed = json.loads(value)
            context[key.strip()] = parsed if not isinstance(parsed, str) else value
        except ValueError:
            context[key.strip()] = value
    return context


def _result(args: argparse.Namespace, result: dict[str, Any], out: TextIO) -> int:
    if _structured(args):
        _emit(result, args, out)
    if not result.get("success"):
        raise Failure(_result_line(result))
    if not _structured(args):
        out.write(_result_line(result) + "\n")
    return EXIT_OK


def _cmd_trigger(args: argparse.Namespace, out: TextIO) -> int:
    context = _parse_context(args.context)
    result = _client(args).trigger(
        args.incident, context, policy_name=args.policy, severity=args.severity, trigger_type=args.trigger_type
    )
    return _result(args, result, out)


def _cmd_ack(args: argparse.Namespace, out: TextIO) -> int:
    return _result(args, _client(args).acknowledge(args.id, args.note), out)


def _cmd_resolve(args: argparse.Namespace, out: TextIO) -> int:
    return _result(args, _client(args).resolve(args.id, args.note), out)


def _cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    return _result(args, _client(args).cancel(args.id, args.reason), out)


def _cmd_escalate(args: argparse.Namespace, out: TextIO) -> int:
    return _result(args, _client(args).escalate(args.id, args.force), out)


def _cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    stats = _client(args).stats()
    if _structured(args):
        _emit(stats, args, out)
        return EXIT_OK
    width = max((len(k) for k in stats), default=0)
    for key, value in stats.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        elif isinstance(value, float):
            value = f"{value:.3f}"
        out.write(f"{key.ljust(width)}  {value}\n")
    return EXIT_OK


def _cmd_policies(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.core.models import EscalationPolicy

    policies = _client(args).policies()
    if _structured(args):
        _emit(policies, args, out)
        return EXIT_OK
    if not policies:
        out.write("no policies\n")
    for index, raw in enumerate(policies):
        try:
            lines = _describe_policy(EscalationPolicy.from_dict(raw))
        except ValueError:
            lines = [f"{raw.get('name', '?')} ({len(raw.get('levels') or [])} levels)"]
        out.write(("\n" if index else "") + "\n".join(lines) + "\n")
    return EXIT_OK


def _cmd_policy_export(args: argparse.Namespace, out: TextIO) -> int:
    document = _client(args).policy_document()
    text = document.get("yaml") or ""
    if args.file:
        Path(args.file).write_text(text, encoding="utf-8")
        out.write(f"revision {document.get('revision')} written to {args.file}\n")
    else:
        out.write(text)
    return EXIT_OK


def _cmd_policy_import(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.client.errors import EscalationAPIError

    path = args.file
    if not os.path.isfile(path):
        raise Failure(f"{path}: no such file")
    client = _client(args)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    expected = args.expected_revision
    if expected is None:
        expected = int(client.policy_document().get("revision") or 0)
    try:
        saved = client.save_policies(text, expected, args.comment or f"import {os.path.basename(path)}")
    except EscalationAPIError as exc:
        errors = (exc.body or {}).get("errors") if isinstance(exc.body, dict) else None
        if exc.status_code == 422 and errors:
            raise Failure(f"{path}: not saved, {len(errors)} errors:\n  " + "\n  ".join(errors)) from None
        raise
    out.write(f"saved revision {saved['revision']}: {'; '.join(saved.get('changes') or [])}\n")
    for name, timeline in (saved.get("previews") or {}).items():
        out.write(f"  {name}: {timeline}\n")
    return EXIT_OK


def _cmd_policy_revisions(args: argparse.Namespace, out: TextIO) -> int:
    page = _client(args).policy_revisions(limit=args.limit or 20)
    if _structured(args):
        _emit(page, args, out)
        return EXIT_OK
    out.write(f"policies: {page.get('source')} wins; revision {page.get('current')} in force here\n")
    for rev in page.get("revisions") or []:
        out.write(
            f"  {rev['revision']:>4}  {_ts(rev.get('created_at'))}  {rev.get('author')} ({rev.get('source')})"
            + (f"  {rev['comment']}" if rev.get("comment") else "")
            + "\n"
        )
        for change in rev.get("changes") or []:
            out.write(f"        {change}\n")
    return EXIT_OK


def _cmd_policy_rollback(args: argparse.Namespace, out: TextIO) -> int:
    client = _client(args)
    expected = int(client.policy_document().get("revision") or 0)
    saved = client.rollback_policies(args.revision, expected, args.comment or "")
    out.write(f"saved revision {saved['revision']} with the policies of revision {args.revision}\n")
    return EXIT_OK


def _cmd_health(args: argparse.Namespace, out: TextIO) -> int:
    client = _client(args)
    health = client.health()
    if _structured(args):
        _emit(health, args, out)
    else:
        out.write(
            f"{client.api_url}: {health.get('status')} (engine {health.get('engine_id')}, "
            f"store {health.get('store')}, clock {'running' if health.get('running') else 'stopped'})\n"
        )
    return EXIT_OK if health.get("status") == "ok" else EXIT_FAILURE


# --------------------------------------------------------------------------- the client


def _client(args: argparse.Namespace) -> Any:
    if getattr(args, "_client_obj", None) is not None:
        return args._client_obj
    timeout = getattr(args, "timeout", None)
    retries = getattr(args, "retries", None)
    conn_id = getattr(args, "conn_id", None)
    if conn_id:
        if getattr(args, "url", None):
            raise UsageError("give either --url or --conn-id, not both")
        from airflow_escalation.hooks.escalation import EscalationHook

        hook = EscalationHook(conn_id, timeout=timeout, retries=retries)
        try:
            client = hook.get_conn()
        except EscalationClientError:
            raise
        except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and friends
            if type(exc).__name__ == "AirflowNotFoundException":
                raise Failure(f"Airflow connection {conn_id!r} is not defined") from None
            raise Failure(f"cannot use Airflow connection {conn_id!r}: {exc}") from None
    else:
        from airflow_escalation.client.http import EscalationClient

        url = getattr(args, "url", None) or os.environ.get("ESCALATION_URL")
        if not url:
            raise UsageError("no escalation service given: use --url URL (or ESCALATION_URL) or --conn-id ID")
        token = getattr(args, "token", None) or os.environ.get("ESCALATION_TOKEN") or None
        username = getattr(args, "username", None) or os.environ.get("ESCALATION_USERNAME") or None
        password = getattr(args, "password", None) or os.environ.get("ESCALATION_PASSWORD")
        if username and token:
            raise UsageError("give either --token or --username/--password, not both")
        if username and password is None:
            if sys.stdin is not None and sys.stdin.isatty():
                import getpass

                password = getpass.getpass(f"password for {username}: ")
            else:
                raise UsageError("--username needs --password (or ESCALATION_PASSWORD)")
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if retries is not None:
            kwargs["retries"] = retries
        try:
            client = EscalationClient(
                url, token=token, username=username, password=password if username else None, **kwargs
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    args._client_obj = client
    return client


# --------------------------------------------------------------------------- the command table

Handler = Callable[[argparse.Namespace, TextIO], int]
OUTPUT_FORMATS = ("table", "json", "yaml", "plain")  # Airflow's ARG_OUTPUT choices


@dataclass(frozen=True)
class Option:
    """One argument; ``kwargs`` are those of ``argparse.add_argument`` that Airflow's ``Arg``
    accepts too (action, default, nargs, type, choices, required, metavar, dest)."""

    flags: tuple[str, ...]
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Handler
    options: tuple[Option, ...] = ()
    service: bool = True  # takes the service options (--url, --conn-id, ...)
    hidden: bool = False  # an old name kept working, left out of --help


@dataclass(frozen=True)
class Group:
    name: str
    help: str
    commands: tuple[Command, ...]


def _oncall(name: str) -> Handler:
    """A handler of :mod:`airflow_escalation.cli.oncall`, imported when it runs."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        from airflow_escalation.cli import oncall

        handler: Handler = getattr(oncall, name)
        return handler(args, out)

    run.__name__ = name
    return run


SERVICE_OPTIONS = (
    Option(("--url",), "Airflow API server URL (env ESCALATION_URL)"),
    Option(("--username",), "user for POST /auth/token (env ESCALATION_USERNAME)"),
    Option(("--password",), "password (env ESCALATION_PASSWORD)"),
    Option(("--token",), "bearer token (env ESCALATION_TOKEN)"),
    Option(("--conn-id",), "use this Airflow connection instead of --url"),
    Option(("--timeout",), "seconds per request (default 5)", {"type": float}),
    Option(("--retries",), "retries on transient errors (default 3)", {"type": int}),
)
OUTPUT_OPTIONS = (
    Option(
        ("-o", "--output"),
        "Output format. Allowed values: json, yaml, plain, table (default: table)",
        {"choices": OUTPUT_FORMATS, "metavar": "(table, json, yaml, plain)", "default": "table"},
    ),
    Option(
        ("--json",), "same as -o json", {"action": "store_const", "const": "json", "dest": "output", "default": "table"}
    ),
)
_ID = Option(("id",), "escalation record id")
_NOTE = Option(("--note",), "a note kept in the record's timeline")
_SPOOL_DIR = Option(
    ("--dir",), "spool directory (default: [escalation] spool_dir, else $AIRFLOW_HOME/escalation_spool)"
)
_VALIDATE = (
    Option(("file",), "policies YAML (the escalation: block or its content)"),
    Option(("--remote",), "validate on the service instead of locally", {"action": "store_true"}),
)
_VALIDATE_HELP = "check a policies YAML file and print each policy's ladder"
_POLICIES_HELP = "the service's policies"

from airflow_escalation.cli import routes as _routes  # noqa: E402 - its handlers ask this module lazily

COMMANDS: tuple[Command | Group, ...] = (
    Command(
        "list",
        "list escalations, newest first",
        _cmd_list,
        (
            Option(("--state",), "filter on a state (repeatable)", {"action": "append"}),
            Option(("--policy",), "filter on a policy name"),
            Option(("--dag-id",), "filter on the context's dag_id"),
            Option(("--incident",), "filter on an incident id"),
            Option(("--active",), "only escalations still paging", {"action": "store_true"}),
            Option(("--limit",), "page size (1-500, default 50)", {"type": int}),
            Option(("--offset",), "skip this many", {"type": int}),
        ),
    ),
    Command("show", "show one escalation with its timeline", _cmd_show, (_ID,)),
    Command(
        "trigger",
        "start (or join) the escalation of an incident",
        _cmd_trigger,
        (
            Option(("incident",), "incident id"),
            Option(("--policy",), "policy name (default: the service's default policy)"),
            Option(("--severity",), "stored as context severity; policies filter on it"),
            Option(
                ("--context",),
                "context entry (repeatable); JSON values are decoded",
                {"action": "append", "default": [], "metavar": "KEY=VALUE"},
            ),
            Option(("--trigger-type",), "unacknowledged (default), unresolved, manual, ..."),
        ),
    ),
    Command("ack", "acknowledge an escalation", _cmd_ack, (_ID, _NOTE)),
    Command("resolve", "resolve an escalation", _cmd_resolve, (_ID, _NOTE)),
    Command(
        "cancel",
        "cancel an escalation",
        _cmd_cancel,
        (_ID, Option(("--reason",), "why (kept in the timeline)", {"required": True})),
    ),
    Command(
        "escalate",
        "move an escalation to its next level now",
        _cmd_escalate,
        (_ID, Option(("--force",), "even when the policy would not escalate yet", {"action": "store_true"})),
    ),
    Command("stats", "counts, rates and mean times", _cmd_stats),
    Command("health", "check the service", _cmd_health),
    Group(
        "policy",
        "escalation policies: validate a file, list the service's, export/import, revisions, roll back",
        (
            Command("validate", _VALIDATE_HELP, _cmd_validate, _VALIDATE),
            Command("list", _POLICIES_HELP, _cmd_policies),
            Command(
                "export",
                "write the policies in force as a policies file (YAML)",
                _cmd_policy_export,
                (Option(("--file",), "write here instead of printing"),),
            ),
            Command(
                "import",
                "save a policies file as the next revision (every error named when invalid)",
                _cmd_policy_import,
                (
                    Option(("file",), "policies YAML file"),
                    Option(("--comment",), "what and why (kept with the revision)"),
                    Option(
                        ("--expected-revision",),
                        "the revision this file was based on (default: the latest)",
                        {"type": int},
                    ),
                ),
            ),
            Command(
                "revisions",
                "who changed the policies, when and what",
                _cmd_policy_revisions,
                (Option(("--limit",), "how many (default 20)", {"type": int}),),
            ),
            Command(
                "rollback",
                "save an earlier revision's policies as the next revision",
                _cmd_policy_rollback,
                (
                    Option(("revision",), "the revision to go back to", {"type": int}),
                    Option(("--comment",), "why"),
                ),
            ),
        ),
    ),
    Group(
        "routes",
        "failure routes: what the service pages for by itself",
        (
            Command("list", "the routes in precedence order, warnings, the detector", _routes.cmd_list),
            Command(
                "explain",
                "which route would catch a failure of a Dag, and what would happen",
                _routes.cmd_explain,
                (
                    Option(("dag_id",), "the Dag"),
                    Option(
                        ("--kind",),
                        "task_failed (default), task_up_for_retry, task_over_duration, dag_run_failed, "
                        "dag_run_over_duration, deadline_missed",
                        {"default": "task_failed"},
                    ),
                    Option(("--task-id",), "the task (task kinds)"),
                    Option(("--run-type",), "scheduled, manual, backfill, asset_triggered, ..."),
                    Option(("--try-number",), "the failed try (task_up_for_retry)", {"type": int}),
                    Option(("--tag",), "instead of the Dag's tags (repeatable)", {"action": "append"}),
                    Option(("--owner",), "instead of the Dag's owners (repeatable)", {"action": "append"}),
                ),
            ),
        ),
    ),
    # `silence` (silences of the on-call issue) goes here as a Group of its own commands
    Group(
        "spool",
        "the local spool of hand-offs that could not reach the service",
        (
            Command("list", "print waiting and dead entries", list_spool, (_SPOOL_DIR,), service=False),
            Command(
                "drain",
                "send waiting entries to the service (exit 1 when some are left)",
                drain_spool,
                (
                    _SPOOL_DIR,
                    Option(("--budget",), "seconds to spend at most (default 60)", {"type": float, "default": 60.0}),
                    Option(("--timeout",), "seconds per request (default 5)", {"type": float}),
                ),
                service=False,
            ),
        ),
    ),
    # the first names of `policy validate` and `policy list`, kept for scripts
    Command("validate", _VALIDATE_HELP, _cmd_validate, _VALIDATE, hidden=True),
    Command("policies", _POLICIES_HELP, _cmd_policies, hidden=True),
    # on call (docs/oncall.md)
    Command(
        "oncall",
        "who is on call now for every schedule (or one, --at a time), and the next handoffs",
        _oncall("show_oncall"),
        (
            Option(("schedule",), "a schedule name (default: all)", {"nargs": "?"}),
            Option(("--at",), "an ISO time with its zone (default: now)"),
            Option(("--handoffs",), "how many next handoffs to show (default 3)", {"type": int, "default": 3}),
        ),
    ),
    Group(
        "silence",
        "silences: page nobody for matching escalations for a while",
        (
            Command(
                "add",
                "silence escalations that match every matcher given",
                _oncall("add_silence"),
                (
                    Option(("--dag-id",), "the Dag"),
                    Option(("--task-id",), "the task"),
                    Option(("--policy",), "the policy"),
                    Option(("--incident",), "incident id glob (* ? [abc])"),
                    Option(("--severity",), "severity"),
                    Option(("--duration",), "how long: 90m, 2h, 1d"),
                    Option(("--until",), "or until this ISO time (with its zone)"),
                    Option(("--starts",), "start later: an ISO time with its zone (default: now)"),
                    Option(("--comment",), "why (shown on every record it suppresses)"),
                ),
            ),
            Command(
                "list",
                "pending and active silences",
                _oncall("list_silences"),
                (Option(("--all",), "expired ones too", {"action": "store_true"}),),
            ),
            Command("expire", "end a silence now", _oncall("expire_silence"), (Option(("id",), "silence id"),)),
        ),
    ),
    Group(
        "override",
        "overrides: put someone on call for a schedule for a while",
        (
            Command(
                "add",
                "put USER on call for SCHEDULE from --start to --end",
                _oncall("add_override"),
                (
                    Option(("schedule",), "schedule name"),
                    Option(("user",), "user id (from the policies file's users:)"),
                    Option(("--start",), "ISO time with its zone", {"required": True}),
                    Option(("--end",), "ISO time with its zone", {"required": True}),
                    Option(("--comment",), "why"),
                ),
            ),
            Command(
                "list",
                "current and future overrides",
                _oncall("list_overrides"),
                (Option(("--schedule",), "one schedule"),),
            ),
            Command("delete", "remove an override", _oncall("delete_override"), (Option(("id",), "override id"),)),
        ),
    ),
)


def command_options(command: Command) -> tuple[Option, ...]:
    """Every option of a command, service and output options included."""
    return (*command.options, *(SERVICE_OPTIONS if command.service else ()), *OUTPUT_OPTIONS)


# --------------------------------------------------------------------------- running a command


def execute(handler: Handler, args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; expected failures become one line on ``err`` and an exit status."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        return handler(args, out)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except (Failure, EscalationServiceUnavailable) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_FAILURE
    except EscalationNotFound as exc:
        err.write(f"error: not found: {exc.detail}\n")
        return EXIT_FAILURE
    except EscalationConflict as exc:
        hint = " (a retried request may already have gone through)" if exc.after_retry else ""
        err.write(f"error: conflict: {exc.detail}{hint}\n")
        return EXIT_FAILURE
    except EscalationAuthError as exc:
        err.write(f"error: not authorised: {exc}\n")
        return EXIT_FAILURE
    except EscalationAPIError as exc:
        verdict = "rejected" if exc.status_code < 500 else "service error"
        err.write(f"error: {verdict} (HTTP {exc.status_code}): {exc.detail}\n")
        return EXIT_FAILURE
    except EscalationClientError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    finally:
        client = getattr(args, "_client_obj", None)
        if client is not None:
            client.close()


# --------------------------------------------------------------------------- the standalone parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, exit 2, no traceback
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _add_options(parser: argparse.ArgumentParser, options: Sequence[Option], *, suppress: bool) -> None:
    for option in options:
        kwargs = dict(option.kwargs)
        if suppress and option.flags[0].startswith("-"):
            # given before the command too: a subcommand's default must not overwrite it
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument(*option.flags, help=option.help, **kwargs)


def _add_commands(sub: Any, commands: Sequence[Command | Group]) -> None:
    for command in commands:
        if isinstance(command, Group):
            group = sub.add_parser(command.name, help=command.help, description=command.help)
            inner = group.add_subparsers(dest=f"{command.name}_command", metavar="COMMAND", parser_class=_Parser)
            inner.required = True
            _add_commands(inner, command.commands)
            continue
        extra = {} if command.hidden else {"help": command.help}
        p = sub.add_parser(command.name, description=command.help, **extra)
        _add_options(p, command.options, suppress=False)
        _add_options(p, (*(SERVICE_OPTIONS if command.service else ()), *OUTPUT_OPTIONS), suppress=True)
        p.set_defaults(handler=command.handler)


def build_parser(
    prog: str = "airflow-escalation",
    commands: Sequence[Command | Group] = COMMANDS,
    description: str = "Validate escalation policy files offline, operate the escalation "
    "service, drain the local spool. The same commands as "
    "`airflow escalation`.",
) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    # options before the command too (`airflow-escalation --url U list`)
    service = any(isinstance(c, Group) or c.service for c in commands)
    _add_options(parser, (*(SERVICE_OPTIONS if service else ()), *OUTPUT_OPTIONS), suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_commands(sub, commands)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "airflow-escalation",
    commands: Sequence[Command | Group] = COMMANDS,
    description: str | None = None,
) -> int:
    """The standalone command line; returns the exit status (the console script exits with it)."""
    parser = build_parser(prog, commands, description) if description else build_parser(prog, commands)
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    return execute(args.handler, args)
