"""``python -m airflow_escalation.spool``: the spool's command line (:mod:`airflow_escalation.cli.spool`)."""

from airflow_escalation.cli.spool import main

raise SystemExit(main())
