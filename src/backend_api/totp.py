"""Admins' second factor: time-based one-time codes (RFC 6238: 6 digits, 30 s steps, SHA-1,
what every authenticator app reads from an otpauth:// URI), by pyotp."""

from __future__ import annotations

import hmac

import pyotp

WINDOW = 1
"""Steps either side of now a code may belong to (a clock 30 s off, a code typed at a step's
end)."""


def new_secret() -> str:
    return pyotp.random_base32()


def uri(secret: str, login: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app enrols from (as a QR code or pasted)."""
    return pyotp.TOTP(secret).provisioning_uri(name=login, issuer_name=issuer)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (within `WINDOW` of `now`) whose code `code` is; None if none. The caller
    refuses a step at or before the last one accepted: a code is good once."""
    totp = pyotp.TOTP(secret)
    code = code.strip()
    if not code.isascii():  # compare_digest takes ASCII text only; no code is anything else
        return None
    current = totp.timecode(now)
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found
