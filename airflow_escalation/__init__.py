"""airflow-escalation (public names are re-exported here)."""
