"""The web panel, `/panel/...`: server-rendered pages (Jinja2) over the same reads and commands
as the API, in Russian and English (gettext catalogs under `locales/`).

Every page but the login needs a signed-in session (checked against its server-side record at
each request); every form carries the session's CSRF token; an adjustment form carries its own
idempotency key, so a double submit applies once.
"""

from __future__ import annotations

import gettext
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from backend_api.auth import (
    SESSION_OPERATOR,
    SESSION_TOKEN,
    Operators,
    Principal,
    SignInRefusedError,
    TooManyAttemptsError,
    client_address,
    csrf_token,
    csrf_valid,
    principal_of,
)
from backend_api.commands import (
    AWAITING,
    AlreadyDecidedError,
    Commands,
    IdempotencyConflictError,
    SelfApprovalError,
)
from backend_api.reads import Owners
from backend_api.settings import Role
from contracts.rpc import JobStage, ListLedger, ListPayments, SearchAccounts, SearchJobs

HERE = Path(__file__).parent
LOCALES = HERE / "locales"
LANGUAGES = ("ru", "en")
PAGE = 50
OFFSET_MAX = 10_000_000
"""The furthest a list pages (the owners' `Offset`): a later offset shows the empty page there."""
REASON_MAX = 500
"""An operator's reason's length at most (the commands' `OperatorNote`)."""
SESSION_LANGUAGE = "lang"
SESSION_NEXT = "next"
"""The page a signed-out operator asked for: the login goes back there."""
HOME = "/panel/dashboard"
JOB_STATUSES: tuple[str, ...] = get_args(JobStage)
FINISHED_JOBS = ("succeeded", "failed", "canceled", "completed", "unknown")
"""A job in none of these can still be canceled."""


def _environment(language: str) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    # an operator reads a command's details (audit, approvals, dead letters) as written, not
    # as \uXXXX escapes; `tojson` still escapes <, >, & and ' for the page
    environment.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    translations = gettext.translation("messages", LOCALES, languages=[language])
    environment.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    environment.filters["label"] = lambda code: (
        translations.pgettext("status", code) if code else "—"
    )  # a job's stage, a payment's status or type, a command's status, in words (msgctxt status)
    return environment


