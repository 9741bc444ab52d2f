"""On call's command line: ``airflow escalation oncall``, ``silence add|list|expire`` and
``override add|list|delete`` (docs/oncall.md). The command table is
:data:`airflow_escalation.cli.commands.COMMANDS`; these are its handlers.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO


def _duration_minutes(text: str) -> float:
    """``90``/``90m``, ``2h``, ``1d``, ``1w`` as minutes."""
    from airflow_escalation.cli.commands import UsageError

    units = {"m": 1, "h": 60, "d": 24 * 60, "w": 7 * 24 * 60}
    value = text.strip().lower()
    factor = units.get(value[-1:], None)
    number = value[:-1] if factor else value
    try:
        minutes = float(number) * (factor or 1)
    except ValueError:
        raise UsageError(f"--duration: expected e.g. 90m, 2h, 1d, got {text!r}") from None
    if minutes <= 0:
        raise UsageError(f"--duration: must be positive, got {text!r}")
    return minutes


def show_oncall(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.cli.commands import EXIT_OK, _client, _emit, _rows, _structured, _ts

    client = _client(args)
    if args.schedule:
        answer = client.on_call(args.schedule, args.at)
        handoffs = client.handoffs(args.schedule, limit=args.handoffs) if not args.at else []
        if _structured(args):
            _emit({**answer, "next_handoffs": handoffs}, args, out)
            return EXIT_OK
        out.write(
            f"{answer['schedule']}: {answer.get('name') or 'nobody'} ({answer['source']}) at {_ts(answer['at'])}\n"
        )
        for handoff in handoffs:
            out.write(f"  from {_ts(handoff['start'])}: {handoff.get('name') or 'nobody'} ({handoff['source']})\n")
        return EXIT_OK
    schedules = client.schedules()
    if _structured(args):
        _emit(schedules, args, out)
        return EXIT_OK
    rows = []
    for schedule in schedules:
        nxt = (schedule.get("next_handoffs") or [None])[0]
        rows.append(
            {
                "schedule": schedule["name"],
                "on call": schedule["on_call"].get("name") or "nobody",
                "why": schedule["on_call"]["source"],
                "next handoff": f"{_ts(nxt['start'])} → {nxt.get('name') or 'nobody'}" if nxt else "",
            }
        )
    _rows(rows, args, out)
    return EXIT_OK


def _silence_row(silence: dict[str, Any]) -> dict[str, Any]:
    from airflow_escalation.cli.commands import _ts

    matchers = ", ".join(f"{k}={v}" for k, v in (silence.get("matchers") or {}).items() if v is not None)
    return {
        "id": silence["id"],
        "status": silence.get("status", ""),
        "matchers": matchers,
        "starts": _ts(silence["starts_at"]),
        "ends": _ts(silence["ends_at"]),
        "by": silence.get("created_by", ""),
        "comment": silence.get("comment", ""),
    }


def add_silence(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.cli.commands import EXIT_OK, UsageError, _client, _emit, _structured, _ts

    matchers = {
        key: value
        for key, value in (
            ("dag_id", args.dag_id),
            ("task_id", args.task_id),
            ("policy", args.policy),
            ("incident", args.incident),
            ("severity", args.severity),
        )
        if value
    }
    if (args.duration is None) == (args.until is None):
        raise UsageError("give --duration (e.g. 2h) or --until (an ISO time with its zone)")
    silence = _client(args).create_silence(
        matchers,
        ends_at=args.until,
        duration_minutes=_duration_minutes(args.duration) if args.duration else None,
        starts_at=args.starts,
        comment=args.comment or "",
    )
    if _structured(args):
        _emit(silence, args, out)
    else:
        out.write(f"silence {silence['id']} {silence['status']} until {_ts(silence['ends_at'])}\n")
    return EXIT_OK


def list_silences(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.cli.commands import EXIT_OK, _client, _emit, _rows, _structured

    silences = _client(args).silences(include_expired=args.all)
    if _structured(args):
        _emit(silences, args, out)
    else:
        _rows([_silence_row(s) for s in silences], args, out)
    return EXIT_OK


def expire_silence(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.cli.commands import EXIT_OK, _client, _emit, _structured, _ts

    silence = _client(args).expire_silence(args.id)
    if _structured(args):
        _emit(silence, args, out)
    else:
        out.write(f"silence {silence['id']} expired at {_ts(silence['ends_at'])}\n")
    return EXIT_OK


def add_override(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.cli.commands import EXIT_OK, _client, _emit, _structured, _ts

    override = _client(args).create_override(args.schedule, args.user, args.start, args.end, args.comment or "")
    if _structured(args):
        _emit(override, args, out)
    else:
        out.write(
            f"override {override['id']}: {override['user']} on call for {override['schedule']} "
            f"{_ts(override['start'])} → {_ts(override['end'])}\n"
        )
    return EXIT_OK


def list_overrides(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.cli.commands import EXIT_OK, _client, _emit, _rows, _structured, _ts

    overrides = _client(args).overrides(args.schedule)
    if _structured(args):
        _emit(overrides, args, out)
        return EXIT_OK
    rows = [
        {
            "id": o["id"],
            "schedule": o["schedule"],
            "user": o["user"],
            "start": _ts(o["start"]),
            "end": _ts(o["end"]),
            "by": o.get("created_by", ""),
        }
        for o in overrides
    ]
    _rows(rows, args, out)
    return EXIT_OK


def delete_override(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_escalation.cli.commands import EXIT_OK, _client, _emit, _structured

    override = _client(args).delete_override(args.id)
    out.write(f"override {override['id']} removed\n") if not _structured(args) else _emit(override, args, out)
    return EXIT_OK
