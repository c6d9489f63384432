"""The catalog through the operators' API, against the real jobs service: presets created,
changed, disabled, reordered and given an uploaded icon, each once per idempotency key and
answered by jobs; what the bot reads (jobs' public catalog) follows at once."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.rpc import ListPresets, PresetCatalog
from messaging.rpc import RpcClient
from support.backend_harness import OPERATOR, SUPPORT, VIEWER, Running
from support.billing_harness import scalar

pytestmark = pytest.mark.integration


async def call(
    running: Running,
    method: str,
    path: str,
    *,
    key: uuid.UUID | None = None,
    login: str = OPERATOR,
    **kwargs: Any,
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": str(key or uuid.uuid4())}
    async with (
        running.client(login=login) as client,
        client.request(method, path, headers=headers, **kwargs) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


def new_preset(**overrides: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {
        "category": f"cat-{tag}",
        "name": "Watercolor",
        "prompt": "Repaint the photo as a watercolor",
        "icon": "🎨",
        "price": 30,
        "reason": "new season",
        **overrides,
    }


async def create(running: Running, **overrides: Any) -> tuple[int, dict[str, Any]]:
    body = new_preset(**overrides)
    code, answer = await call(running, "POST", "/api/v1/presets", json=body)
    assert (code, answer["status"]) == (200, "applied"), answer
    (preset_id,) = answer["outcome"]["preset_ids"]
    return preset_id, body


async def listed(running: Running, **params: Any) -> Any:
    code, page = await call(running, "GET", "/api/v1/presets", params=params)
    assert code == 200, page
    return page


async def public_catalog(running: Running, amqp_url: str) -> PresetCatalog:
    """What the bot reads: jobs' catalog of enabled presets."""
    rpc = RpcClient(amqp_url, running.backend.runtime.topology, timeout_s=10)
    try:
        return await rpc.call(ListPresets(), PresetCatalog)
    finally:
        await rpc.close()


