"""The API's OpenAPI document fuzzed by schemathesis against the running API (billing and jobs
behind it), once per role and once signed out: no 5xx, every response as documented (status,
headers, body), nothing accepted that the document rules out."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from support.backend_harness import OPERATOR, SUPPORT, VIEWER, Running, bearer

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.parametrize("login", [OPERATOR, SUPPORT, VIEWER, None])
async def test_the_api_keeps_to_its_openapi_document(running: Running, login: str | None) -> None:
    # signed in once per role: the session's token on every request
    headers = ["--header", f"Authorization: {bearer(running.tokens[login])}"] if login else []
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{running.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "10",
        "--seed",
        "19",
        *headers,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"NO_COLOR": "1", "PATH": str(SCHEMATHESIS.parent)},
    )
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-8000:]
