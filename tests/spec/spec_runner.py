"""Run the spec's example blocks (``blocks.md``) the way a reader following the page would.

``python spec_runner.py N [N ...]`` runs blocks N… in a fresh interpreter, then the Python read
from stdin (the test's checks), all in one namespace:

- blocks run in the order given (the spec's order): a later block uses names an earlier one
  defined, as on the page;
- the namespace starts with ``reader_side.names()``: what the spec uses but never defines;
- a block with a top-level ``await`` is compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and run with
  ``asyncio.run`` (the spec shows those lines inside async code); its names land in the namespace;
- ``redis://localhost:6379`` in a block means the test Redis (``ESCALATION_TEST_REDIS_URL``);
  relative paths are relative to the working directory (the test's temp dir).
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

BLOCKS_FILE = Path(__file__).with_name("blocks.md")
SPEC_REDIS_URL = "redis://localhost:6379"
TEST_REDIS_URL = os.environ.get("ESCALATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def load_blocks() -> dict[int, tuple[str, str, str]]:
    """``{number: (heading, language, code)}`` of every block in blocks.md."""
    text = BLOCKS_FILE.read_text()
    found = re.findall(r"^## (\d+)\. (.*?)\n\n```(\w+)\n(.*?)```", text, re.S | re.M)
    return {int(n): (heading, lang, code) for n, heading, lang, code in found}


def run_code(code: str, namespace: dict[str, Any], name: str) -> None:
    compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)


def main(numbers: list[int], check: str) -> None:
    import reader_side

    blocks = load_blocks()
    namespace: dict[str, Any] = {"__name__": "__main__", **reader_side.names()}
    for number in numbers:
        heading, lang, code = blocks[number]
        assert lang == "python", f"block {number} ({heading}) is {lang}"
        run_code(code.replace(SPEC_REDIS_URL, TEST_REDIS_URL), namespace, f"<spec block {number}: {heading}>")
    if check.strip():
        run_code(check, namespace, "<check>")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]], sys.stdin.read())