def png(size: tuple[int, int] = (48, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


async def test_a_preset_is_created_once_listed_and_shown_to_the_bot(
    running: Running, backend_engine: AsyncEngine, amqp_url: str
) -> None:
    key = uuid.uuid4()
    body = new_preset(order_index=5)
    code, answer = await call(running, "POST", "/api/v1/presets", key=key, json=body)
    assert code == 200, answer
    assert (answer["status"], answer["action"]) == ("applied", "preset.create")
    (preset_id,) = answer["outcome"]["preset_ids"]
    code, again = await call(running, "POST", "/api/v1/presets", key=key, json=body)
    assert (code, again["outcome"]) == (200, answer["outcome"])  # applied once
    count = await scalar(
        backend_engine, "SELECT count(*) FROM presets WHERE category = :c", c=body["category"]
    )
    assert count == 1
    code, _ = await call(running, "POST", "/api/v1/presets", key=key, json={**body, "price": 31})
    assert code == 409

    page = await listed(running, category=body["category"])
    (row,) = page["items"]
    assert row == {
        "id": preset_id,
        "category": body["category"],
        "name": "Watercolor",
        "prompt": "Repaint the photo as a watercolor",
        "icon": "🎨",
        "price": 30,
        "order_index": 5,
        "workflow_type": "qwen_edit_2511",
        "enabled": True,
    }
    catalog = await public_catalog(running, amqp_url)
    assert any(preset.id == preset_id and preset.price == 30 for preset in catalog.presets)

    code, duplicate = await call(running, "POST", "/api/v1/presets", json=body)
    assert (code, duplicate["status"]) == (200, "refused")
    assert duplicate["outcome"]["reason"] == "duplicate_name"


async def test_a_preset_is_repriced_renamed_and_disabled(running: Running, amqp_url: str) -> None:
    preset_id, body = await create(running)
    before = (await public_catalog(running, amqp_url)).revision

    code, answer = await call(
        running,
        "PATCH",
        f"/api/v1/presets/{preset_id}",
        json={"price": 45, "name": "Watercolor+", "workflow_type": "qwen_image", "reason": "v2"},
    )
    assert (code, answer["status"]) == (200, "applied"), answer
    assert answer["payload"] == {"price": 45, "name": "Watercolor+", "workflow_type": "qwen_image"}
    catalog = await public_catalog(running, amqp_url)
    assert catalog.revision != before
    (shown,) = [preset for preset in catalog.presets if preset.id == preset_id]
    assert (shown.price, shown.name, shown.workflow_type) == (45, "Watercolor+", "qwen_image")

    code, answer = await call(
        running,
        "PATCH",
        f"/api/v1/presets/{preset_id}",
        json={"enabled": False, "reason": "broken workflow"},
    )
    assert (code, answer["status"]) == (200, "applied"), answer
    catalog = await public_catalog(running, amqp_url)
    assert preset_id not in {preset.id for preset in catalog.presets}  # the bot hides it
    (row,) = (await listed(running, category=body["category"], enabled="false"))["items"]
    assert (row["id"], row["enabled"], row["price"]) == (preset_id, False, 45)
    assert (await listed(running, category=body["category"], enabled="true"))["total"] == 0

    code, missing = await call(
        running, "PATCH", "/api/v1/presets/2147483000", json={"price": 1, "reason": "typo"}
    )
    assert (code, missing["status"], missing["outcome"]["reason"]) == (
        200,
        "refused",
        "unknown_preset",
    )


async def test_presets_are_reordered(running: Running) -> None:
    category = f"order-{uuid.uuid4().hex[:8]}"
    first, _ = await create(running, category=category, name="A", order_index=1)
    second, _ = await create(running, category=category, name="B", order_index=2)
    third, _ = await create(running, category=category, name="C", order_index=3)

    code, answer = await call(
        running,
        "PUT",
        "/api/v1/catalog/order",
        json={"preset_ids": [third, first, second], "reason": "bestseller first"},
    )
    assert (code, answer["status"]) == (200, "applied"), answer
    rows = (await listed(running, category=category))["items"]
    assert [(row["id"], row["order_index"]) for row in rows] == [
        (third, 10),
        (first, 20),
        (second, 30),
    ]

    code, refused = await call(
        running,
        "PUT",
        "/api/v1/catalog/order",
        json={"preset_ids": [first, 2147483000], "reason": "typo"},
    )
    assert (code, refused["outcome"]["reason"]) == (200, "unknown_preset")
    rows = (await listed(running, category=category))["items"]
    assert [row["order_index"] for row in rows] == [10, 20, 30]  # nothing moved

    code, _ = await call(
        running,
        "PUT",
        "/api/v1/catalog/order",
        json={"preset_ids": [first, first], "reason": "twice"},
    )
    assert code == 422


async def test_an_uploaded_icon_goes_to_the_object_store(
    running: Running, objects_root: Path
) -> None:
    preset_id, body = await create(running)
    image = png()

    def upload(data: bytes, content_type: str, reason: str = "new artwork") -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("icon", data, filename="icon.png", content_type=content_type)
        form.add_field("reason", reason)
        return form

    key = uuid.uuid4()
    path = f"/api/v1/presets/{preset_id}/icon"
    code, answer = await call(running, "POST", path, key=key, data=upload(image, "image/png"))
    assert (code, answer["status"]) == (200, "applied"), answer
    icon = answer["payload"]["icon"]
    assert icon.startswith("presets/icons/")
    assert icon.endswith(".png")
    assert (objects_root / icon).read_bytes() == image
    (row,) = (await listed(running, category=body["category"]))["items"]
    assert row["icon"] == icon
    code, again = await call(running, "POST", path, key=key, data=upload(image, "image/png"))
    assert (code, again["request_id"]) == (200, answer["request_id"])

    for data, why in (
        (b"not an image at all", "PNG, JPEG or WebP"),
        (png()[:60], "PNG, JPEG or WebP"),  # truncated
        (png((1500, 10)), "1024"),
        (b"\x89PNG" + b"\0" * (300 * 1024), "KiB"),
    ):
        code, error = await call(running, "POST", path, data=upload(data, "image/png"))
        assert code == 422, error
        ((detail),) = error["detail"]
        assert detail["loc"] == ["body", "icon"], detail
        assert why in detail["msg"], detail
    code, _ = await call(running, "POST", path, data=upload(image, "image/png", reason=" "))
    assert code == 422
    code, _ = await call(
        running, "POST", "/api/v1/presets/2147483000/icon", data=upload(image, "image/png")
    )
    assert code == 404

    code, answer = await call(
        running,
        "PATCH",
        f"/api/v1/presets/{preset_id}",
        json={"icon": None, "reason": "back to none"},
    )
    assert (code, answer["status"]) == (200, "applied"), answer
    (row,) = (await listed(running, category=body["category"]))["items"]
    assert row["icon"] is None


async def test_invalid_bodies_are_refused_field_by_field(running: Running) -> None:
    preset_id, _ = await create(running)
    for body, field in (
        (new_preset(price=-1), "price"),
        (new_preset(price="30"), "price"),
        (new_preset(name=""), "name"),
        (new_preset(workflow_type="dall-e"), "workflow_type"),
        (new_preset(icon="presets/icons/x.png"), "icon"),
        (new_preset(reason=""), "reason"),
        ({k: v for k, v in new_preset().items() if k != "prompt"}, "prompt"),
    ):
        code, error = await call(running, "POST", "/api/v1/presets", json=body)
        assert code == 422, (body, error)
        assert any(detail["loc"][:2] == ["body", field] for detail in error["detail"]), error
    code, error = await call(
        running, "PATCH", f"/api/v1/presets/{preset_id}", json={"reason": "nothing"}
    )
    assert code == 422, error  # the document asks for a change
    code, answer = await call(
        running,
        "PATCH",
        f"/api/v1/presets/{preset_id}",
        json={"price": None, "reason": "nothing after all"},
    )
    assert (code, answer["status"], answer["payload"]) == (200, "applied", {})
    async with running.client() as client, client.post("/api/v1/presets", json=new_preset()) as r:
        assert r.status == 422  # no idempotency key


async def test_only_admins_change_the_catalog(running: Running) -> None:
    preset_id, _ = await create(running)
    change = {"price": 1, "reason": "cheap"}
    for login in (VIEWER, SUPPORT):
        assert (await call(running, "GET", "/api/v1/presets", login=login))[0] == 200
        code, _ = await call(
            running, "PATCH", f"/api/v1/presets/{preset_id}", login=login, json=change
        )
        assert code == 403, login
        code, _ = await call(running, "POST", "/api/v1/presets", login=login, json=new_preset())
        assert code == 403, login
    async with running.client(signed_in=False) as client, client.get("/api/v1/presets") as r:
        assert r.status == 401
