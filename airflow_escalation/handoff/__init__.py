"""The hand-off INTO the escalation service: what a task, a callback, the triggerer or a cron job
uses to give the service a trigger or a resolve.

- :mod:`airflow_escalation.handoff.steps`: one plan, run sync or async (the sans-IO core);
- :mod:`airflow_escalation.handoff.sender`: one short-timeout attempt per request, the outcome
  classification, and draining this machine's spool (:mod:`airflow_escalation.spool`);
- the Airflow faces: :mod:`airflow_escalation.notifications.escalation` (the notifier),
  :mod:`airflow_escalation.hooks.escalation` (the hook), the operator, sensor and trigger.

Delivery OUT of the service to people (channels, the default log delivery, level actions) is the
other direction: :mod:`airflow_escalation.channels`, :mod:`airflow_escalation.service.delivery`,
:mod:`airflow_escalation.service.delivery_log`, :mod:`airflow_escalation.routing.level_actions`.

Nothing here imports a store, a scheduler or the engine (tests/test_import_graph.py).
"""
