"""OAuth tokens as value objects, and their encryption at rest.

A :class:`TokenSet` is what ORCID's token endpoint returned, with ``expires_in`` turned
into an absolute UTC ``expires_at``. Its repr never shows a token value, so logging one by
accident leaks nothing.

:class:`TokenCipher` wraps :class:`cryptography.fernet.MultiFernet`: the first key
encrypts, every key decrypts, so keys rotate without downtime (add a new key in front,
run ``store.vault.rotate_keys()``, then drop the old key).

>>> from datetime import datetime, timezone
>>> now = datetime(2024, 1, 1, tzinfo=timezone.utc)
>>> t = TokenSet.from_token_response(
...     {"access_token": "a", "refresh_token": "r", "expires_in": 3600,
...      "scope": "/authenticate /read-limited"}, now)
>>> t
TokenSet(access_token=<redacted>, refresh_token=<redacted>, expires_at=2024-01-01T01:00:00+00:00, scope=('/authenticate', '/read-limited'))
>>> cipher = TokenCipher.from_keys([TokenCipher.generate_key()])
>>> cipher.decrypt(cipher.encrypt("secret"))
'secret'
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ConfigError, OrcidProtocolError, StoreError

_REDACTED = "<redacted>"


def _require_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(timezone.utc)


@dataclass(frozen=True, repr=False)
class TokenSet:
    """The tokens of one ORCID grant. ``expires_at`` is UTC; ``None`` means no expiry given."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    scope: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.access_token:
            raise ValueError("TokenSet needs an access_token")
        if self.expires_at is not None:
            object.__setattr__(self, "expires_at", _require_utc(self.expires_at, "expires_at"))
        object.__setattr__(self, "scope", parse_scope(self.scope))

    @classmethod
    def from_token_response(cls, resp: Mapping[str, object], now: datetime) -> "TokenSet":
        """Build from ORCID's token response (``access_token``, ``refresh_token``,
        ``expires_in`` in seconds, ``scope`` space-separated)."""
        access = resp.get("access_token")
        if not isinstance(access, str) or not access:
            raise OrcidProtocolError("ORCID token response has no access_token")
        refresh = resp.get("refresh_token")
        if refresh is not None and not isinstance(refresh, str):
            raise OrcidProtocolError("ORCID token response has a malformed refresh_token")
        expires_at = None
        expires_in = resp.get("expires_in")
        if expires_in is not None:
            try:
                seconds = int(expires_in)  # type: ignore[call-overload]
            except (TypeError, ValueError):
                raise OrcidProtocolError("ORCID token response has a malformed expires_in") from None
            expires_at = _require_utc(now, "now") + timedelta(seconds=seconds)
        return cls(
            access_token=access,
            refresh_token=refresh or None,
            expires_at=expires_at,
            scope=parse_scope(resp.get("scope")),
        )

    def __repr__(self) -> str:
        refresh = _REDACTED if self.refresh_token else None
        expires = self.expires_at.isoformat() if self.expires_at else None
        return (
            f"TokenSet(access_token={_REDACTED}, refresh_token={refresh}, "
            f"expires_at={expires}, scope={self.scope!r})"
        )

    __str__ = __repr__


def parse_scope(scope: object) -> tuple[str, ...]:
    """ORCID sends scopes space-separated (sometimes ``+``-joined in URLs); accept lists too."""
    if scope is None:
        return ()
    if isinstance(scope, str):
        return tuple(s for s in scope.replace("+", " ").split() if s)
    if isinstance(scope, (list, tuple)):
        return tuple(str(s) for s in scope if s)
    raise OrcidProtocolError("ORCID token response has a malformed scope")


def key_fingerprint(key: str) -> str:
    """A short, non-reversible id of a Fernet key, stored next to each ciphertext."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:16]


class TokenCipher:
    """Encrypts tokens with the newest key and decrypts with any configured key.

    Keys come from the configuration (``store.token_keys``, usually
    ``!ENV SATOSA_ORCID_TOKEN_KEYS`` = ``"new,old"``); the first key is the newest. Generate one with ``TokenCipher.generate_key()``.
    """

    def __init__(self, keys: Sequence[str], *, source: str = "token_keys") -> None:
        cleaned = [k.strip() for k in keys if k and k.strip()]
        if not cleaned:
            raise ConfigError(source, "no token encryption key given")
        fernets = []
        for index, key in enumerate(cleaned):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                # Never echo the key itself.
                raise ConfigError(
                    f"{source}[{index}]", "not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._count = len(cleaned)
        # Fingerprint of the newest key; the store records it as ``key_version``.
        self.key_id = key_fingerprint(cleaned[0])

    @classmethod
    def from_keys(cls, keys: Sequence[str]) -> "TokenCipher":
        if isinstance(keys, str):
            keys = [keys]
        return cls(keys)

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode("ascii")

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise StoreError(self._no_key_message()) from None

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt under the newest key (readable with any configured key)."""
        try:
            return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise StoreError(self._no_key_message()) from None

    def _no_key_message(self) -> str:
        return (
            f"a stored token cannot be decrypted with any of the {self._count} configured key(s); "
            "was the key that encrypted it removed before running key rotation?"
        )

    def __repr__(self) -> str:
        return f"TokenCipher(keys={self._count}, newest={self.key_id})"

    __str__ = __repr__
