"""The plugin's own small cookies: sealed (Fernet: encrypted and authenticated), HttpOnly,
Secure, SameSite=Lax, and scoped to the plugin's path so no other endpoint receives them.

Lax is enough: both cookies are read on top-level GET navigations (ORCID's redirect to the
connect endpoint, the next login) and on our own same-site form posts.
"""
from __future__ import annotations

import base64
import json
from http.cookies import CookieError, SimpleCookie
from typing import Any, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAX_COOKIE_HEADER = 8192
# SATOSA's _save_state drops every response header named exactly "Set-Cookie" and puts its
# own state cookie in its place. Header names are case-insensitive (RFC 9110 section 5.1),
# so ours travel as "set-cookie" and reach the browser next to SATOSA's.
SET_COOKIE = "set-cookie"


def _derive(key: str, purpose: bytes) -> Fernet:
    raw = base64.urlsafe_b64decode(key.encode())
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"satosa-orcid cookie " + purpose).derive(raw)
    return Fernet(base64.urlsafe_b64encode(derived))


class CookieSealer:
    """Seal small JSON values for cookies with keys derived (HKDF) from the token keys, so a
    cookie can never be decrypted as a token and vice versa; rotating token keys rotates these."""

    def __init__(self, keys: Sequence[str], purpose: str) -> None:
        self._fernet = MultiFernet([_derive(k, purpose.encode()) for k in keys])

    def __repr__(self) -> str:
        return "CookieSealer(<redacted>)"

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()

    def open(self, sealed: str | None, ttl: int) -> dict[str, Any] | None:
        if not sealed or len(sealed) > 4096:
            return None
        try:
            data = json.loads(self._fernet.decrypt(sealed.encode(), ttl=ttl))
        except (InvalidToken, ValueError, TypeError):
            return None
        return data if isinstance(data, dict) else None


def read_cookie(cookie_header: str | None, name: str) -> str | None:
    if not cookie_header or len(cookie_header) > MAX_COOKIE_HEADER:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        # One malformed cookie from another application must not hide ours.
        for part in cookie_header.split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v.strip('"') or None
        return None
    morsel = jar.get(name)
    return morsel.value if morsel and morsel.value else None


def set_cookie(name: str, value: str, *, path: str, max_age: int | None, secure: bool = True,
               samesite: str = "Lax") -> tuple[str, str]:
    """``max_age=None``: a session cookie, gone when the browser closes."""
    age = [] if max_age is None else [f"Max-Age={max_age}"]
    parts = [f"{name}={value}", f"Path={path}", *age, "HttpOnly", f"SameSite={samesite}"]
    if secure or samesite == "None":
        parts.append("Secure")
    return (SET_COOKIE, "; ".join(parts))


def clear_cookie(name: str, *, path: str, secure: bool = True, samesite: str = "Lax") -> tuple[str, str]:
    return set_cookie(name, "", path=path, max_age=0, secure=secure, samesite=samesite)
