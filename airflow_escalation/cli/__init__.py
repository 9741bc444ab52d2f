"""The escalation command line (:mod:`airflow_escalation.cli.commands`): ``airflow escalation``
through provider info (:mod:`airflow_escalation.cli.definition`), and the ``airflow-escalation``
console script, an alias of the same commands for hosts where Airflow's CLI is not at hand."""

from airflow_escalation.cli.commands import COMMANDS, build_parser, execute, main

__all__ = ["COMMANDS", "build_parser", "execute", "main"]
