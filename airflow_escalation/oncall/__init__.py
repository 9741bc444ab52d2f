"""Who is on call, and when not to page (docs/oncall.md).

The domain (users, schedules, overrides, silences, maintenance windows) imports nothing from
Airflow, the stores or the service; :mod:`~airflow_escalation.oncall.runtime` joins it to a store
and an engine.
"""
