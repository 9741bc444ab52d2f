"""Escalation core: models, state machine, engine and manager. No Airflow imports here."""
