#!/usr/bin/env bash
# The built wheel on the floor Airflow (airflow_escalation/version_compat.py) and on the newest
# 3.x, each in a venv of its own (uv, from PyPI): a smoke subset of the suite against each.
# `make test-versions`; .ci/run calls it after `make test`.
#
#   provider listed, plugin loaded, `airflow db migrate` creates our tables (test_installed_airflow),
#   provider info valid against that Airflow's schema, the version check, `airflow escalation
#   --help`, a failure callback's hand-off (notifier), a sensor's deferral and its trigger.
#
# ESCALATION_AIRFLOW_VERSIONS overrides the list ("floor newest" by default; or e.g. "3.2.1").
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-.venv/bin/uv}"
[ -x "$UV" ] || UV="$(command -v uv)"
FLOOR="$(sed -n 's/^MIN_AIRFLOW_VERSION = "\(.*\)"$/\1/p' airflow_escalation/version_compat.py)"
[ -n "$FLOOR" ] || { echo "cannot read MIN_AIRFLOW_VERSION" >&2; exit 2; }
# on the newest 3.x `make test` runs everything from the checkout: here only what the wheel changes
WHEEL_SMOKE=(
  tests/airflow/test_installed_airflow.py
  tests/client/test_airflow_cli.py::test_airflow_escalation_help_lists_the_commands
)
SMOKE=(
  tests/airflow/test_installed_airflow.py
  tests/airflow/test_provider_info.py
  tests/airflow/test_version_compat.py
  tests/client/test_airflow_cli.py::test_airflow_escalation_help_lists_the_commands
  tests/dags/test_notifier.py::test_failure_builds_the_incident_from_the_context
  tests/dags/test_operator_sensor.py::test_sensor_defers_on_the_incident_and_returns_the_record
)
WORK=.compat
rm -rf "$WORK/dist"
"$UV" build --quiet --wheel --out-dir "$WORK/dist" .
WHEEL="$(ls "$WORK"/dist/*.whl)"

for version in ${ESCALATION_AIRFLOW_VERSIONS:-floor newest}; do
  case "$version" in
    floor) requirement="apache-airflow==$FLOOR"; tests=("${SMOKE[@]}") ;;
    newest) requirement="apache-airflow>=3,<4"; tests=("${WHEEL_SMOKE[@]}") ;;
    *) requirement="apache-airflow==$version"; tests=("${SMOKE[@]}") ;;
  esac
  venv="$WORK/venv-$version"
  echo "== $requirement: $venv"
  [ -x "$venv/bin/python" ] || "$UV" venv --quiet --python python3 "$venv"
  # the wheel with every extra, as a user installs it; pytest to run the subset
  "$UV" pip install --quiet --python "$venv/bin/python" --reinstall-package airflow-provider-escalation \
    "$WHEEL[all]" "$requirement" "pytest>=8" "pytest-asyncio>=0.24" "pytest-timeout>=2.3"
  "$venv/bin/python" -c 'import airflow; print("   Airflow", airflow.__version__)'
  # the venv's pytest (not `python -m pytest`): the checkout is not on sys.path, the wheel is tested
  ESCALATION_EXPECT_INSTALLED=1 AIRFLOW_HOME="$(mktemp -d)" \
    "$venv/bin/pytest" -q -p no:cacheprovider "${tests[@]}"
done