class Panel:
    def __init__(
        self, owners: Owners, commands: Commands, operators: Operators, default_language: str
    ) -> None:
        self._owners = owners
        self._commands = commands
        self._operators = operators
        self._default_language = default_language
        self._environments = {language: _environment(language) for language in LANGUAGES}

    def role(self, request: Request) -> Role | None:
        """The signed-in operator's role now; None when nobody (or no operator any more) is."""
        principal = principal_of(request)
        return principal.role if principal is not None else None

    def operator(self, request: Request) -> str:
        """The signed-in operator's login (after `signed_out`)."""
        return self._principal(request).login

    def _principal(self, request: Request) -> Principal:
        principal = principal_of(request)
        if principal is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not signed in")
        return principal

    def signed_out(self, request: Request) -> Response | None:
        """A redirect to the login page when nobody is signed in (or their session ended);
        None otherwise. Every page starts with it."""
        principal = principal_of(request)
        if principal is not None:
            request.session[SESSION_OPERATOR] = principal.login
            return None
        request.session.pop(SESSION_OPERATOR, None)
        if request.method == "GET":  # back there once signed in
            request.session[SESSION_NEXT] = request.url.path
        return RedirectResponse("/panel/login", status.HTTP_303_SEE_OTHER)

    def require(self, request: Request, needs: Role) -> None:
        """403 unless the signed-in operator's role is at least `needs`."""
        role = self.role(request)
        if role is None or role < needs:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"needs the {needs.name} role")

    def language(self, request: Request) -> str:
        chosen = request.session.get(SESSION_LANGUAGE)
        return chosen if chosen in LANGUAGES else self._default_language

    def label(self, request: Request) -> Callable[[str], str]:
        """The `label` filter in the operator's language: a status code in words."""
        return cast(
            "Callable[[str], str]", self._environments[self.language(request)].filters["label"]
        )

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status_code: int = 200,
    ) -> HTMLResponse:
        language = self.language(request)
        page = self._environments[language].get_template(template)
        role = self.role(request)
        html = page.render(
            can_adjust=role is not None and role >= Role.support,
            can_audit=role is not None and role >= Role.admin,
            **context,
            request=request,
            language=language,
            languages=LANGUAGES,
            operator=principal.login if (principal := principal_of(request)) else None,
            csrf=csrf_token(request),
        )
        return HTMLResponse(html, status_code=status_code)

    def error(self, request: Request, status_code: int, headers: Mapping[str, str]) -> Response:
        """A page's HTTP error as a page in the operator's language: what happened, what to do."""
        page = self.render(request, "error.html", {"status": status_code}, status_code=status_code)
        page.headers.update(headers)
        return page

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/panel", include_in_schema=False)
        router.add_api_route("", self.home, methods=["GET"])
        router.add_api_route("/login", self.login_form, methods=["GET"])
        router.add_api_route("/login", self.login, methods=["POST"])
        router.add_api_route("/logout", self.logout, methods=["POST"])
        router.add_api_route("/language", self.set_language, methods=["POST"])
        router.add_api_route("/users", self.users, methods=["GET"])
        router.add_api_route("/users/{user_id}", self.profile, methods=["GET"])
        router.add_api_route("/users/{user_id}/adjust", self.adjust, methods=["POST"])
        router.add_api_route("/jobs", self.jobs, methods=["GET"])
        router.add_api_route("/audit", self.audit, methods=["GET"])
        router.add_api_route("/sessions", self.sessions, methods=["GET"])
        router.add_api_route("/sessions/{session_id}/revoke", self.revoke, methods=["POST"])
        router.add_api_route("/approvals", self.approvals, methods=["GET"])
        router.add_api_route("/approvals/{request_id}/{decision}", self.decide, methods=["POST"])
        return router

    # --- session

    async def home(self, request: Request) -> Response:
        return RedirectResponse(HOME, status.HTTP_303_SEE_OTHER)

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", {"error": False, "username": ""})

    async def login(self, request: Request) -> Response:
        form = await request.form()
        username = (form_text(form.get("username")) or "")[:100]
        password = form_text(form.get("password")) or ""
        code = form_text(form.get("code"))
        wrong = {"error": "wrong", "username": username}
        if not csrf_valid(request, form_text(form.get("csrf"))):
            return self.render(request, "login.html", wrong, status_code=401)
        try:
            session = await self._operators.sign_in(
                username,
                password,
                code,
                address=client_address(request),
                user_agent=request.headers.get("user-agent", ""),
                kind="panel",
            )
        except TooManyAttemptsError as exc:
            context = {
                "error": "throttled",
                "minutes": math.ceil(exc.retry_after_s / 60),
                "username": username,
            }
            return self.render(request, "login.html", context, status_code=429)
        except SignInRefusedError:
            return self.render(request, "login.html", wrong, status_code=401)
        language = request.session.get(SESSION_LANGUAGE)
        asked = request.session.get(SESSION_NEXT)
        request.session.clear()  # a fresh session (and CSRF token) for the signed-in operator
        request.session[SESSION_TOKEN] = session.token
        request.session[SESSION_OPERATOR] = session.login
        if language is not None:
            request.session[SESSION_LANGUAGE] = language
        back = asked if isinstance(asked, str) and asked.startswith("/panel/") else HOME
        return RedirectResponse(back, status.HTTP_303_SEE_OTHER)

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if csrf_valid(request, form_text(form.get("csrf"))):
            principal = principal_of(request)
            if principal is not None:
                await self._operators.revoke(principal.session_id, principal)
            request.session.clear()
        return RedirectResponse("/panel/login", status.HTTP_303_SEE_OTHER)

    async def set_language(self, request: Request) -> Response:
        form = await request.form()
        language = form_text(form.get("language"))
        if csrf_valid(request, form_text(form.get("csrf"))) and language in LANGUAGES:
            request.session[SESSION_LANGUAGE] = language
        back = form_text(form.get("back")) or "/panel/users"
        return RedirectResponse(back if back.startswith("/panel") else "/panel/users", 303)

    # --- pages

    async def users(self, request: Request, q: str = "", offset: int = 0) -> Response:
        if (denied := self.signed_out(request)) is not None:
            return denied
        query = printable(q)
        offset = page_offset(offset)
        search = SearchAccounts(offset=offset, limit=PAGE)
        if (telegram_id := positive(query, below=2**63)) is not None:
            search = SearchAccounts(telegram_id=telegram_id, offset=offset, limit=PAGE)
        elif query:
            search = SearchAccounts(username_prefix=query[:100], offset=offset, limit=PAGE)
        page = await self._owners.accounts(search)
        return self.render(
            request,
            "users.html",
            {
                "q": query,
                "page": page,
                "offset": offset,
                "rows": page.accounts,
                **pager(request, offset, page.total, page.total_exact),
            },
        )

    async def profile(self, request: Request, user_id: int, done: str | None = None) -> Response:
        if (denied := self.signed_out(request)) is not None:
            return denied
        return await self._profile(request, user_id, done=done)

    async def _profile(
        self,
        request: Request,
        user_id: int,
        *,
        done: str | None = None,
        errors: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> Response:
        if not 0 < user_id < 2**31:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        found = await self._owners.accounts(SearchAccounts(user_id=user_id, limit=1))
        if not found.accounts:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        result = None
        if done is not None:
            try:
                result = await self._commands.entry(uuid.UUID(done))
            except ValueError:
                result = None
        context = {
            "account": found.accounts[0],
            "ledger": await self._owners.ledger(ListLedger(user_id=user_id, limit=20)),
            "payments": await self._owners.payments(ListPayments(user_id=user_id, limit=20)),
            "jobs": await self._owners.jobs(SearchJobs(user_id=user_id, limit=20)),
            "gateway": await self._owners.gateway_profile(found.accounts[0].telegram_id),
            "result": result,
            "errors": errors or {},
            "form": form or {},
            "key": uuid.uuid4(),
        }
        return self.render(request, "profile.html", context, status_code=422 if errors else 200)

    async def form(self, request: Request, needs: Role) -> FormData:
        """A posted form, once the operator's role and the form's CSRF token are checked (403
        otherwise). Every write starts with it (after `signed_out`)."""
        self.require(request, needs)
        form = await request.form()
        if not csrf_valid(request, form_text(form.get("csrf"))):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="CSRF token missing or wrong")
        return form

    async def adjust(self, request: Request, user_id: int) -> Response:
        if (denied := self.signed_out(request)) is not None:
            return denied
        form = await self.form(request, Role.support)
        if not 0 < user_id < 2**31:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        found = await self._owners.accounts(SearchAccounts(user_id=user_id, limit=1))
        if not found.accounts or found.accounts[0].telegram_id is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        raw_credits = (form_text(form.get("credits")) or "").strip()
        reason, reason_error = form_reason(form)
        errors: dict[str, str] = {} if reason_error is None else {"reason": reason_error}
        credits = 0
        try:
            credits = int(raw_credits)
        except ValueError:
            errors["credits"] = "whole_number"
        else:
            if credits == 0 or abs(credits) > 10**12:
                errors["credits"] = "not_zero"
        if errors:
            return await self._profile(
                request,
                user_id,
                errors=errors,
                form={"credits": raw_credits, "reason": reason},
            )
        record = await self._commands.adjust_credits(
            key=form_key(form),
            operator=self.operator(request),
            telegram_id=found.accounts[0].telegram_id,
            credits=credits,
            reason=reason,
        )
        return RedirectResponse(
            f"/panel/users/{user_id}?{urlencode({'done': str(record.request_id)})}",
            status.HTTP_303_SEE_OTHER,
        )

    async def jobs(
        self,
        request: Request,
        user_id: str = "",
        preset_id: str = "",
        created_from: str = "",
        created_until: str = "",
        offset: int = 0,
        done: str = "",
        error: str = "",
    ) -> Response:
        if (denied := self.signed_out(request)) is not None:
            return denied
        status_ = request.query_params.get("status", "")  # `status` is the module's name
        offset = page_offset(offset)
        search = SearchJobs(
            user_id=positive(user_id),
            status=status_ if status_ in JOB_STATUSES else None,
            preset_id=positive(preset_id),
            created_from=moment(created_from),
            created_until=moment(created_until),
            offset=offset,
            limit=PAGE,
        )
        page = await self._owners.jobs(search)
        result = None
        if done:
            try:
                result = await self._commands.entry(uuid.UUID(done))
            except ValueError:
                result = None
        role = self.role(request)
        return self.render(
            request,
            "jobs.html",
            {
                "rows": page.jobs,
                "page": page,
                "filters": {
                    "user_id": user_id,
                    "status": status_,
                    "preset_id": preset_id,
                    "created_from": created_from if search.created_from else "",
                    "created_until": created_until if search.created_until else "",
                },
                "statuses": JOB_STATUSES,
                "finished": FINISHED_JOBS,
                "can_cancel": role is not None and role >= Role.support,
                "result": result,
                "error": error == "reason",
                "new_key": uuid.uuid4,
                **pager(request, offset, page.total, page.total_exact),
            },
        )

    async def audit(self, request: Request, offset: int = 0) -> Response:
        if (denied := self.signed_out(request)) is not None:
            return denied
        self.require(request, Role.admin)
        offset = page_offset(offset)
        records, total = await self._commands.audit(
            operator=None, action=None, target=None, offset=offset, limit=PAGE
        )
        return self.render(
            request,
            "audit.html",
            {"rows": records, "total": total, **pager(request, offset, total)},
        )

    async def sessions(self, request: Request, offset: int = 0) -> Response:
        """One's own live sessions (an admin's: everyone's), each with a button that ends it."""
        if (denied := self.signed_out(request)) is not None:
            return denied
        principal = self._principal(request)
        offset = page_offset(offset)
        everyone = principal.role >= Role.admin
        records, total = await self._operators.sessions(
            operator=None if everyone else principal.login, offset=offset, limit=PAGE
        )
        return self.render(
            request,
            "sessions.html",
            {
                "rows": records,
                "current": principal.session_id,
                "everyone": everyone,
                **pager(request, offset, total),
            },
        )

    async def revoke(self, request: Request, session_id: str) -> Response:
        if (denied := self.signed_out(request)) is not None:
            return denied
        await self.form(request, Role.viewer)
        principal = self._principal(request)
        try:
            await self._operators.revoke(uuid.UUID(session_id), principal)
        except ValueError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND) from exc
        return RedirectResponse("/panel/sessions", status.HTTP_303_SEE_OTHER)

    async def approvals(self, request: Request, offset: int = 0, done: str = "") -> Response:
        """Writes held for a second operator: approve (sent then) or reject."""
        if (denied := self.signed_out(request)) is not None:
            return denied
        self.require(request, Role.support)
        offset = page_offset(offset)
        records, total = await self._commands.audit(
            operator=None, action=None, target=None, offset=offset, limit=PAGE, status=AWAITING
        )
        return self.render(
            request,
            "approvals.html",
            {
                "rows": records,
                "me": self.operator(request),
                "done": done,
                **pager(request, offset, total),
            },
        )

    async def decide(self, request: Request, request_id: str, decision: str) -> Response:
        if (denied := self.signed_out(request)) is not None:
            return denied
        await self.form(request, Role.support)
        if decision not in ("approve", "reject"):
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        try:
            key = uuid.UUID(request_id)
            if decision == "approve":
                await self._commands.approve(key, self.operator(request))
            else:
                await self._commands.reject(key, self.operator(request))
            done = decision
        except (ValueError, KeyError) as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND) from exc
        except SelfApprovalError:
            done = "self"
        except (AlreadyDecidedError, IdempotencyConflictError):
            done = "decided"
        return RedirectResponse(
            f"/panel/approvals?{urlencode({'done': done})}", status.HTTP_303_SEE_OTHER
        )


