"""Fixtures of the spec-block tests: the test Redis, as in tests/stores/conftest.py.

``ESCALATION_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``); a server that cannot be
reached skips the test, except under ``CI=true``, where it fails it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # spec_runner, reader_side

from spec_runner import TEST_REDIS_URL

# Key prefixes the spec's blocks write under (the blocks name no other): the store default and
# the RedisEscalationStore block's own.
SPEC_KEY_PREFIXES = ("escalation:", "truthound:escalation:")


def _clear(client) -> None:
    for prefix in SPEC_KEY_PREFIXES:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_url() -> Iterator[str]:
    try:
        import redis

        client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except Exception as error:
        reason = f"no Redis at {TEST_REDIS_URL} (set ESCALATION_TEST_REDIS_URL): {error}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the test servers must be up)", pytrace=False)
        pytest.skip(reason)
    _clear(client)  # the blocks use fixed keys: start from none, leave none
    yield TEST_REDIS_URL
    _clear(client)
