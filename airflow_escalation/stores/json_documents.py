"""JSON documents as the stores keep them (a record's context, metadata, policy snapshot and
history events; a delivery's target): compact text, encoded and decoded with orjson.

Values JSON cannot hold become ISO strings (datetimes, in UTC when aware), values (enums), lists
(sets, tuples) or ``str()`` (anything else, dataclasses included). What orjson refuses (integers
beyond 64 bits; text holding ``NaN``, as the standard library wrote it) goes through the standard
library's ``json`` instead, so every document written before still reads.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any

import orjson

from airflow_escalation.core.timeutil import UTC

# dict keys that are not strings are written as strings (as json.dumps does); datetimes and
# dataclasses go through json_default, as with json.dumps
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_default(value: Any) -> Any:
    """What a value JSON cannot hold is written as."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dump_json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=json_default, option=_OPTIONS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"), default=json_default)


def load_json(value: Any) -> Any:
    """A document from its text; a value a driver already decoded (psycopg) stays as it is."""
    if not isinstance(value, (str, bytes, bytearray, memoryview)):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value)
