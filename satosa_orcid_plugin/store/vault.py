"""Tokens at rest: a TokenSet to Fernet-encrypted columns and back (the one implementation,
for links and pending links alike), and key rotation.

Only ciphertext reaches the database; ``key_version`` records the fingerprint of the key
that wrote a link's tokens, so rotation rewrites only what an older key encrypted.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..tokens import TokenCipher, TokenSet, parse_scope
from .database import Database
from .schema import LinkRow, TokenRow

ROTATE_BATCH = 500
_INSERT_TOKENS = sa.insert(TokenRow.__table__)


@dataclass(frozen=True, repr=False)
class Sealed:
    """A TokenSet as stored: ciphertext of the tokens, expiry and scope in the clear."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scope: str


class Vault:
    def __init__(self, db: Database, cipher: TokenCipher) -> None:
        self.db = db
        self.cipher = cipher

    def __repr__(self) -> str:
        return f"Vault({self.cipher!r})"

    def seal(self, tokens: TokenSet) -> Sealed:
        return Sealed(
            access_token=self.cipher.encrypt(tokens.access_token),
            refresh_token=self.cipher.encrypt(tokens.refresh_token) if tokens.refresh_token else None,
            expires_at=tokens.expires_at,
            scope=" ".join(tokens.scope),
        )

    def open(self, access_token: str, refresh_token: str | None = None, expires_at: datetime | None = None,
             scope: str | None = None) -> TokenSet:
        """The TokenSet from stored columns; StoreError when no configured key decrypts them."""
        return TokenSet(
            access_token=self.cipher.decrypt(access_token),
            refresh_token=self.cipher.decrypt(refresh_token) if refresh_token else None,
            expires_at=expires_at,
            scope=parse_scope(scope),
        )

    # --- a link's tokens --------------------------------------------------------------
    def put(self, session: Session, link_id: int, tokens: TokenSet, now: datetime, *, new_link: bool = False) -> None:
        """Store (or replace) the tokens of a link, under the newest key (``new_link``: the link
        row was just inserted, so it has no tokens yet and none are looked up)."""
        row = None if new_link else session.get(TokenRow, link_id)
        if row is None:
            row = TokenRow(link_id=link_id)
            session.add(row)
        sealed = self.seal(tokens)
        row.access_token_enc = sealed.access_token
        row.refresh_token_enc = sealed.refresh_token
        row.expires_at = sealed.expires_at
        row.scope = sealed.scope
        row.key_version = self.cipher.key_id
        row.updated_at = now

    def put_new(self, connection: sa.Connection, link_id: int, tokens: TokenSet, now: datetime) -> None:
        """Store the tokens of a link row just inserted on ``connection`` (a Core INSERT)."""
        sealed = self.seal(tokens)
        connection.execute(_INSERT_TOKENS, {
            "link_id": link_id, "access_token_enc": sealed.access_token, "refresh_token_enc": sealed.refresh_token,
            "expires_at": sealed.expires_at, "scope": sealed.scope, "key_version": self.cipher.key_id,
            "updated_at": now})

    def read(self, row: TokenRow) -> TokenSet:
        return self.open(row.access_token_enc, row.refresh_token_enc, row.expires_at, row.scope)

    def drop(self, session: Session, row: LinkRow) -> None:
        """Delete the tokens of a link (the caller revokes them at ORCID first, if it can)."""
        session.execute(sa.delete(TokenRow).where(TokenRow.link_id == row.id))

    def rotate_keys(self, batch_size: int = ROTATE_BATCH) -> int:
        """Re-encrypt every token row not yet under the newest key, one batch per transaction.
        Returns the number of rows rewritten; afterwards older keys can be removed."""
        newest = self.cipher.key_id
        total, last_id = 0, 0
        while True:
            with self.db.transaction() as session:
                rows = session.scalars(
                    sa.select(TokenRow)
                    .where(TokenRow.link_id > last_id, TokenRow.key_version != newest)
                    .order_by(TokenRow.link_id)
                    .limit(batch_size)
                    .with_for_update()
                ).all()
                if not rows:
                    break
                for row in rows:
                    row.access_token_enc = self.cipher.rotate(row.access_token_enc)
                    if row.refresh_token_enc:
                        row.refresh_token_enc = self.cipher.rotate(row.refresh_token_enc)
                    row.key_version = newest
                last_id = rows[-1].link_id
                total += len(rows)
        self.db.append_audit("keys_rotated", rows=total, key_version=newest)
        return total
