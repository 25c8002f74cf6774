"""SATOSA's SAML2 frontend, with the metadata a federation registers.

``satosa.frontends.saml2.SAMLFrontend`` (SATOSA 8.4-8.6) with two changes, nothing else:

* **Optional metadata values may be empty.** SATOSA's ``!ENV`` tag fails when a variable is
  unset and always yields a string (``satosa/yaml.py``), and pysaml2 writes whatever it is given
  (``saml2/metadata.py``: an empty string becomes an empty element, a string where a list is
  expected is iterated character by character). So ``proxy_conf/`` sets every metadata value
  with ``!ENV`` and this class, before SATOSA sees the configuration, drops the values whose
  variable is empty (an optional ``errorURL``, entity category or contact), splits the list
  values that come as one string (``scope``, ``entity_category_support``,
  ``assurance_certification``: separated by spaces or commas) and writes contact e-mail
  addresses as the ``mailto:`` URIs SAML metadata wants. See :func:`federation_idp_config`.
* **The metadata at the entity ID URL is signed**, with ``validUntil``, and served as
  ``application/samlmetadata+xml`` (the media type of RFC 7580 / the SAML metadata spec's
  registration). SATOSA serves it unsigned as ``text/xml`` (``_metadata_endpoint``). The
  signed document is built exactly as ``satosa-saml-metadata`` builds it
  (``satosa.metadata_creation.saml_metadata.create_signed_entity_descriptor``), signed with the
  frontend's own key (``idp_config.key_file``/``cert_file``), so the served and the generated
  file say the same.
* **Metadata signatures use the frontend's algorithms.** ``satosa-saml-metadata`` passes no
  algorithm to pysaml2 (``create_signed_entity_descriptor``), so pysaml2 signs with its process
  default, RSA-SHA1 (``saml2.xmldsig.DefaultSignature``), which SAML2int and federations refuse.
  When that default is still SHA-1, this class raises it to the frontend's
  ``service.idp.signing_algorithm``/``digest_algorithm``; pysaml2 calls that name their own
  algorithms (responses, assertions, the backend's requests) are unaffected.

Configure it as the frontend ``module``; every other key is SATOSA's. Optional frontend keys:
``metadata_valid_hours`` (default 96), how long the served metadata is valid, and
``metadata_cache_duration`` (default ``PT6H``), the ``cacheDuration`` it carries (how often
consumers should fetch it again).
"""
from __future__ import annotations

import copy
import logging
import re
from typing import Any
from xml.etree import ElementTree

from satosa.frontends.saml2 import SAMLFrontend as _SATOSASAMLFrontend
from satosa.response import Response

__all__ = ["SAMLFrontend", "federation_idp_config", "METADATA_CONTENT_TYPE", "REFEDS_NS",
           "REFEDS_SECURITY_CONTACT", "DEFAULT_METADATA_VALID_HOURS"]

logger = logging.getLogger(__name__)

METADATA_CONTENT_TYPE = "application/samlmetadata+xml"
#: REFEDS metadata extensions (https://refeds.org/metadata/contactType/security)
REFEDS_NS = "http://refeds.org/metadata"
REFEDS_SECURITY_CONTACT = "http://refeds.org/metadata/contactType/security"
DEFAULT_METADATA_VALID_HOURS = 96
KEY_VALID_HOURS = "metadata_valid_hours"
KEY_CACHE_DURATION = "metadata_cache_duration"
DEFAULT_CACHE_DURATION = "PT6H"

# pysaml2 serialises with ElementTree: name the REFEDS namespace as REFEDS' documents do.
ElementTree.register_namespace("remd", REFEDS_NS)

_LIST_KEYS_TOP = ("entity_category", "entity_category_support", "assurance_certification")
_SPLIT = re.compile(r"[\s,]+")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (list, tuple, dict)) and not value)


