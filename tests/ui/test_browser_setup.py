"""scripts/browser.sh, which `make test` runs first: a missing browser is installed when it may
be, and otherwise named with the reason; under CI=true that stops the run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "browser.sh"


def run(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "ESCALATION_TEST_CHROMIUM")}
    return subprocess.run(["bash", str(SCRIPT)], env={**environ, **env}, capture_output=True, text=True, timeout=60)


def test_a_present_browser_needs_nothing(tmp_path):
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    done = run(ESCALATION_TEST_CHROMIUM=str(browser), CI="true")
    assert done.returncode == 0 and done.stdout == done.stderr == ""


@pytest.mark.parametrize("ci, status", [("false", 0), ("true", 1)])
def test_a_browser_it_cannot_install_is_named_and_fails_ci(tmp_path, ci, status):
    done = run(ESCALATION_TEST_CHROMIUM=str(tmp_path / "missing"), CI=ci)
    assert done.returncode == status
    assert f"no Chromium at {tmp_path / 'missing'}" in done.stderr and "browser tests will skip" in done.stderr
