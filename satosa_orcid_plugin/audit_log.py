"""Audit events as one structured JSON log line each, on logger ``satosa_orcid_plugin.audit``.

Every row the store writes to its audit table (link, relink, switch, moved, unlink, revoke,
decline, conflict, ...; affiliation writes when the worker audits them) is also logged, once
the transaction that wrote it has committed (a rolled back event is never logged)::

    {"type": "satosa_orcid.audit", "event": "link", "at": "2026-11-24T08:00:00+00:00",
     "user_key": "alice@example.org", "orcid": "0000-0002-1825-0097", "session_id": "urn:uuid:...",
     "instance": "host:pid", "detail": {"environment": "production", "scopes": "openid"}}

The message *is* the JSON document; route the logger to its own handler with
``format: "%(message)s"`` to ship it to a SIEM as is. Detail keys that could carry a secret
(token, code, secret, id_token, password, ...) are replaced by ``"<redacted>"`` at any depth,
and so are values that look like a JWT.
"""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Any

AUDIT_LOGGER_NAME = "satosa_orcid_plugin.audit"
audit_log = logging.getLogger(AUDIT_LOGGER_NAME)

SECRET_KEYS = frozenset({
    "access_token", "refresh_token", "id_token", "token", "tokens", "code", "client_secret", "secret",
    "password", "authorization", "cookie", "nonce",
})
_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_PENDING = "satosa_orcid_audit_lines"
_DEPTH = 6


def _secret_key(key: str) -> bool:
    key = key.lower()
    return key in SECRET_KEYS or key.endswith(("_token", "_secret", "password")) or key in ("auth_code", "authorization_code")


def scrub(value: Any, depth: int = 0) -> Any:
    if depth > _DEPTH:
        return "<truncated>"
    if isinstance(value, dict):
        return {str(k): ("<redacted>" if _secret_key(str(k)) else scrub(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, str) and _JWT.match(value):
        return "<redacted>"
    return value


def audit_line(event: str, *, at: datetime | None, user_key: str | None, orcid: Any, session_id: str | None,
               instance: str | None, detail: dict[str, Any] | None) -> str:
    payload = {
        "type": "satosa_orcid.audit",
        "event": event,
        "at": at.isoformat() if at is not None else None,
        "user_key": user_key,
        "orcid": str(orcid) if orcid is not None else None,
        "session_id": session_id,
        "instance": instance,
        "detail": scrub(detail or {}),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def emit_after_commit(session: Any, event: str, **fields: Any) -> None:
    """Log the event's line when ``session``'s transaction commits; forget it on rollback.
    Never raises: the audit row in the database is the record, the log line a copy."""
    try:
        line = audit_line(event, **fields)
        pending = session.info.get(_PENDING)
        if pending is None:
            from sqlalchemy import event as sa_event

            pending = session.info[_PENDING] = []
            sa_event.listen(session, "after_commit", _flush)
            sa_event.listen(session, "after_rollback", _discard)
        pending.append(line)
    except Exception:  # pragma: no cover - never let logging break a link
        audit_log.debug("audit line not prepared", exc_info=True)


def _flush(session: Any) -> None:
    for line in session.info.pop(_PENDING, None) or []:
        audit_log.info(line)


def _discard(session: Any) -> None:
    session.info.pop(_PENDING, None)


__all__ = ["AUDIT_LOGGER_NAME", "audit_line", "emit_after_commit", "scrub", "SECRET_KEYS"]
