"""Per-SP (pairwise) persistent NameIDs: a SATOSA response micro-service.

SATOSA passes the institutional IdP's NameID through to every SP (``satosa/frontends/saml2.py``,
``_handle_authn_response``: ``NameID(text=internal_response.subject_id, ...)``), so all SPs
behind the proxy receive the same persistent identifier and can correlate a user. SAML 2.0
(Core, section 8.3.7) means persistent identifiers to be specific to one SP, and SATOSA's own
``satosa.micro_services.hasher.Hasher`` does not give that: it hashes ``subject_id`` with one
salt per *configured* requester, so every SP not listed by name gets the same value.

This service replaces ``subject_id`` with

    base64( HMAC-SHA256( key = salt, message = <SP entity ID> "!" <source> "!" <value> ) )

(the shape of Shibboleth's computed persistent IDs, ``SP!source!salt``, with an HMAC instead of a
bare digest) and marks it ``persistent``. ``<source>`` names where the user's identifier came
from: the first non-empty attribute of ``source_attributes`` (default ``edupersonuniqueid``;
never eduPersonPrincipalName, which may be reassigned), else the institutional IdP's own
persistent NameID (prefixed with that IdP's entity ID, because a NameID is only unique per
IdP). Without either the NameID is left as the IdP sent it (a transient one stays transient).

The value depends only on the salt, the SP and the user: it is the same on every worker and
instance and after restarts (give them all the same salt; changing it changes every SP's
identifiers), and differs between SPs. Configuration::

    module: satosa_orcid_plugin.ops.pairwise.PairwiseNameID
    name: pairwise_nameid
    config:
      salt: !ENV SATOSA_PAIRWISE_SALT        # required, at least 16 characters, keep it secret
      source_attributes: [edupersonuniqueid] # internal attribute names, first one present wins
      frontends: [Saml2IDP]                  # only logins through these frontends (default: all)
      passthrough_requesters: []             # SPs that keep the institution's NameID (default: none)
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Iterable

from satosa.micro_services.base import ResponseMicroService

from ..errors import ConfigError

__all__ = ["PairwiseNameID", "pairwise_id", "NAMEID_FORMAT_PERSISTENT", "MIN_SALT_LENGTH"]

NAMEID_FORMAT_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
MIN_SALT_LENGTH = 16
DEFAULT_SOURCE_ATTRIBUTES = ("edupersonuniqueid",)


def pairwise_id(salt: str, sp_entity_id: str, source: str, value: str) -> str:
    """The pairwise persistent identifier of ``value`` (from ``source``) for ``sp_entity_id``.

    >>> a = pairwise_id("a-long-enough-salt", "https://sp1.example/sp", "edupersonuniqueid", "u1@uni.example")
    >>> a == pairwise_id("a-long-enough-salt", "https://sp1.example/sp", "edupersonuniqueid", "u1@uni.example")
    True
    >>> a != pairwise_id("a-long-enough-salt", "https://sp2.example/sp", "edupersonuniqueid", "u1@uni.example")
    True
    >>> len(a)
    44
    """
    message = "!".join((sp_entity_id, source, value)).encode("utf-8")
    return base64.b64encode(hmac.new(salt.encode("utf-8"), message, hashlib.sha256).digest()).decode("ascii")


class PairwiseNameID(ResponseMicroService):
    """Replaces the NameID with a per-SP persistent identifier (see the module docstring)."""

    def __init__(self, config: dict[str, Any] | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = config or {}
        salt = config.get("salt")
        if not isinstance(salt, str) or len(salt.strip()) < MIN_SALT_LENGTH:
            raise ConfigError(f"{self.name}.salt", f"is required: a secret of at least {MIN_SALT_LENGTH} characters")
        self._salt = salt.strip()
        self.source_attributes = tuple(_names(config.get("source_attributes", DEFAULT_SOURCE_ATTRIBUTES),
                                              f"{self.name}.source_attributes"))
        frontends = config.get("frontends")
        self.frontends = None if frontends is None else frozenset(_names(frontends, f"{self.name}.frontends"))
        self.passthrough = frozenset(_names(config.get("passthrough_requesters") or [],
                                            f"{self.name}.passthrough_requesters"))

    def __repr__(self) -> str:  # never the salt
        return f"<PairwiseNameID {self.name} sources={list(self.source_attributes)}>"

    def source_of(self, data: Any) -> tuple[str, str] | None:
        """``(source, value)`` of the user's identifier in ``data``, or ``None``."""
        for name in self.source_attributes:
            values = [v for v in (data.attributes or {}).get(name) or [] if isinstance(v, str) and v.strip()]
            if values:
                return name, values[0].strip()
        if data.subject_id and data.subject_type == NAMEID_FORMAT_PERSISTENT:
            issuer = getattr(data.auth_info, "issuer", None) or ""
            return "nameid", f"{issuer}!{data.subject_id}"
        return None

    def process(self, context: Any, data: Any) -> Any:
        router = context.state.get("ROUTER") if context.state is not None else None
        requester = data.requester
        if requester and requester not in self.passthrough and (self.frontends is None or router in self.frontends):
            source = self.source_of(data)
            if source is not None:
                data.subject_id = pairwise_id(self._salt, requester, *source)
                data.subject_type = NAMEID_FORMAT_PERSISTENT
        return super().process(context, data)


def _names(value: Any, key: str) -> Iterable[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(key, "must be a list of names")
    return value
