"""The backend API's access rules that need no database: one-time codes (the clock window),
the approval limits as configured, and which writes wait for a second operator."""

from __future__ import annotations

from typing import cast

import pyotp
import pytest

from backend_api import totp
from backend_api.commands import Amount, Commands
from backend_api.settings import BackendApiSettings
from messaging.runtime import ServiceRuntime

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_015.0  # the middle of a 30 s step


@pytest.mark.parametrize(
    ("issued_at", "step_offset"),
    [(NOW, 0), (NOW - 30, -1), (NOW + 30, 1)],
)
def test_a_code_of_now_or_one_step_either_side_is_taken(issued_at: float, step_offset: int) -> None:
    code = pyotp.TOTP(SECRET).at(issued_at)
    assert totp.matching_step(SECRET, code, NOW) == pyotp.TOTP(SECRET).timecode(NOW) + step_offset


@pytest.mark.parametrize("code", ["", "12345", "abcdef", pyotp.TOTP(SECRET).at(NOW - 60)])
def test_any_other_code_is_not(code: str) -> None:
    assert totp.matching_step(SECRET, code, NOW) is None


def test_the_otpauth_uri_names_the_issuer_and_the_login() -> None:
    uri = totp.uri(SECRET, "alice", "imagebot")
    assert uri.startswith("otpauth://totp/imagebot:alice?")
    assert f"secret={SECRET}" in uri


def test_approval_limits_are_read_per_unit_and_refused_when_unreadable() -> None:
    settings = BackendApiSettings(approval_above="credits=1000, RUB=1000000,XTR=0")
    assert settings.approval_limits == {"credits": 1000, "RUB": 1_000_000, "XTR": 0}
    assert BackendApiSettings(approval_above="").approval_limits == {}
    for wrong in ("credits", "credits=ten", "credits=-1"):
        with pytest.raises(ValueError, match="approval limit"):
            BackendApiSettings(approval_above=wrong)


def test_a_write_above_its_units_limit_waits_either_sign() -> None:
    runtime = cast("ServiceRuntime", type("Runtime", (), {"sessions": None})())
    commands = Commands(runtime, wait_s=0, approval_above={"credits": 1000, "RUB": 500_00})
    assert not commands.needs_approval(None)
    assert not commands.needs_approval(Amount(1000, "credits"))
    assert commands.needs_approval(Amount(1001, "credits"))
    assert commands.needs_approval(Amount(-1001, "credits"))
    assert commands.needs_approval(Amount(500_01, "RUB"))
    assert not commands.needs_approval(Amount(10**9, "XTR"))  # no limit named: never waits