def pager(request: Request, offset: int, total: int, exact: bool = True) -> dict[str, Any]:
    """A list page's rows-shown and previous/next links, for `macros.html`'s pager; not `exact`:
    the owner stopped counting at `total` (a big shop's list stays fast), shown as "at least"."""

    def link(to: int) -> str:
        params = {**request.query_params, "offset": str(to)}
        return f"{request.url.path}?{urlencode(params)}"

    return {
        "total": total,
        "total_exact": exact,
        "first_row": offset + 1 if total else 0,
        "last_row": min(offset + PAGE, total),
        "previous": link(max(offset - PAGE, 0)) if offset > 0 else None,
        "next": link(offset + PAGE) if offset + PAGE < total else None,
    }


def page_offset(offset: int) -> int:
    """A list page's offset as asked, within 0..OFFSET_MAX."""
    return min(max(offset, 0), OFFSET_MAX)


def moment(value: str) -> datetime | None:
    """A filter's time from the browser's `datetime-local` (YYYY-MM-DDTHH:MM), taken as UTC;
    None when blank or not one."""
    try:
        return datetime.fromisoformat(value.strip()).replace(tzinfo=UTC) if value.strip() else None
    except ValueError:
        return None


def positive(value: str, *, below: int = 2**31) -> int | None:
    """A filter's positive id under `below` (a 32-bit key); None when blank or not one (such
    as "²", a digit to `str.isdigit` but not to `int`, or more digits than `int` reads)."""
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= len(str(below))):
        return None
    return number if 0 < (number := int(value)) < below else None


def form_text(value: object) -> str | None:
    """A form field's text; None when absent or a file."""
    return value if isinstance(value, str) else None


def printable(value: object) -> str:
    """A form field's (or query's) text without control characters, trimmed; "" when absent."""
    return "".join(char for char in form_text(value) or "" if char >= " ").strip()


def form_reason(form: FormData) -> tuple[str, str | None]:
    """The form's reason, printable, and its field error: `required`, `too_long` or None."""
    reason = printable(form.get("reason"))
    return reason, "required" if not reason else "too_long" if len(reason) > REASON_MAX else None


def form_key(form: FormData) -> uuid.UUID:
    """The form's own idempotency key (a double submit applies once); a new one if garbled."""
    try:
        return uuid.UUID(form_text(form.get("key")) or "")
    except ValueError:
        return uuid.uuid4()
