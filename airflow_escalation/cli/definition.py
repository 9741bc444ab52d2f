"""``airflow escalation ...``: Airflow's command definitions, built from the one command table
(:data:`airflow_escalation.cli.commands.COMMANDS`).

Provider info names :func:`get_escalation_cli_commands` under ``cli``; Airflow calls it while it
builds its parser (``airflow/cli/cli_parser.py``), as for edge3's ``airflow edge ...``. Nothing
here runs a command: each command's function is called with the parsed arguments only.
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

import argparse
import os
import sys
from collections.abc import Callable

from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand

from airflow_escalation.cli.commands import COMMANDS, Command, Group, command_options
from airflow_escalation.hooks.connection_info import DEFAULT_CONN_NAME

# `airflow escalation` runs inside an Airflow deployment: the service is the one its connection
# names, unless --url (or ESCALATION_URL) says otherwise
DEFAULT_CONN_ID = DEFAULT_CONN_NAME  # one name: hooks/connection_info.py
_ARG_VERBOSE = Arg(("-v", "--verbose"), help="Make logging output more verbose", action="store_true")


def _airflow_function(command: Command) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        from airflow_escalation.cli.commands import execute

        if command.service and not (args.url or args.conn_id or os.environ.get("ESCALATION_URL")):
            args.conn_id = DEFAULT_CONN_ID
        statuses: list[int] = []

        def run_command(parsed: argparse.Namespace) -> None:
            statuses.append(execute(command.handler, parsed))

        if args.verbose:
            run_command(args)
        else:
            from airflow.utils.cli import suppress_logs_and_warning

            # as Airflow's own listing commands: -o json|yaml output is not mixed with log lines
            suppress_logs_and_warning(run_command)(args)
        status = statuses[0]
        if status:
            sys.exit(status)

    run.__name__ = f"escalation_{command.name}"
    return run


def _arg(option) -> Arg:
    kwargs = dict(option.kwargs)
    const = kwargs.pop("const", None)
    arg = Arg(option.flags, help=option.help, **kwargs)
    if const is not None:  # Arg has no `const`; argparse needs it for store_const
        arg.kwargs["const"] = const
    return arg


def _airflow_command(command: Command | Group) -> ActionCommand | GroupCommand:
    if isinstance(command, Group):
        return GroupCommand(
            name=command.name, help=command.help, subcommands=[_airflow_command(c) for c in command.commands]
        )
    return ActionCommand(
        name=command.name,
        help=command.help,
        func=_airflow_function(command),
        args=[*(_arg(o) for o in command_options(command)), _ARG_VERBOSE],
        hide=command.hidden,
    )


def get_escalation_cli_commands() -> list[GroupCommand]:
    """The ``escalation`` group of Airflow's CLI."""
    return [
        GroupCommand(
            name="escalation",
            help="Escalations: list, show, acknowledge and resolve them, validate policies, drain the spool",
            subcommands=[_airflow_command(c) for c in COMMANDS],
            description="Operate the escalation service of this Airflow deployment (the connection "
            f"{DEFAULT_CONN_ID}, or --url), validate policy files, drain the local spool.",
        )
    ]