def _as_list(value: Any) -> list[str]:
    """``"a b,c"`` or ``["a b", "c"]`` -> ``["a", "b", "c"]``; empty parts dropped."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        out.extend(part for part in _SPLIT.split(str(item)) if part)
    return out


def _mailto(value: Any) -> list[str]:
    return [a if a.startswith("mailto:") else f"mailto:{a}" for a in _as_list(value)]


def _prune(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if not _empty(v)}


def federation_idp_config(idp_config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a SATOSA ``idp_config`` with empty optional values left out (see module doc).

    >>> federation_idp_config({"entityid": "e", "service": {"idp": {"scope": "uni.example, lab.uni.example",
    ...     "error_url": ""}}, "entity_category_support": "", "contact_person": [
    ...     {"contact_type": "support", "email_address": "help@uni.example"},
    ...     {"contact_type": "other", "email_address": ""}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'entityid': 'e', 'service': {'idp': {'scope': ['uni.example', 'lab.uni.example']}},
     'contact_person': [{'contact_type': 'support', 'email_address': ['mailto:help@uni.example']}]}
    """
    conf = copy.deepcopy(idp_config)
    for key in _LIST_KEYS_TOP:
        if key in conf:
            values = _as_list(conf[key])
            if values:
                conf[key] = values
            else:
                del conf[key]
    if isinstance(conf.get("organization"), dict):
        conf["organization"] = _prune(conf["organization"])
        if not conf["organization"]:
            del conf["organization"]
    if isinstance(conf.get("contact_person"), list):
        contacts = []
        for person in conf["contact_person"]:
            if not isinstance(person, dict) or _empty(person.get("email_address")):
                continue  # a contact without an address is no contact (an unset optional one)
            person = _prune(person)
            person["email_address"] = _mailto(person["email_address"])
            contacts.append(person)
        if contacts:
            conf["contact_person"] = contacts
        else:
            del conf["contact_person"]
    idp = (conf.get("service") or {}).get("idp")
    if isinstance(idp, dict):
        if "scope" in idp:
            scopes = _as_list(idp["scope"])
            if scopes:
                idp["scope"] = scopes
            else:
                del idp["scope"]
        if "error_url" in idp and _empty(idp["error_url"]):
            del idp["error_url"]
        if isinstance(idp.get("ui_info"), dict):
            ui = _prune(idp["ui_info"])
            # DisplayName, Description, InformationURL and PrivacyStatementURL are localized
            # (md:localizedNameType/localizedURIType): xml:lang is required, and Shibboleth SP
            # rejects the whole metadata without it. A plain string is taken as English.
            for key in ("display_name", "description", "information_url", "privacy_statement_url"):
                if isinstance(ui.get(key), str):
                    ui[key] = [{"text": ui[key], "lang": "en"}]
            logo = ui.get("logo")
            if isinstance(logo, dict):
                if _empty(logo.get("text")):
                    del ui["logo"]
                else:
                    ui["logo"] = {k: str(v) for k, v in _prune(logo).items()}
            if ui:
                idp["ui_info"] = ui
            else:
                del idp["ui_info"]
    return conf


def _raise_pysaml2_default_algorithms(sign_alg: str | None, digest_alg: str | None) -> None:
    """Replace pysaml2's SHA-1 process default (see the module doc) by the given algorithms."""
    from saml2 import xmldsig

    if not sign_alg or not digest_alg:
        return
    current = xmldsig.DefaultSignature()
    if current.get_sign_alg() == xmldsig.SIG_RSA_SHA1 or current.get_digest_alg() == xmldsig.DIGEST_SHA1:
        xmldsig.DefaultSignature.instance = xmldsig.DefaultSignature._DefaultSignature(sign_alg, digest_alg)


class SAMLFrontend(_SATOSASAMLFrontend):
    """``satosa.frontends.saml2.SAMLFrontend`` with federation metadata (see the module doc)."""

    def __init__(self, auth_req_callback_func: Any, internal_attributes: Any, config: dict[str, Any],
                 base_url: str, name: str) -> None:
        config = dict(config)
        self.metadata_valid_hours = int(config.pop(KEY_VALID_HOURS, DEFAULT_METADATA_VALID_HOURS))
        self.metadata_cache_duration = str(config.pop(KEY_CACHE_DURATION, DEFAULT_CACHE_DURATION) or "") or None
        if self.KEY_IDP_CONFIG in config and isinstance(config[self.KEY_IDP_CONFIG], dict):
            config[self.KEY_IDP_CONFIG] = federation_idp_config(config[self.KEY_IDP_CONFIG])
        super().__init__(auth_req_callback_func, internal_attributes, config, base_url, name)
        idp = ((config.get(self.KEY_IDP_CONFIG) or {}).get("service") or {}).get("idp") or {}
        _raise_pysaml2_default_algorithms(idp.get("signing_algorithm"), idp.get("digest_algorithm"))

    def signed_metadata(self) -> str:
        """This IdP's EntityDescriptor, signed with its own key, ``validUntil`` now +
        ``metadata_valid_hours``, ``cacheDuration`` ``metadata_cache_duration``: what
        ``satosa-saml-metadata`` writes for it, plus the cacheDuration (which the command has no
        option for)."""
        from saml2.config import Config
        from saml2.metadata import entity_descriptor
        from saml2.sigver import security_context
        from satosa.metadata_creation.saml_metadata import create_signed_entity_descriptor

        conf = Config()
        conf.key_file = self.idp.config.key_file
        conf.cert_file = self.idp.config.cert_file
        secc = security_context(conf)
        descriptor = entity_descriptor(self.idp.config)
        if self.metadata_cache_duration:
            descriptor.cache_duration = self.metadata_cache_duration
        return create_signed_entity_descriptor(descriptor, secc, self.metadata_valid_hours)

    def _metadata_endpoint(self, context: Any) -> Response:
        try:
            body = self.signed_metadata()
        except Exception:  # xmlsec1 missing or the key unreadable: say so in the log, serve unsigned
            logger.exception("cannot sign the SAML metadata of %s; serving it unsigned", self.idp.config.entityid)
            response = super()._metadata_endpoint(context)
            body = response.message
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        return Response(body, content=METADATA_CONTENT_TYPE)
