"""``airflow-escalation``: validate policy files offline, and operate the escalation service.

    airflow-escalation validate POLICIES.yaml
    airflow-escalation --url http://localhost:8080 --username admin --password ... list --state active
    airflow-escalation --conn-id escalation_default show 3f2a...
    airflow-escalation trigger orders-etl --policy production_critical --severity critical \\
        --context dag_id=orders_etl --context run_id=manual__1
    airflow-escalation ack ID --note "looking"; resolve ID; cancel ID --reason ...; escalate ID
    airflow-escalation stats --json

The service is chosen by ``--url`` (or ``ESCALATION_URL``) with ``--username/--password``
(``ESCALATION_USERNAME``/``ESCALATION_PASSWORD``) or ``--token`` (``ESCALATION_TOKEN``), or by
``--conn-id`` (an Airflow connection, through ``EscalationHook``). Exit status: 0 success, 1
failure (service down, not found, conflict, refused, invalid policy), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

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
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0:
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")
    return moment.isoformat(sep=" ", timespec="seconds")


def _minutes(value: float) -> str:
    if value == int(value):
        return f"{int(value)} min"
    return f"{value:g} min"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


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
        lines.append(f"  business hours: {days} {policy.business_hours_start:02d}:00-"
                     f"{policy.business_hours_end:02d}:00 {policy.timezone} "
                     f"(outside: {policy.business_hours_mode.value})")
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
        bits.append(f"incident {record.get('incident_id')}, policy {record.get('policy_name')}, "
                    f"state {record.get('state')}, level {record.get('current_level')}")
    targets = result.get("targets_notified") or []
    if targets:
        bits.append("notified " + ", ".join(_target(t) for t in targets))
    return " — ".join(bits)


def _timeline(record: dict[str, Any]) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for event in record.get("history") or []:
        text = f"{event.get('event', '?')}"
        if event.get("actor") and event.get("actor") != "system":
            text += f" by {event['actor']}"
        text += f"  (level {event.get('level', '?')}, {event.get('state', '?')})"
        details = event.get("details")
        if details:
            text += "  " + ", ".join(f"{k}={v}" for k, v in details.items())
        entries.append((str(event.get("at") or ""), text))
    for d in record.get("deliveries") or []:
        when = d.get("sent_at") or d.get("updated_at") or d.get("created_at") or ""
        text = (f"notify {_target(d.get('target') or {})}: {d.get('state')}  "
                f"(level {d.get('level')}, round {d.get('round')}, attempts {d.get('attempts')})")
        if d.get("last_error"):
            text += f"  error: {d['last_error']}"
        entries.append((str(when), text))

    def key(entry: tuple[str, str]) -> Any:
        try:
            return datetime.fromisoformat(entry[0].replace("Z", "+00:00")).timestamp()
        except ValueError:
            return float("inf")

    return sorted(entries, key=key)


def _show(record: dict[str, Any], out: TextIO) -> None:
    fields = [
        ("id", record.get("id")), ("incident", record.get("incident_id")),
        ("policy", record.get("policy_name")), ("state", record.get("state")),
        ("level", record.get("current_level")), ("trigger", record.get("trigger_type")),
        ("created", _ts(record.get("created_at"))), ("updated", _ts(record.get("updated_at"))),
        ("acknowledged", f"{_ts(record.get('acknowledged_at'))}"
         + (f" by {record['acknowledged_by']}" if record.get("acknowledged_by") else "")),
        ("resolved", f"{_ts(record.get('resolved_at'))}"
         + (f" by {record['resolved_by']}" if record.get("resolved_by") else "")),
        ("closed", _ts(record.get("closed_at"))),
        ("next", f"{_ts(record.get('next_escalation_at'))}"
         + (f" ({record['next_action']})" if record.get("next_action") else "")),
        ("escalations", record.get("escalation_count")), ("notifications", record.get("notification_count")),
    ]
    width = max(len(k) for k, _ in fields)
    for name, value in fields:
        out.write(f"{name.ljust(width)}  {value if value is not None else '-'}\n")
    if record.get("context"):
        out.write("context\n")
        for k, v in record["context"].items():
            out.write(f"  {k} = {v}\n")
    timeline = _timeline(record)
    out.write(f"timeline ({len(timeline)})\n")
    for when, text in timeline:
        out.write(f"  {_ts(when):<20}  {text}\n")


def _emit_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- commands


def _cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.core.manager import EscalationPolicyConfig

    path = args.file
    if not os.path.isfile(path):
        raise Failure(f"{path}: no such file")
    if args.remote:
        with open(path, encoding="utf-8") as fh:
            answer = _client(args).validate_policy(yaml=fh.read())
        if args.json:
            _emit_json(answer, out)
        if not answer.get("valid"):
            raise Failure(f"{path}: invalid: " + "; ".join(answer.get("errors") or ["(no detail)"]))
        if not args.json:
            out.write(f"{path}: valid on the service ({', '.join(answer.get('policies') or [])})\n")
        return EXIT_OK
    try:
        config = EscalationPolicyConfig.from_yaml(Path(path))
    except (ValueError, TypeError) as exc:
        if str(exc).startswith("yaml:"):  # not loadable YAML (syntax, aliases, size, depth)
            raise Failure(f"{path}: cannot load: {' '.join(str(exc).split())}") from None
        raise Failure(f"{path}: invalid: {exc}") from None
    except Exception as exc:  # an unreadable file and the like
        message = " ".join(str(exc).split())
        raise Failure(f"{path}: cannot load: {type(exc).__name__}: {message}") from None
    if args.json:
        _emit_json({"valid": True, "default_policy": config.default_policy,
                    "policies": [p.to_dict() for p in config.policies.values()]}, out)
        return EXIT_OK
    count = len(config.policies)
    out.write(f"{path}: valid, {count} polic{'y' if count == 1 else 'ies'}"
              + (f" (default: {config.default_policy})" if count else "") + "\n")
    for policy in config.policies.values():
        out.write("\n" + "\n".join(_describe_policy(policy)) + "\n")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    page = _client(args).list_escalations(
        args.state, policy=args.policy, incident=args.incident, dag_id=args.dag_id,
        active=True if args.active else None, limit=args.limit, offset=args.offset,
    )
    if args.json:
        _emit_json(page, out)
        return EXIT_OK
    records = page.get("escalations") or []
    if not records:
        out.write("no escalations\n")
        return EXIT_OK
    rows = [[r.get("id", ""), r.get("state", ""), str(r.get("current_level", "")), r.get("policy_name", ""),
             r.get("incident_id", ""), _ts(r.get("created_at")), _ts(r.get("next_escalation_at"))]
            for r in records]
    out.write(_table(rows, ["ID", "STATE", "LEVEL", "POLICY", "INCIDENT", "CREATED", "NEXT"]) + "\n")
    total = page.get("total", len(records))
    offset = page.get("offset", 0) or 0
    out.write(f"{offset + 1}-{offset + len(records)} of {total}\n")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    record = _client(args).get_escalation(args.id)
    if args.json:
        _emit_json(record, out)
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
    if args.json:
        _emit_json(result, out)
    if not result.get("success"):
        raise Failure(_result_line(result))
    if not args.json:
        out.write(_result_line(result) + "\n")
    return EXIT_OK


def _cmd_trigger(args: argparse.Namespace, out: TextIO) -> int:
    context = _parse_context(args.context)
    result = _client(args).trigger(args.incident, context, policy_name=args.policy, severity=args.severity,
                                   trigger_type=args.trigger_type)
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
    if args.json:
        _emit_json(stats, out)
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
    if args.json:
        _emit_json(policies, out)
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


def _cmd_health(args: argparse.Namespace, out: TextIO) -> int:
    client = _client(args)
    health = client.health()
    if args.json:
        _emit_json(health, out)
    else:
        out.write(f"{client.api_url}: {health.get('status')} (engine {health.get('engine_id')}, "
                  f"store {health.get('store')}, clock {'running' if health.get('running') else 'stopped'})\n")
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
        except Exception as exc:  # AirflowNotFoundException and friends
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
            client = EscalationClient(url, token=token, username=username,
                                      password=password if username else None, **kwargs)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    args._client_obj = client
    return client


# --------------------------------------------------------------------------- parser


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("service")
    group.add_argument("--url", default=default, help="Airflow API server URL (env ESCALATION_URL)")
    group.add_argument("--username", default=default, help="user for POST /auth/token (env ESCALATION_USERNAME)")
    group.add_argument("--password", default=default, help="password (env ESCALATION_PASSWORD)")
    group.add_argument("--token", default=default, help="bearer token (env ESCALATION_TOKEN)")
    group.add_argument("--conn-id", default=default, help="use this Airflow connection instead of --url")
    group.add_argument("--timeout", type=float, default=default, help="seconds per request (default 5)")
    group.add_argument("--retries", type=int, default=default, help="retries on transient errors (default 3)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print JSON instead of tables")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no traceback
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="airflow-escalation",
                     description="Validate escalation policy files offline, and operate the escalation service.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common_options(p, suppress=True)
        p.set_defaults(handler=handler)
        return p

    p = command("validate", _cmd_validate, "check a policies YAML file and print each policy's ladder")
    p.add_argument("file", help="policies YAML (the escalation: block or its content)")
    p.add_argument("--remote", action="store_true", help="validate on the service instead of locally")

    p = command("list", _cmd_list, "list escalations, newest first")
    p.add_argument("--state", action="append", help="filter on a state (repeatable)")
    p.add_argument("--policy", help="filter on a policy name")
    p.add_argument("--dag-id", help="filter on the context's dag_id")
    p.add_argument("--incident", help="filter on an incident id")
    p.add_argument("--active", action="store_true", help="only escalations still paging")
    p.add_argument("--limit", type=int, help="page size (1-500, default 50)")
    p.add_argument("--offset", type=int, help="skip this many")

    p = command("show", _cmd_show, "show one escalation with its timeline")
    p.add_argument("id")

    p = command("trigger", _cmd_trigger, "start (or join) the escalation of an incident")
    p.add_argument("incident")
    p.add_argument("--policy", help="policy name (default: the service's default policy)")
    p.add_argument("--severity", help="stored as context severity; policies filter on it")
    p.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                   help="context entry (repeatable); JSON values are decoded")
    p.add_argument("--trigger-type", help="unacknowledged (default), unresolved, manual, ...")

    p = command("ack", _cmd_ack, "acknowledge an escalation")
    p.add_argument("id")
    p.add_argument("--note")

    p = command("resolve", _cmd_resolve, "resolve an escalation")
    p.add_argument("id")
    p.add_argument("--note")

    p = command("cancel", _cmd_cancel, "cancel an escalation")
    p.add_argument("id")
    p.add_argument("--reason", required=True)

    p = command("escalate", _cmd_escalate, "move an escalation to its next level now")
    p.add_argument("id")
    p.add_argument("--force", action="store_true", help="even when the policy would not escalate yet")

    command("stats", _cmd_stats, "counts, rates and mean times")
    command("policies", _cmd_policies, "the service's policies")
    command("health", _cmd_health, "check the service")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    out, err = sys.stdout, sys.stderr
    args: argparse.Namespace | None = None
    try:
        try:
            args = build_parser().parse_args(list(argv) if argv is not None else None)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        return args.handler(args, out)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except Failure as exc:
        err.write(f"error: {exc}\n")
        return EXIT_FAILURE
    except EscalationServiceUnavailable as exc:
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
        client = getattr(args, "_client_obj", None) if args is not None else None
        if client is not None:
            client.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
