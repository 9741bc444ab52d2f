"""The Airflow floor: one number, the same in pyproject, and a clear error below it at import of
any module Airflow loads from the provider."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from airflow_escalation.version_compat import (
    MIN_AIRFLOW_VERSION,
    UnsupportedAirflowVersion,
    check_airflow_version,
)

AIRFLOW_LAYER = [
    "airflow_escalation.hooks.escalation",
    "airflow_escalation.operators.escalation",
    "airflow_escalation.sensors.escalation",
    "airflow_escalation.triggers.escalation",
    "airflow_escalation.notifications.escalation",
    "airflow_escalation.plugins.escalation_plugin",
    "airflow_escalation.models.db",
    "airflow_escalation.cli.definition",
]


def test_pyproject_floor_is_the_checked_floor():
    (airflow,) = [
        Requirement(r)
        for r in metadata.requires("airflow-provider-escalation")
        if Requirement(r).name == "apache-airflow" and not Requirement(r).marker
    ]
    assert str(airflow.specifier) == f">={MIN_AIRFLOW_VERSION}"


@pytest.mark.parametrize("version", ["3.1.7", "3.1.0", "2.11.0"])
def test_below_the_floor_is_refused_with_what_to_do(version):
    with pytest.raises(UnsupportedAirflowVersion) as info:
        check_airflow_version(version)
    message = str(info.value)
    assert f"needs apache-airflow>={MIN_AIRFLOW_VERSION}" in message and f"Airflow {version} is installed" in message


@pytest.mark.parametrize("version", [MIN_AIRFLOW_VERSION, "3.2.0b1", "3.2.1rc1", "3.3.2", "4.0.0"])
def test_the_floor_and_newer_pass(version):
    assert check_airflow_version(version) == version


def test_every_airflow_layer_module_refuses_an_old_airflow():
    """An Airflow that says it is 3.1.7: importing each entry point fails with the clear error."""
    code = (
        "import importlib, sys, airflow\n"
        "airflow.__version__ = '3.1.7'\n"
        f"for name in {AIRFLOW_LAYER!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('airflow_escalation')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except RuntimeError as exc:\n"
        "        assert 'needs apache-airflow>=' in str(exc), (name, exc)\n"
        "    else:\n"
        "        sys.exit(f'{name} imported on Airflow 3.1.7')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_the_core_does_not_check():
    """The core runs without Airflow: importing it never asks Airflow's version."""
    code = (
        "import sys, airflow_escalation.runtime.engine, airflow_escalation.stores.sql; "
        "sys.exit('airflow' in sys.modules or 'airflow_escalation.version_compat' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
