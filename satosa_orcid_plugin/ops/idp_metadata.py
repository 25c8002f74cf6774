"""What the SAML backend's metadata says about the IdPs behind the proxy, for the plugin: the
``shibmd:Scope`` values of the IdP that asserted a login, and the one IdP of a single-IdP
deployment.

pysaml2's ``MetadataStore.shibmd_scopes(entity_id, "idpsso_descriptor")`` reads the scopes (the
Shibboleth metadata extension, urn:mace:shibboleth:metadata:1.0, on the EntityDescriptor or on
the IDPSSODescriptor). SATOSA gives a micro-service no handle on a backend, so
:class:`~.saml2_backend.SAMLBackend` hands its metadata over here:

* while it processes an IdP's response (``authn_response``, which runs the response
  micro-services before it returns), the metadata is bound to the current context:
  :func:`asserting_scopes` reads the scopes from the backend that received *this* login;
* at construction it registers the metadata under the proxy's base URL (SATOSA builds the
  backends before the micro-services), for :func:`single_idp`.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ..policy import Scope

log = logging.getLogger(__name__)

_ASSERTING: contextvars.ContextVar[Any] = contextvars.ContextVar("satosa_orcid_asserting_metadata", default=None)
_LOCK = threading.Lock()
# base URL -> backend name -> metadata store (the latest built: a test process builds many apps)
_REGISTERED: dict[str, dict[str, "weakref.ref[Any]"]] = {}


def register(base_url: str, backend: str, metadata: Any) -> None:
    """Remember the metadata of the SAML backend ``backend`` of the proxy at ``base_url``."""
    with _LOCK:
        _REGISTERED.setdefault(base_url.rstrip("/"), {})[backend] = weakref.ref(metadata)


@contextlib.contextmanager
def asserting(metadata: Any) -> Iterator[None]:
    """Bind the metadata of the backend that is processing an IdP's response."""
    token = _ASSERTING.set(metadata)
    try:
        yield
    finally:
        _ASSERTING.reset(token)


def asserting_scopes(entity_id: str | None) -> tuple[Scope, ...] | None:
    """The ``shibmd:Scope`` values the metadata of the backend processing this login lists for
    the IdP ``entity_id`` (possibly none); None when no such metadata is known (no SAML
    backend of ours, or an IdP it has no metadata for)."""
    metadata = _ASSERTING.get()
    if metadata is None or not entity_id:
        return None
    try:
        if entity_id not in metadata.identity_providers():
            return None
        found = metadata.shibmd_scopes(entity_id, "idpsso_descriptor")
    except Exception:  # noqa: BLE001 - metadata we cannot read is metadata we do not know
        log.warning("the SAML backend's metadata could not be read for the scope check", exc_info=True)
        return None
    scopes = []
    for item in found:
        text = item.get("text")
        pattern = getattr(text, "pattern", text)  # pysaml2 compiles regexp="true" values
        if isinstance(pattern, str) and pattern:
            scopes.append(Scope(pattern, bool(item.get("regexp"))))
    return tuple(scopes)


def known(base_url: str) -> bool:
    """Whether a SAML backend of ours registered its metadata for the proxy at ``base_url``."""
    with _LOCK:
        return any(ref() is not None for ref in _REGISTERED.get(base_url.rstrip("/"), {}).values())


def single_idp(base_url: str) -> str | None:
    """The entity ID of the one IdP the SAML backends of the proxy at ``base_url`` have
    metadata for; None when there are none, several, or no SAML backend of ours."""
    with _LOCK:
        stores = [ref() for ref in _REGISTERED.get(base_url.rstrip("/"), {}).values()]
    idps: set[str] = set()
    for metadata in stores:
        if metadata is None:
            continue
        try:
            idps.update(metadata.identity_providers())
        except Exception:  # noqa: BLE001
            return None
    return next(iter(idps)) if len(idps) == 1 else None


__all__ = ["register", "asserting", "asserting_scopes", "known", "single_idp"]
