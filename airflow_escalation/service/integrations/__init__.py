"""Slack and PagerDuty acting on escalations (docs/channels.md).

The routes (``service/routes/slack.py``, ``service/routes/pagerduty.py``) ask these modules:
``signatures`` (is the request really from Slack or PagerDuty), ``directory`` (which escalation
user a Slack member is), ``identity`` (that user's Airflow identity, for the auth manager).
"""
