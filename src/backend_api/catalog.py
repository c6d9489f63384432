"""The catalog area: presets listed (disabled ones too), created, changed (an icon uploaded),
enabled or disabled and reordered, in the API (`/api/v1/presets...`) and the panel
(`/panel/presets...`).

Jobs owns the presets: every change is a command to it (PresetCreationRequested,
PresetUpdateRequested, PresetsReorderRequested) under the caller's idempotency key, with the
operator and a reason; jobs applies it once and answers CatalogEditApplied/Refused, which
settles the audit entry, and publishes PresetsChanged so the bot shows the change at once.

A preset's icon is what the customer's schema calls "the path to the preset's icon": a short
text (an emoji, shown before the name on the bot's buttons, as the shipped catalog has) or an
uploaded image, which goes to the object store under `presets/icons/<sha-256>.<ext>` (so the
same file is the same key: a repeated upload is the same command) with that key in the preset.
"""

import hashlib
import io
import uuid
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlencode

from fastapi import (
    APIRouter,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from PIL import Image, UnidentifiedImageError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from starlette.datastructures import UploadFile as StarletteUpload

from backend_api.api import (
    COMMAND_RESPONSES,
    ERRORS,
    CommandStatus,
    IdempotencyKey,
    Page,
    Reason,
    _json_integer,
    command_answer,
    guards,
)
from backend_api.auth import Operators
from backend_api.commands import AuditRecord, Commands, settle
from backend_api.panel import (
    PAGE,
    Panel,
    form_key,
    form_reason,
    form_text,
    page_offset,
    pager,
    printable,
)
from backend_api.reads import Owners
from backend_api.settings import Role
from contracts.events import (
    DEFAULT_WORKFLOW,
    PRESET_ICON_PREFIX,
    WORKFLOW_TYPES,
    CatalogEditApplied,
    CatalogEditRefused,
    PresetCategory,
    PresetCreationRequested,
    PresetName,
    PresetOrder,
    PresetPrice,
    PresetPrompt,
    PresetsReorderRequested,
    PresetUpdateRequested,
    WorkflowType,
)
from contracts.rpc import ListAllPresets, PresetRecord
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork
from object_store import ObjectNotFoundError, ObjectStore

CREATE_PRESET = "preset.create"
UPDATE_PRESET = "preset.update"
REORDER_PRESETS = "preset.reorder"
ICON_MAX_BYTES = 256 * 1024
ICON_MAX_SIDE = 1024
ICON_FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
}
ICON_TEXT_MAX = 16
"""An emoji (with its modifiers) or a few characters: the bot puts it before the name."""

JsonInt = BeforeValidator(_json_integer)
IconText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ICON_TEXT_MAX,
        pattern=r"^[^\x00-\x1f/]+$",
        description="an emoji or a few characters; an image is uploaded to /icon instead",
    ),
]


class PresetFields(BaseModel):
    """A new preset."""

    model_config = ConfigDict(extra="forbid")

    category: PresetCategory
    name: PresetName
    prompt: PresetPrompt
    icon: IconText | None = None
    price: Annotated[PresetPrice, JsonInt]
    order_index: Annotated[PresetOrder, JsonInt] = 0
    workflow_type: WorkflowType = DEFAULT_WORKFLOW
    enabled: StrictBool = True
    reason: Reason


class PresetChanges(BaseModel):
    """What changes in a preset: each field given replaces the preset's (null: unchanged, but
    `"icon": null` removes the icon); a body of nothing but nulls changes nothing."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"minProperties": 2}
    )  # the reason and at least one field

    category: PresetCategory | None = None
    name: PresetName | None = None
    prompt: PresetPrompt | None = None
    icon: IconText | None = Field(default=None, description="null removes the icon")
    price: Annotated[PresetPrice, JsonInt] | None = None
    order_index: Annotated[PresetOrder, JsonInt] | None = None
    workflow_type: WorkflowType | None = None
    enabled: StrictBool | None = None
    reason: Reason

    @model_validator(mode="after")
    def _a_field(self) -> "PresetChanges":
        if not self.model_fields_set - {"reason"}:
            raise ValueError("give at least one field besides the reason")
        return self

    def changes(self) -> dict[str, Any]:
        given = self.model_dump(include=self.model_fields_set - {"reason"}, exclude_none=True)
        if "icon" in self.model_fields_set and self.icon is None:
            given["remove_icon"] = True
        return given


class PresetOrder_(BaseModel):
    """The order in which to show presets: each named preset's order becomes 10 × its place."""

    model_config = ConfigDict(extra="forbid", title="PresetsOrder")

    preset_ids: Annotated[
        list[Annotated[int, Field(gt=0, le=2**31 - 1), JsonInt]],
        Field(min_length=1, max_length=500, json_schema_extra={"uniqueItems": True}),
    ]
    reason: Reason

    @field_validator("preset_ids")
    @classmethod
    def _unique(cls, preset_ids: list[int]) -> list[int]:
        if len(set(preset_ids)) != len(preset_ids):
            raise ValueError("each preset once")
        return preset_ids


