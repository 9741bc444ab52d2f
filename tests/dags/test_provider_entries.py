"""The DAG-layer entries of the provider info: valid, importable, and seen by ProvidersManager."""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

import jsonschema

import airflow
from airflow_escalation.get_provider_info import get_provider_info


def test_entries_are_valid_and_importable():
    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    (integration,) = info["integrations"]
    name = integration["integration-name"]
    for key in ("hooks", "operators", "sensors", "triggers"):
        (entry,) = info[key]
        assert entry["integration-name"] == name
        for module in entry["python-modules"]:
            import_module(module)
    (notifier,) = info["notifications"]
    module, _, cls = notifier.rpartition(".")
    from airflow.sdk import BaseNotifier

    assert issubclass(getattr(import_module(module), cls), BaseNotifier)
    assert "spool_dir" in info["config"]["escalation"]["options"]


def test_providers_manager_lists_the_notifier_and_the_trigger():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow_escalation.notifications.escalation.EscalationNotifier" in manager.notification
    triggers = [t for t in manager.trigger if t.package_name == "airflow-provider-escalation"]
    assert [t.trigger_class_name for t in triggers] == ["airflow_escalation.triggers.escalation"]
