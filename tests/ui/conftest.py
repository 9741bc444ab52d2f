"""Fixtures of the UI tests: the service in-process (``svc``) and headless Chromium (``browser``).

Browser tests drive the system Chromium (``/usr/bin/chromium``, Debian's ``chromium`` package)
through Playwright's Python package with ``executable_path``; Playwright's own browser download
is never used. Without Chromium (or Playwright) they skip locally and FAIL under ``CI=true``.

Screenshots go to ``test-artifacts/ui/`` (gitignored). With ``ESCALATION_UPDATE_DOC_IMAGES=1``
the ones docs/ui.md shows are copied to ``docs/images/`` as well.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="escalation-ui-tests-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest

from ui_support import CHROMIUM, CHROMIUM_ARGS, make_service, unavailable


@pytest.fixture
def svc(monkeypatch) -> Iterator[Any]:
    """The service app in-process (memory store, fake authentication by header)."""
    yield from make_service(monkeypatch)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
