"""The AsyncAPI document: equal to the code, valid for the official AsyncAPI parser, complete.

The parser is `@asyncapi/parser` (the reference implementation, JavaScript) run by node from
`tools/asyncapi` (`make asyncapi-parser` installs it; CI does).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml

from contracts import CATALOG
from contracts.asyncapi import build_asyncapi, render_asyncapi
from contracts.rpc import REQUESTS
from contracts.topology import PUBLISHERS, RETIRED, SUBSCRIPTIONS

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
PARSER = ROOT / "tools" / "asyncapi"


def parse(path: Path) -> dict[str, Any]:
    """What the official parser makes of the document at `path` (see tools/asyncapi)."""
    node = shutil.which("node")
    if node is None or not (PARSER / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(
            "the AsyncAPI parser is not installed: `make asyncapi-parser` "
            "(needs node and npm; `apt-get install -y nodejs npm`)"
        )
    result = subprocess.run(
        [node, str(PARSER / "validate.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    return parse(DOCUMENT)


def test_committed_document_matches_the_code() -> None:
    """`make asyncapi` must be rerun after any contract or topology change."""
    assert DOCUMENT.read_text(encoding="utf-8") == render_asyncapi()


def test_the_official_parser_accepts_the_document_without_a_remark(
    parsed: dict[str, Any],
) -> None:
    assert parsed["valid"], parsed["diagnostics"]
    assert parsed["diagnostics"] == []
    assert parsed["version"].startswith("3.")


def test_the_parser_finds_every_event_of_the_catalog_and_every_method(
    parsed: dict[str, Any],
) -> None:
    events = {event.__name__ for event in CATALOG.values()}
    requests = {request.__name__ for request in REQUESTS.values()}
    replies = {f"{name}Reply" for name in requests}
    assert set(parsed["messages"]) == events | requests | replies


def test_each_event_is_sent_by_its_publisher_and_received_by_each_subscriber(
    parsed: dict[str, Any],
) -> None:
    sent = {
        (op["id"].split(".")[0], message)
        for op in parsed["operations"]
        if op["action"] == "send"
        for message in op["messages"]
    }
    received = {
        (op["id"].split(".")[0], message)
        for op in parsed["operations"]
        if op["action"] == "receive"
        for message in op["messages"]
    }
    assert sent == {
        (service, event.__name__) for service, events in PUBLISHERS.items() for event in events
    }
    assert {
        (service, event.__name__) for service, events in SUBSCRIPTIONS.items() for event in events
    } <= received
    assert ("gpu_runner", "JobDispatched") in received
    for method in REQUESTS:
        server, name = method.split(".", 1)
        assert any(op["id"] == f"{server}.answers.{name}" for op in parsed["operations"])


def test_the_parser_rejects_a_broken_document(tmp_path: Path) -> None:
    """The check can fail: a dangling reference and a wrong action are reported as errors."""
    document = build_asyncapi()
    operation = document["operations"]["jobs.publishes.JobCreated"]
    operation["action"] = "publish"  # AsyncAPI 2 wording, gone in 3
    operation["channel"] = {"$ref": "#/channels/job.nowhere"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    report = parse(broken)
    assert not report["valid"]
    errors = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert errors
    assert any("operations.jobs.publishes.JobCreated" in d["path"] for d in errors)


def test_every_event_has_exactly_one_publisher_and_only_it_builds_the_event() -> None:
    """PUBLISHERS is checked against the services' code: who constructs which event."""
    published = [event for events in PUBLISHERS.values() for event in events]
    assert sorted(e.__name__ for e in (*published, *RETIRED)) == sorted(
        e.__name__ for e in CATALOG.values()
    )
    for service, events in PUBLISHERS.items():
        source = "\n".join(p.read_text() for p in (ROOT / "src" / service).rglob("*.py"))
        built = {
            event.__name__
            for event in CATALOG.values()
            if re.search(rf"\b{event.__name__}\(", source)
        }
        # an exact-balance event's whole-credit v1 copy is built by its `v1()` (billing.versions)
        built |= {
            get_type_hints(event.v1)["return"].__name__
            for event in CATALOG.values()
            if event.__name__ in built and hasattr(event, "v1")
        }
        assert built == {event.__name__ for event in events}, service
