"""The provider's tables in Airflow's metadata database."""
