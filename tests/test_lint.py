"""Lint, format and types, in the suite: ``ruff check`` with the rules in pyproject.toml,
``ruff format --check``, and ``mypy --strict`` on the domain and the runtime (``airflow_escalation/core``, ``runtime``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_check():
    done = run(str(BIN / "ruff"), "check", "--output-format", "concise", ".")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_ruff_format():
    done = run(str(BIN / "ruff"), "format", "--check", ".")
    assert done.returncode == 0, "run `ruff format`:\n" + done.stdout[-3000:] + done.stderr[-2000:]


def test_mypy_strict_on_the_domain_and_the_runtime():
    done = run(sys.executable, "-m", "mypy", "airflow_escalation/core", "airflow_escalation/runtime")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
