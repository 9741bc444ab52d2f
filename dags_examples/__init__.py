# Example DAGs and the spec's example policies file (policies/). Copy them into your DAGs folder.
# Installed, this folder is the package airflow_escalation.dags_examples (see setup.py); this file
# only makes it a regular package so an editable install can map it too.
