"""``airflow escalation routes list|explain``: the service's failure routes (docs/routes.md)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO


def _service() -> Any:
    from airflow_escalation.cli import commands

    return commands


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    cli = _service()
    answer = cli._client(args).routes()
    if cli._structured(args):
        cli._emit(answer, args, out)
        return cli.EXIT_OK
    routes = answer.get("routes") or []
    if not routes:
        out.write("no failure routes: the service pages only what callbacks hand it\n")
    else:
        out.write(f"failure routes ({answer.get('precedence')}):\n")
    for route in routes:
        match = [f"dag_id={route['dag_id']}"]
        for key in ("tags", "owners", "run_types"):
            if route.get(key):
                match.append(f"{key}={','.join(route[key])}")
        if route.get("task_id") not in (None, "*"):
            match.append(f"task_id={route['task_id']}")
        extra = f" from try {route['min_try']}" if route.get("min_try", 1) > 1 else ""
        extra += f" over {route['over_minutes']:g} min" if route.get("over_minutes") else ""
        out.write(
            f"  {route['index']}. {route['name']}: {'/'.join(route['kind'])}{extra} of {' '.join(match)} "
            f"-> policy {route['policy']} (severity {route['severity']})\n"
        )
    for warning in answer.get("warnings") or []:
        out.write(f"warning: {warning}\n")
    detector = answer.get("detector")
    out.write(
        "detector: "
        + (
            f"running every {detector['interval_seconds']:g}s, {detector['triggered']} paged, "
            f"{detector['resolved']} resolved"
            + (f", last error: {detector['last_error']}" if detector["last_error"] else "")
            if detector
            else "off"
        )
        + "\n"
    )
    return cli.EXIT_OK


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    cli = _service()
    answer = cli._client(args).explain_route(
        args.dag_id,
        args.kind,
        task_id=args.task_id,
        run_type=args.run_type,
        try_number=args.try_number,
        tags=args.tag,
        owners=args.owner,
    )
    if cli._structured(args):
        cli._emit(answer, args, out)
        return cli.EXIT_OK
    event = answer["event"]
    what = event["dag_id"] + (f".{event['task_id']}" if event.get("task_id") else "")
    out.write(f"{event['kind']} of {what} ({answer['precedence']}):\n")
    for route in answer["routes"]:
        mark = "=>" if route["wins"] else ("  " if not route["matches"] else " +")
        why = "matches" + (" (shadowed by an earlier route)" if route["matches"] and not route["wins"] else "")
        out.write(f" {mark} {route['index']}. {route['name']}: {why if route['matches'] else route['reason']}\n")
    if answer["route"] is None:
        out.write("no route catches it: the service does not page for it\n")
        return cli.EXIT_OK
    outcome = answer["outcome"]
    out.write(f"incident {answer['incident_id']!r}, policy {answer['policy']}, severity {answer['severity']}\n")
    if not outcome["pages"]:
        out.write(f"nobody is paged: {outcome['why']}\n")
    for step in outcome["steps"]:
        out.write(f"  level {step['level']} at +{step['after_minutes']:g} min: {', '.join(step['targets'])}\n")
    return cli.EXIT_OK
