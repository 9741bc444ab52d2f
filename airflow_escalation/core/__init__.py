"""Escalation core: no Airflow imports here."""
