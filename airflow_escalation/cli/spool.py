"""The spool's command line: ``airflow escalation spool list|drain`` (the ``spool`` group of
:mod:`airflow_escalation.cli.commands`) and its alias ``python -m airflow_escalation.spool
[--dir DIR] list|drain`` (:func:`main`, run by ``airflow_escalation/spool/__main__.py``).

The spool itself (:mod:`airflow_escalation.spool`) knows nothing of the command line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO


def list_spool(args: argparse.Namespace, out: TextIO) -> int:
    """``spool list``: the waiting and the dead entries."""
    from airflow_escalation.cli.commands import EXIT_OK, _emit, _rows, _structured
    from airflow_escalation.spool import EscalationSpool

    spool = EscalationSpool(args.dir)
    rows: list[dict[str, Any]] = []
    for entry in spool.entries():
        rows.append(
            {
                "status": "waiting",
                "file": entry.path.name,
                "kind": entry.kind,
                "incident": entry.incident_id,
                "conn": entry.conn_id,
                "attempts": entry.attempts,
                "age": str(entry.age).split(".")[0],
                "error": entry.last_error or "-",
            }
        )
    for path in spool.dead_entries():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        rows.append(
            {
                "status": "dead",
                "file": path.name,
                "kind": data.get("kind", "?"),
                "incident": (data.get("request") or {}).get("incident_id") or "?",
                "conn": data.get("conn_id") or "?",
                "attempts": data.get("attempts", "?"),
                "age": "-",
                "error": data.get("dead_reason") or "-",
            }
        )
    if _structured(args):
        _emit({"directory": str(spool.directory), "entries": rows}, args, out)
    elif rows:
        _rows(rows, args, out)
    else:
        out.write(f"{spool.directory}: empty\n")
    return EXIT_OK


def drain_spool(args: argparse.Namespace, out: TextIO) -> int:
    """``spool drain``: send what the spool holds (the hand-off's drain, a longer budget)."""
    import logging

    from airflow_escalation.cli.commands import EXIT_FAILURE, EXIT_OK, _emit, _structured
    from airflow_escalation.handoff.sender import HandoffSender, draining
    from airflow_escalation.spool import DrainReport, EscalationSpool

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spool = EscalationSpool(args.dir)
    with HandoffSender(timeout=args.timeout if args.timeout is not None else 5.0) as sender:
        report = sender.run(draining(spool, sender, budget_seconds=args.budget)) or DrainReport()
    summary = {
        "sent": report.sent,
        "dead": report.dead,
        "left": report.left,
        "stopped": report.stopped,
        "last_error": report.last_error,
    }
    if _structured(args):
        _emit(summary, args, out)
    else:
        out.write(
            f"sent {report.sent}, dead {report.dead}, left {report.left}"
            + (f" (stopped: {report.stopped}: {report.last_error})" if report.stopped else "")
            + "\n"
        )
    return EXIT_OK if report.left == 0 else EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_escalation.spool [--dir DIR] list|drain``: an alias of
    ``airflow escalation spool list|drain``."""
    import sys

    from airflow_escalation.cli.commands import COMMANDS, Group
    from airflow_escalation.cli.commands import main as run_commands

    # --dir may come before the command here (the alias's first form); the command takes it after
    leading = argparse.ArgumentParser(add_help=False)
    leading.add_argument("--dir", default=None)
    known, rest = leading.parse_known_args(sys.argv[1:] if argv is None else argv)
    spool_group = next(c for c in COMMANDS if isinstance(c, Group) and c.name == "spool")
    return run_commands(
        [*rest, *(["--dir", known.dir] if known.dir else [])],
        prog="python -m airflow_escalation.spool",
        commands=spool_group.commands,
        description="Inspect or drain the local escalation spool (hand-offs that could not "
        "reach the escalation service). The same as `airflow escalation spool`.",
    )


__all__ = ["drain_spool", "list_spool", "main"]
