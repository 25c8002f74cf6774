"""SATOSA's SAML2 backend with its InResponseTo check kept in the state cookie, not in memory.

``satosa.backends.saml2.SAMLBackend`` (SATOSA 8.6, ``src/satosa/backends/saml2.py``) with
``allow_unsolicited: false`` remembers every AuthnRequest id it sends in
``self.outstanding_queries``, a dict in the memory of the one worker process that sent it
(``authn_request``: ``self.outstanding_queries[req_id] = req_id``), and accepts a response only
when its ``InResponseTo`` is in that dict (``authn_response``: pysaml2's
``parse_authn_request_response(..., outstanding=self.outstanding_queries)``, then
``if req_id not in self.outstanding_queries: ... "No corresponding request"`` and
``del self.outstanding_queries[req_id]``). With several gunicorn workers or instances the
IdP's response mostly reaches a process that never saw the request, and the login fails.

This subclass changes where that dict lives, nothing else: ``outstanding_queries`` becomes a
view of the *current request's* SATOSA state (``context.state[<backend name>]
["in_response_to"]``), bound for the duration of ``authn_request`` and ``authn_response``.
SATOSA's and pysaml2's own code paths run unchanged with ``allow_unsolicited: false``:

* pysaml2 (``saml2/response.py``, ``AuthnResponse.loads`` and ``verify_subject_confirmation``)
  still refuses a response whose ``InResponseTo`` (and SubjectConfirmationData
  ``InResponseTo``) is not the request id of *this* browser's login;
* SATOSA still checks it and deletes it (single use), and still checks ``RelayState`` against
  ``context.state[<backend name>]["relay_state"]``;
* unsolicited (IdP-initiated) responses are still refused.

The request id travels in SATOSA's state cookie, next to the ``relay_state`` SATOSA already
keeps there, so it has exactly that cookie's protection (encrypted with
``STATE_ENCRYPTION_KEY``, which every instance shares) and any worker of any instance can check
it. Outside ``authn_request``/``authn_response`` the view is empty, so anything that reads it
unbound sees no outstanding request: the check fails closed.

It also hands its pysaml2 metadata to :mod:`.idp_metadata` (registered at construction, bound
while ``authn_response`` runs the response micro-services), where the plugin reads the
asserting IdP's ``shibmd:Scope`` values and a single-IdP deployment's IdP.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, MutableMapping
from typing import Any

from satosa.backends.saml2 import SAMLBackend as _SATOSASAMLBackend

from . import idp_metadata

__all__ = ["SAMLBackend", "StateBoundRequestIds", "STATE_FIELD"]

STATE_FIELD = "in_response_to"  # in context.state[<backend name>], beside SATOSA's "relay_state"


class StateBoundRequestIds(MutableMapping):
    """``{request id: request id}`` of the login in the SATOSA state bound by :meth:`bound`.

    It holds one id at most: SATOSA's state (and its ``relay_state``) belongs to the latest
    login started in that browser, so an older request of the same browser fails anyway.
    """

    def __init__(self) -> None:
        # per thread (gunicorn's gthread workers) and per request: a ContextVar, never an attribute
        self._slot: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
            "satosa_orcid_saml2_request_ids", default=None)

    @contextlib.contextmanager
    def bound(self, slot: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Read and write the request id in ``slot`` (a dict) while the block runs."""
        token = self._slot.set(slot)
        try:
            yield slot
        finally:
            self._slot.reset(token)

    def _id(self) -> str | None:
        slot = self._slot.get()
        value = slot.get(STATE_FIELD) if slot is not None else None
        return value if isinstance(value, str) and value else None

    def __getitem__(self, key: str) -> str:
        if key is None or key != self._id():
            raise KeyError(key)
        return key

    def __setitem__(self, key: str, value: Any) -> None:
        slot = self._slot.get()
        if slot is None:
            raise RuntimeError("no SATOSA state bound: a request id can only be kept during a request")
        slot[STATE_FIELD] = key

    def __delitem__(self, key: str) -> None:
        if key is None or key != self._id():
            raise KeyError(key)
        del self._slot.get()[STATE_FIELD]

    def __iter__(self) -> Iterator[str]:
        value = self._id()
        return iter(() if value is None else (value,))

    def __len__(self) -> int:
        return 0 if self._id() is None else 1

    def __repr__(self) -> str:
        return f"<request ids in the SATOSA state: {list(self)}>"


class SAMLBackend(_SATOSASAMLBackend):
    """``satosa.backends.saml2.SAMLBackend`` whose outstanding AuthnRequest id lives in SATOSA's
    state cookie (see the module docstring). Configure it as the backend ``module`` with
    ``allow_unsolicited: false``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outstanding_queries = StateBoundRequestIds()
        # The plugin's scope check and single-IdP upgrade read this backend's metadata
        # (see idp_metadata); nothing else changes.
        idp_metadata.register(self.base_url, self.name, self.sp.metadata)

    def authn_request(self, context: Any, entity_id: str) -> Any:
        # SATOSA records the id before it replaces context.state[self.name] with
        # {"relay_state": ...}; collect it in a fresh slot and add it afterwards.
        with self.outstanding_queries.bound({}) as slot:
            response = super().authn_request(context, entity_id)
        if STATE_FIELD in slot:
            context.state[self.name][STATE_FIELD] = slot[STATE_FIELD]
        return response

    def authn_response(self, context: Any, binding: str) -> Any:
        backend_state = context.state[self.name] if self.name in context.state else None
        if not isinstance(backend_state, dict):
            # SATOSA answers a missing state itself (SATOSAMissingStateError)
            return super().authn_response(context, binding)
        with self.outstanding_queries.bound(backend_state), idp_metadata.asserting(self.sp.metadata):
            return super().authn_response(context, binding)
