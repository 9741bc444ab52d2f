"""Airflow plugins of the escalation provider."""