class IconError(ValueError):
    """An upload that is not an icon; the message says why."""


def icon_image(data: bytes) -> tuple[str, str]:
    """The object key and content type of an uploaded icon, once it is known to be a whole
    PNG, JPEG or WebP image of at most ICON_MAX_SIDE pixels a side and ICON_MAX_BYTES."""
    if not data:
        raise IconError("the file is empty")
    if len(data) > ICON_MAX_BYTES:
        raise IconError(f"at most {ICON_MAX_BYTES // 1024} KiB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            width, height = image.size
            if kind not in ICON_FORMATS:
                raise IconError("a PNG, JPEG or WebP image")
            if max(width, height) > ICON_MAX_SIDE:
                raise IconError(f"at most {ICON_MAX_SIDE}×{ICON_MAX_SIDE} pixels")
            image.load()  # a truncated body fails here, not in verify()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise IconError("a PNG, JPEG or WebP image") from exc
    extension, content_type = ICON_FORMATS[kind]
    return f"{PRESET_ICON_PREFIX}{hashlib.sha256(data).hexdigest()}.{extension}", content_type


def is_icon_image(icon: str | None) -> bool:
    return icon is not None and icon.startswith(PRESET_ICON_PREFIX)


class Catalog:
    """Presets: the owner's reads, the commands, the icons' store."""

    def __init__(self, owners: Owners, commands: Commands, store: ObjectStore) -> None:
        self._owners = owners
        self._commands = commands
        self._store = store

    async def presets(self, request: ListAllPresets) -> tuple[list[PresetRecord], int]:
        page = await self._owners.all_presets(request)
        return page.presets, page.total

    async def preset(self, preset_id: int) -> PresetRecord | None:
        page = await self._owners.all_presets(ListAllPresets(preset_id=preset_id, limit=1))
        return page.presets[0] if page.presets else None

    async def entry(self, key: uuid.UUID) -> AuditRecord | None:
        return await self._commands.entry(key)

    async def store_icon(self, data: bytes) -> str:
        key, content_type = icon_image(data)
        if not await self._store.exists(key):
            await self._store.put(key, data, content_type=content_type)
        return key

    async def icon(self, key: str) -> bytes | None:
        if not is_icon_image(key):
            return None
        try:
            return await self._store.get(key, max_bytes=ICON_MAX_BYTES)
        except ObjectNotFoundError:
            return None

    async def create(
        self, key: uuid.UUID, operator: str, reason: str, fields: dict[str, Any]
    ) -> AuditRecord:
        command = PresetCreationRequested(
            request_id=key, operator=operator, reason=reason, **fields
        )
        target = f"{fields['category']}/{fields['name']}"[:100]
        return await self._commands.submit(
            key, operator, CREATE_PRESET, target, fields, reason, command
        )

    async def update(
        self, key: uuid.UUID, operator: str, reason: str, preset_id: int, changes: dict[str, Any]
    ) -> AuditRecord:
        command = PresetUpdateRequested(
            request_id=key, operator=operator, reason=reason, preset_id=preset_id, **changes
        )
        return await self._commands.submit(
            key, operator, UPDATE_PRESET, str(preset_id), changes, reason, command
        )

    async def reorder(
        self, key: uuid.UUID, operator: str, reason: str, preset_ids: list[int]
    ) -> AuditRecord:
        command = PresetsReorderRequested(
            request_id=key, operator=operator, reason=reason, preset_ids=preset_ids
        )
        payload = {"preset_ids": preset_ids}
        target = ",".join(map(str, preset_ids))[:100]
        return await self._commands.submit(
            key, operator, REORDER_PRESETS, target, payload, reason, command
        )

    # --- the API

    def api_router(self, operators: Operators) -> APIRouter:
        guard = guards(operators)
        Viewer = Annotated[str, guard.viewer]
        Admin = Annotated[str, guard.admin]
        PresetId = Annotated[int, Path(gt=0, le=2**31 - 1)]
        router = APIRouter(prefix="/api/v1", tags=["catalog"], responses=ERRORS)

        @router.get("/presets")
        async def presets(
            _: Viewer,
            category: Annotated[
                str | None, Query(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f]+$")
            ] = None,
            enabled: bool | None = None,
            offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
            limit: Annotated[int, Query(ge=1, le=200)] = 50,
        ) -> Page[PresetRecord]:
            """Every preset, disabled ones too, in display order (category, then order);
            by category (exact) and whether it is enabled."""
            rows, total = await self.presets(
                ListAllPresets(category=category, enabled=enabled, offset=offset, limit=limit)
            )
            return Page(items=rows, total=total, offset=offset, limit=limit)

        @router.post("/presets", responses=COMMAND_RESPONSES)
        async def create(
            who: Admin, body: PresetFields, response: Response, idempotency_key: IdempotencyKey
        ) -> CommandStatus:
            """Add a preset (jobs refuses a name its category has: `duplicate_name`). Admins."""
            fields = body.model_dump(exclude={"reason"}, exclude_none=True)
            submitted = self.create(idempotency_key, who, body.reason.strip(), fields)
            return await command_answer(submitted, response)

        @router.patch("/presets/{preset_id}", responses=COMMAND_RESPONSES)
        async def update(
            who: Admin,
            preset_id: PresetId,
            body: PresetChanges,
            response: Response,
            idempotency_key: IdempotencyKey,
        ) -> CommandStatus:
            """Change a preset: its category, name, prompt, icon (text), price, order,
            workflow, or whether it is shown (`enabled`). A new price applies to requests from
            now on: one confirmed at the old price is refused with the new one. Admins."""
            submitted = self.update(
                idempotency_key, who, body.reason.strip(), preset_id, body.changes()
            )
            return await command_answer(submitted, response)

        @router.post(
            "/presets/{preset_id}/icon",
            responses={**COMMAND_RESPONSES, 404: {"description": "No such preset"}},
        )
        async def upload_icon(
            who: Admin,
            preset_id: PresetId,
            icon: Annotated[UploadFile, File(description="PNG, JPEG or WebP, ≤ 256 KiB")],
            reason: Annotated[Reason, Form()],
            response: Response,
            idempotency_key: IdempotencyKey,
        ) -> CommandStatus:
            """Upload an image as the preset's icon: stored in the object store, its key set
            in the preset. Admins."""
            data = await icon.read(ICON_MAX_BYTES + 1)
            try:
                key = await self.store_icon(data)
            except IconError as exc:
                raise RequestValidationError(
                    [{"loc": ("body", "icon"), "msg": str(exc), "type": "value_error"}]
                ) from exc
            if await self.preset(preset_id) is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such preset")
            submitted = self.update(idempotency_key, who, reason.strip(), preset_id, {"icon": key})
            return await command_answer(submitted, response)

        @router.put("/catalog/order", responses=COMMAND_RESPONSES)
        async def reorder(
            who: Admin, body: PresetOrder_, response: Response, idempotency_key: IdempotencyKey
        ) -> CommandStatus:
            """Show these presets in this order (within their categories): each one's order
            becomes 10 × its place in the list; others keep theirs. Admins."""
            submitted = self.reorder(idempotency_key, who, body.reason.strip(), body.preset_ids)
            return await command_answer(submitted, response)

        return router


WORKFLOWS: tuple[str, ...] = get_args(WorkflowType)
FIELDS = ("category", "name", "prompt", "icon", "price", "order_index", "workflow_type")
Direction = Literal["up", "down"]


class CatalogPanel:
    """`/panel/presets...`: the list, a new preset, a preset's page (change, icon upload),
    enable/disable and moving up or down, each a form with its key and a reason."""

    def __init__(self, catalog: Catalog, panel: Panel) -> None:
        self._catalog = catalog
        self._panel = panel

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/panel/presets", include_in_schema=False)
        router.add_api_route("", self.list, methods=["GET"])
        router.add_api_route("/new", self.new, methods=["GET"])
        router.add_api_route("/new", self.create, methods=["POST"])
        router.add_api_route("/{preset_id}", self.show, methods=["GET"])
        router.add_api_route("/{preset_id}", self.change, methods=["POST"])
        router.add_api_route("/{preset_id}/enabled", self.toggle, methods=["POST"])
        router.add_api_route("/{preset_id}/move", self.move, methods=["POST"])
        router.add_api_route("/{preset_id}/icon", self.icon, methods=["GET"])
        return router

    async def _result(self, done: str | None) -> AuditRecord | None:
        try:
            return await self._catalog.entry(uuid.UUID(done)) if done else None
        except ValueError:
            return None

    async def list(
        self,
        request: Request,
        category: str = "",
        offset: int = 0,
        done: str | None = None,
        error: str = "",
    ) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        category = printable(category)[:50]
        shown = request.query_params.get("enabled", "")
        offset = page_offset(offset)
        rows, total = await self._catalog.presets(
            ListAllPresets(
                category=category or None,
                enabled={"yes": True, "no": False}.get(shown),
                offset=offset,
                limit=PAGE,
            )
        )
        return self._panel.render(
            request,
            "catalog.html",
            {
                "rows": rows,
                "filters": {"category": category, "enabled": shown},
                "result": await self._result(done),
                "error": error if error in ("required", "too_long") else "",
                "new_key": uuid.uuid4,
                "can_edit": _can_edit(self._panel, request),
                "is_icon_image": is_icon_image,
                **pager(request, offset, total),
            },
        )

    async def new(self, request: Request) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        self._panel.require(request, Role.admin)
        return self._form(request, None, {"workflow_type": DEFAULT_WORKFLOW, "price": "30"}, {})

    async def show(self, request: Request, preset_id: int, done: str | None = None) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        preset = await self._found(preset_id)
        form = {
            name: "" if getattr(preset, name) is None else str(getattr(preset, name))
            for name in FIELDS
        }
        if is_icon_image(preset.icon):
            form["icon"] = ""
        return self._form(request, preset, form, {}, result=await self._result(done))

    def _form(
        self,
        request: Request,
        preset: PresetRecord | None,
        form: dict[str, str],
        errors: dict[str, str],
        *,
        result: AuditRecord | None = None,
    ) -> Response:
        return self._panel.render(
            request,
            "catalog_preset.html",
            {
                "preset": preset,
                "form": form,
                "errors": errors,
                "result": result,
                "workflows": WORKFLOWS,
                "key": uuid.uuid4(),
                "can_edit": _can_edit(self._panel, request),
                "is_icon_image": is_icon_image,
                "icon_max_kib": ICON_MAX_BYTES // 1024,
            },
            status_code=422 if errors else 200,
        )

    async def _found(self, preset_id: int) -> PresetRecord:
        if not 0 < preset_id < 2**31:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        preset = await self._catalog.preset(preset_id)
        if preset is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        return preset

    async def create(self, request: Request) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        raw, fields, errors = _read_fields(form)
        for name in ("category", "name", "prompt", "price"):
            if name not in fields and name not in errors:
                errors[name] = "required"
        reason = _reason(form, errors)
        upload = form.get("icon_file")
        icon_data = await _upload(upload)
        if icon_data:
            fields.pop("icon", None)
            try:
                fields["icon"] = await self._catalog.store_icon(icon_data)
            except IconError as exc:
                errors["icon_file"] = str(exc)
        if errors:
            return self._form(request, None, raw, errors)
        fields["enabled"] = form_text(form.get("enabled")) == "on"
        record = await self._catalog.create(
            form_key(form), self._panel.operator(request), reason, fields
        )
        return _back("/panel/presets", record)

    async def change(self, request: Request, preset_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        preset = await self._found(preset_id)
        raw, fields, errors = _read_fields(form)
        reason = _reason(form, errors)
        icon_data = await _upload(form.get("icon_file"))
        if icon_data:
            try:
                fields["icon"] = await self._catalog.store_icon(icon_data)
            except IconError as exc:
                errors["icon_file"] = str(exc)
        elif form_text(form.get("remove_icon")) == "on":
            fields.pop("icon", None)
            fields["remove_icon"] = True
        changes = {
            name: value
            for name, value in fields.items()
            if name == "remove_icon" or value != getattr(preset, name)
        }
        if "icon" not in changes and "icon" not in errors and is_icon_image(preset.icon):
            changes.pop("icon", None)  # the text box is empty while an image is the icon
        if not changes and not errors:
            errors["form"] = "unchanged"
        if errors:
            return self._form(request, preset, raw, errors)
        record = await self._catalog.update(
            form_key(form), self._panel.operator(request), reason, preset_id, changes
        )
        return _back(f"/panel/presets/{preset_id}", record)

    async def toggle(self, request: Request, preset_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        preset = await self._found(preset_id)
        errors: dict[str, str] = {}
        reason = _reason(form, errors)
        if errors:
            return _back_error("/panel/presets", errors["reason"])
        record = await self._catalog.update(
            form_key(form),
            self._panel.operator(request),
            reason,
            preset_id,
            {"enabled": not preset.enabled},
        )
        return _back("/panel/presets", record)

    async def move(self, request: Request, preset_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        preset = await self._found(preset_id)
        errors: dict[str, str] = {}
        reason = _reason(form, errors)
        if errors:
            return _back_error("/panel/presets", errors["reason"])
        siblings, _ = await self._catalog.presets(
            ListAllPresets(category=preset.category or None, limit=200)
        )
        order = [sibling.id for sibling in siblings]
        place = order.index(preset_id)
        other = place - 1 if form_text(form.get("direction")) == "up" else place + 1
        if 0 <= other < len(order):
            order[place], order[other] = order[other], order[place]
        record = await self._catalog.reorder(
            form_key(form), self._panel.operator(request), reason, order
        )
        return _back("/panel/presets", record)

    async def icon(self, request: Request, preset_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        preset = await self._found(preset_id)
        data = await self._catalog.icon(preset.icon or "")
        if data is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        extension = (preset.icon or "").rsplit(".", 1)[-1]
        types = dict(ICON_FORMATS.values())
        return Response(
            data,
            media_type=types.get(extension, "application/octet-stream"),
            headers={"Cache-Control": "private, max-age=3600"},
        )


def _can_edit(panel: Panel, request: Request) -> bool:
    role = panel.role(request)
    return role is not None and role >= Role.admin


def _clean(value: object) -> str:
    return "".join(char for char in form_text(value) or "" if char >= " " or char in "\n\t").strip()


def _reason(form: Any, errors: dict[str, str]) -> str:
    reason, error = form_reason(form)
    if error is not None:
        errors["reason"] = error
    return reason


def _read_fields(form: Any) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """The preset form's fields as typed (those filled in), as typed in (to show again), and
    the errors, by field."""
    raw = {name: _clean(form.get(name)) for name in FIELDS}
    raw["prompt"] = (form_text(form.get("prompt")) or "").replace("\x00", "").strip()
    fields: dict[str, Any] = {}
    errors: dict[str, str] = {}
    limits = {"category": 50, "name": 100, "prompt": 2000}
    for name, limit in limits.items():
        if raw[name]:
            if len(raw[name]) > limit:
                errors[name] = "too_long"
            else:
                fields[name] = raw[name]
    if raw["icon"]:
        if len(raw["icon"]) > ICON_TEXT_MAX or "/" in raw["icon"]:
            errors["icon"] = "icon_text"
        else:
            fields["icon"] = raw["icon"]
    for name, low, high in (("price", 0, 10**6), ("order_index", -(10**6), 10**6)):
        if not raw[name]:
            continue
        try:
            number = int(raw[name])
        except ValueError:
            errors[name] = "whole_number"
            continue
        if not low <= number <= high:
            errors[name] = "out_of_range"
        else:
            fields[name] = number
    if raw["workflow_type"]:
        if raw["workflow_type"] in WORKFLOW_TYPES:
            fields["workflow_type"] = raw["workflow_type"]
        else:
            errors["workflow_type"] = "unknown"
    return raw, fields, errors


async def _upload(value: object) -> bytes | None:
    if not isinstance(value, StarletteUpload) or not value.filename:
        return None
    return await value.read(ICON_MAX_BYTES + 1)


def _back(path: str, record: AuditRecord) -> Response:
    return RedirectResponse(
        f"{path}?{urlencode({'done': str(record.request_id)})}", status.HTTP_303_SEE_OTHER
    )


def _back_error(path: str, error: str) -> Response:
    return RedirectResponse(f"{path}?{urlencode({'error': error})}", status.HTTP_303_SEE_OTHER)


def register(runtime: ServiceRuntime) -> None:
    """Jobs' answers settle the catalog's audit entries."""

    @runtime.consumer.on(CatalogEditApplied)
    async def applied(event: CatalogEditApplied, uow: UnitOfWork) -> None:
        await settle(
            uow,
            event.request_id,
            "applied",
            {"preset_ids": event.preset_ids, "revision": event.revision},
        )

    @runtime.consumer.on(CatalogEditRefused)
    async def refused(event: CatalogEditRefused, uow: UnitOfWork) -> None:
        await settle(
            uow, event.request_id, "refused", {"reason": event.reason.value, "detail": event.detail}
        )
