"""HS256 JSON Web Tokens for the test stack, implemented with the standard library.

Owns: encoding and verifying the JWTs that Supabase's API keys are, the error
codes PostgREST answers for bad tokens (PGRST301 undecodable or badly signed,
PGRST303 claims rejected, e.g. expired), and minting Supabase-style
``anon`` / ``authenticated`` / ``service_role`` keys for a given secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ApiKeys", "JWTError", "decode", "encode", "make_keys"]

#: Seconds of clock skew tolerated for ``exp`` / ``nbf`` / ``iat``, as PostgREST does.
CLOCK_SKEW_S = 30

#: Supabase's demo keys carry this issuer.
ISSUER = "supabase-demo"

#: 2100-01-01T00:00:00Z: "never expires" for a test run.
FAR_FUTURE_EXP = 4102444800


class JWTError(Exception):
    """A token PostgREST would reject with 401; ``code`` is PGRST301 or PGRST303."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(segment: str) -> bytes:
    if not segment or any(c not in _B64URL_ALPHABET for c in segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _json_segment(data: dict[str, Any]) -> str:
    return _b64url_encode(json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def _sign(signing_input: str, secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256).digest()


def encode(claims: dict[str, Any], secret: str) -> str:
    """Return the compact HS256 JWT (base64url without padding) for ``claims``."""
    signing_input = _json_segment({"alg": "HS256", "typ": "JWT"}) + "." + _json_segment(claims)
    return signing_input + "." + _b64url_encode(_sign(signing_input, secret))


def decode(token: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """Verify ``token`` with ``secret`` and return its claims.

    Raises :class:`JWTError` with PGRST301 for an empty token, a wrong number of
    segments, undecodable segments, a non-HS256 algorithm or a bad signature,
    and PGRST303 for claims PostgREST refuses (expired, not yet valid, issued
    in the future, non-numeric time claims).
    """
    if not token:
        raise JWTError("PGRST301", "Empty JWT is sent in Authorization header")
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("PGRST301", f"Expected 3 parts in JWT; got {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_b64url_decode(header_b64))
        signature = _b64url_decode(signature_b64)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise JWTError("PGRST301", "JWT cryptographic operation failed") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JWTError("PGRST301", "Wrong or unsupported encoding algorithm")
    if not hmac.compare_digest(signature, _sign(f"{header_b64}.{payload_b64}", secret)):
        raise JWTError("PGRST301", "No suitable key or wrong key type")
    try:
        claims = json.loads(_b64url_decode(payload_b64))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise JWTError("PGRST303", "Parsing claims failed") from None
    if not isinstance(claims, dict):
        raise JWTError("PGRST303", "Parsing claims failed")
    _check_time_claims(claims, time.time() if now is None else now)
    return claims


def _check_time_claims(claims: dict[str, Any], now: float) -> None:
    for name, failure in (
        ("exp", "JWT expired"),
        ("nbf", "JWT not yet valid"),
        ("iat", "JWT issued at future"),
    ):
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise JWTError("PGRST303", f"The JWT '{name}' claim must be a number")
        expired = now - CLOCK_SKEW_S >= value if name == "exp" else now + CLOCK_SKEW_S < value
        if expired:
            raise JWTError("PGRST303", failure)


@dataclass(frozen=True)
class ApiKeys:
    """The three JWT API keys of a Supabase project."""

    anon: str
    authenticated: str
    service_role: str

    def as_dict(self) -> dict[str, str]:
        return {
            "anon": self.anon,
            "authenticated": self.authenticated,
            "service_role": self.service_role,
        }


#: ``sub`` of the authenticated key, so ``auth.uid()`` has something to return.
AUTHENTICATED_SUB = "00000000-0000-4000-8000-000000000001"


def make_keys(secret: str, *, exp: int = FAR_FUTURE_EXP) -> ApiKeys:
    """Mint anon, authenticated and service_role keys shaped like Supabase's demo keys."""

    def key(role: str, **extra: Any) -> str:
        return encode({"iss": ISSUER, "role": role, "exp": exp, **extra}, secret)

    return ApiKeys(
        anon=key("anon"),
        authenticated=key("authenticated", sub=AUTHENTICATED_SUB, aud="authenticated"),
        service_role=key("service_role"),
    )
