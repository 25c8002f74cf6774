"""Everything the demo (and the flow tests) need on disk, derived from one directory and four ports.

``DemoLayout(root, ports)`` creates keys, SAML metadata of the demo SP, the demo IdP, the
ORCID emulator's SAML SP (ORCID's institutional sign-in, trusted by the proxy next to the demo
SP and listed as an ORCID requester) and the proxy, the OIDC client database, the secrets,
the SQLite URL of the link store and the ORCID emulator's client registration, and
:meth:`DemoLayout.env` returns the environment variables that ``proxy_conf/`` and the
emulator read. Nothing here touches ``os.environ`` or the
working directory, so tests can build as many layouts as they like, in parallel.

>>> import tempfile, pathlib
>>> layout = DemoLayout(pathlib.Path(tempfile.mkdtemp()), DemoPorts.from_base(18443))
>>> layout.env()["SATOSA_BASE"]
'https://127.0.0.1:18443'
>>> layout.env()["ORCID_EMULATOR_ISSUER"]
'http://127.0.0.1:18444'
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from cryptography.fernet import Fernet

from .pki import DemoPki, generate_demo_pki

#: the scope of the demo IdP's scoped attributes (published as shibmd:Scope in its metadata)
DEMO_SCOPE = "demo.example.org"
#: friendly names of the attributes the demo IdP (demo_idp.py) releases
DEMO_ATTRIBUTE_NAMES: tuple[str, ...] = (
    "eduPersonPrincipalName",
    "eduPersonUniqueId",
    "givenName",
    "sn",
    "displayName",
    "mail",
    "eduPersonAffiliation",
    "eduPersonScopedAffiliation",
    "ou",
    "title",
)

__all__ = [
    "DemoPorts",
    "DemoLayout",
    "find_proxy_conf",
    "load_proxy_config",
    "LAYOUT_ENV",
    "DEMO_ORCID_CLIENT_ID",
    "DEMO_OIDC_CLIENT_ID",
]

HOST = "127.0.0.1"
#: environment variable naming the layout directory, read by the demo IdP/SP app factories
LAYOUT_ENV = "SATOSA_ORCID_DEMO_LAYOUT"
DEMO_ORCID_CLIENT_ID = "APP-DEMO000000000001"
DEMO_OIDC_CLIENT_ID = "demo-rp"
# Module names in proxy_conf/: the SAML frontend/backend names and the micro-service name
# fix the proxy's URLs (SATOSA builds them as <BASE>/<name>/...).
FRONTEND_NAME = "Saml2IDP"
BACKEND_NAME = "Saml2"
ORCID_MS_NAME = "orcid"

SAML2_BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
SAML2_BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
NAMEID_FORMAT_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
ATTRNAME_FORMAT_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


@dataclass(frozen=True)
class DemoPorts:
    """Loopback ports of the four demo processes.

    >>> DemoPorts.from_base(9000)
    DemoPorts(proxy=9000, emulator=9001, idp=9002, sp=9003)
    """

    proxy: int = 8443
    emulator: int = 8090
    idp: int = 8091
    sp: int = 8092

    @classmethod
    def from_base(cls, base: int) -> "DemoPorts":
        """``--port-base N``: proxy N, emulator N+1, IdP N+2, SP N+3."""
        if not 1 <= base <= 65532:
            raise ValueError(f"port base {base} out of range")
        return cls(proxy=base, emulator=base + 1, idp=base + 2, sp=base + 3)

    @classmethod
    def free(cls, host: str = HOST) -> "DemoPorts":
        """Four ports that were free a moment ago (the OS picks them)."""
        sockets = []
        try:
            for _ in range(4):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((host, 0))
                sockets.append(s)
            ports = [s.getsockname()[1] for s in sockets]
        finally:
            for s in sockets:
                s.close()
        return cls(*ports)

    def named(self) -> dict[str, int]:
        return asdict(self)


def find_proxy_conf() -> Path:
    """The ``proxy_conf/`` directory: ``$SATOSA_ORCID_PROXY_CONF``, else the source checkout's."""
    configured = os.environ.get("SATOSA_ORCID_PROXY_CONF")
    candidates = [Path(configured)] if configured else []
    candidates += [Path(__file__).resolve().parents[2] / "proxy_conf", Path.cwd() / "proxy_conf"]
    for candidate in candidates:
        if (candidate / "proxy_conf.yaml").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        "proxy_conf/proxy_conf.yaml not found; set SATOSA_ORCID_PROXY_CONF to the proxy_conf directory"
    )


def load_proxy_config(
    proxy_conf_dir: Path, env: Mapping[str, str], *, micro_services: bool = True
) -> dict[str, Any]:
    """Read ``proxy_conf.yaml`` and the files it names into one dict for ``SATOSAConfig(dict)``.

    ``!ENV``/``!ENVFILE`` resolve from ``env`` (not ``os.environ``) and relative paths from
    ``proxy_conf_dir`` (not the working directory), so this has no global side effects.
    The state encryption key is copied in from ``env["SATOSA_STATE_ENCRYPTION_KEY"]``.
    """
    import yaml

    proxy_conf_dir = Path(proxy_conf_dir)

    class _Loader(yaml.SafeLoader):
        pass

    def _env(loader, node):
        name = loader.construct_scalar(node)
        if name not in env:
            raise yaml.YAMLError(f"environment variable {name} is not set (needed by !ENV)")
        return env[name]

    def _envfile(loader, node):
        name = loader.construct_scalar(node)
        if name not in env:
            raise yaml.YAMLError(f"environment variable {name} is not set (needed by !ENVFILE)")
        return Path(env[name]).read_text()

    _Loader.add_constructor("!ENV", _env)
    _Loader.add_constructor("!ENVFILE", _envfile)

    def _load(ref: Any) -> Any:
        if isinstance(ref, dict):
            return ref
        path = Path(ref)
        if not path.is_absolute():
            path = proxy_conf_dir / path
        return yaml.load(path.read_text(), Loader=_Loader)

    conf = _load("proxy_conf.yaml")
    conf["INTERNAL_ATTRIBUTES"] = _load(conf["INTERNAL_ATTRIBUTES"])
    for key in ("BACKEND_MODULES", "FRONTEND_MODULES"):
        conf[key] = [_load(ref) for ref in conf.get(key) or []]
    conf["MICRO_SERVICES"] = [_load(ref) for ref in conf.get("MICRO_SERVICES") or []] if micro_services else []
    if "SATOSA_STATE_ENCRYPTION_KEY" in env:
        conf["STATE_ENCRYPTION_KEY"] = env["SATOSA_STATE_ENCRYPTION_KEY"]
    return conf


def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class DemoLayout:
    """Keys, metadata, secrets and URLs of one demo deployment under ``root``.

    Constructing it writes everything (reusing keys and secrets already under ``root``;
    ``keys_from`` names a ``keys/`` directory of another layout to copy keys from, which
    saves the RSA key generation when tests build many layouts); :meth:`load` re-opens an existing layout without writing (used by the demo IdP/SP
    processes, which find it through ``$SATOSA_ORCID_DEMO_LAYOUT``).
    """

    host = HOST

    def __init__(
        self,
        root: Path,
        ports: DemoPorts | None = None,
        *,
        proxy_conf_dir: Path | None = None,
        keys_from: Path | None = None,
        _build: bool = True,
    ):
        self.root = Path(root).resolve()
        self.ports = ports or DemoPorts()
        self.proxy_conf_dir = Path(proxy_conf_dir).resolve() if proxy_conf_dir else find_proxy_conf()

        self.keys_dir = self.root / "keys"
        self.metadata_dir = self.root / "metadata"
        # The SPs the proxy's SAML frontend trusts: a directory (SATOSA_SP_METADATA).
        self.trusted_sps_dir = self.metadata_dir / "sps"
        self.sp_metadata = self.trusted_sps_dir / "sp.xml"
        self.emulator_sp_metadata = self.trusted_sps_dir / "orcid-emulator-sp.xml"
        self.idp_metadata = self.metadata_dir / "idp.xml"
        self.proxy_frontend_metadata = self.metadata_dir / "proxy-frontend.xml"
        self.proxy_backend_metadata = self.metadata_dir / "proxy-backend.xml"
        self.oidc_clients_path = self.root / "oidc_clients.json"
        self.database_path = self.root / "orcid-links.sqlite"
        self.secrets_path = self.root / "secrets.json"
        self.layout_path = self.root / "layout.json"
        self.logs_dir = self.root / "logs"

        if _build:
            self.root.mkdir(parents=True, exist_ok=True)
            if keys_from is not None:
                _copy_keys(Path(keys_from), self.keys_dir)
            self.keys: DemoPki = generate_demo_pki(self.keys_dir)
            self.secrets = self._load_or_create_secrets()
            self._write_oidc_clients()
            self._write_layout_file()
            self._write_metadata()
        else:
            self.keys = _pki_paths(self.keys_dir)
            self.secrets = json.loads(self.secrets_path.read_text())

    # --- re-opening ---------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path) -> "DemoLayout":
        """Re-open a layout written earlier, without generating anything."""
        info = json.loads((Path(root) / "layout.json").read_text())
        return cls(
            Path(root),
            DemoPorts(**info["ports"]),
            proxy_conf_dir=Path(info["proxy_conf_dir"]),
            _build=False,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DemoLayout":
        environ = os.environ if environ is None else environ
        try:
            root = environ[LAYOUT_ENV]
        except KeyError:
            raise RuntimeError(f"{LAYOUT_ENV} is not set (the demo layout directory)") from None
        return cls.load(Path(root))

    # --- URLs ---------------------------------------------------------------------------
    @property
    def proxy_base(self) -> str:
        return f"https://{self.host}:{self.ports.proxy}"

    @property
    def emulator_url(self) -> str:
        return f"http://{self.host}:{self.ports.emulator}"

    @property
    def idp_base(self) -> str:
        return f"http://{self.host}:{self.ports.idp}"

    @property
    def sp_base(self) -> str:
        return f"http://{self.host}:{self.ports.sp}"

    @property
    def idp_entity_id(self) -> str:
        return f"{self.idp_base}/idp.xml"

    @property
    def sp_entity_id(self) -> str:
        return f"{self.sp_base}/sp.xml"

    @property
    def emulator_sp_entity_id(self) -> str:
        """The ORCID emulator's SAML SP (its ``https://orcid.org/saml2/sp/1``)."""
        from .emulator_saml_sp import default_entity_id

        return default_entity_id(self.emulator_url)

    @property
    def proxy_idp_entity_id(self) -> str:
        """The proxy's SAML frontend (what the SPs see)."""
        return f"{self.proxy_base}/{FRONTEND_NAME}/proxy.xml"

    @property
    def proxy_sp_entity_id(self) -> str:
        """The proxy's SAML backend (what the institutional IdP sees)."""
        return f"{self.proxy_base}/{BACKEND_NAME}/proxy_saml2_backend.xml"

    @property
    def proxy_sso_redirect_url(self) -> str:
        return f"{self.proxy_base}/{BACKEND_NAME}/sso/redirect"

    @property
    def proxy_acs_url(self) -> str:
        return f"{self.proxy_base}/{BACKEND_NAME}/acs/post"

    @property
    def orcid_callback_url(self) -> str:
        return f"{self.proxy_base}/{ORCID_MS_NAME}/callback"

    @property
    def orcid_connect_url(self) -> str:
        return f"{self.proxy_base}/{ORCID_MS_NAME}/connect"

    @property
    def sp_acs_url(self) -> str:
        return f"{self.sp_base}/acs/post"

    @property
    def oidc_redirect_uri(self) -> str:
        return f"{self.sp_base}/oidc/callback"

    @property
    def tls_cert(self) -> Path:
        """CA bundle for clients of the proxy's HTTPS listener (a self-signed cert)."""
        return self.keys.tls.cert_path

    @property
    def tls_key(self) -> Path:
        return self.keys.tls.key_path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database_path}"

    # --- ORCID emulator registration ---------------------------------------------------
    @property
    def orcid_client_id(self) -> str:
        return DEMO_ORCID_CLIENT_ID

    @property
    def orcid_client_secret(self) -> str:
        return self.secrets["orcid_client_secret"]

    def emulator_clients(self) -> list[dict[str, Any]]:
        """``ClientRegistration`` dicts for the emulator (``ORCID_EMULATOR_CLIENTS``)."""
        return [
            {
                "client_id": self.orcid_client_id,
                "client_secret": self.orcid_client_secret,
                "redirect_uris": [self.orcid_callback_url],
                "member": True,
                "name": "satosa-orcid demo university",
                "connect_redirect_uri": self.orcid_connect_url,
            }
        ]

    # --- OIDC ---------------------------------------------------------------------------
    @property
    def oidc_client(self) -> dict[str, Any]:
        return {
            "client_id": DEMO_OIDC_CLIENT_ID,
            "client_secret": self.secrets["oidc_client_secret"],
            "client_name": "satosa-orcid demo relying party",
            "redirect_uris": [self.oidc_redirect_uri],
            "response_types": ["code", "id_token"],
            "token_endpoint_auth_method": "client_secret_basic",
        }

    @property
    def oidc_db_uri(self) -> str:
        return f"stateless://satosa:{self.secrets['oidc_db_key']}@{self.host}?alg=aes256"

    # --- environment --------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Every variable ``proxy_conf/`` needs, plus the emulator's and the demo apps'."""
        k = self.keys
        return {
            "SATOSA_CONFIG": str(self.proxy_conf_dir / "proxy_conf.yaml"),
            "SATOSA_BASE": self.proxy_base,
            "SATOSA_STATE_ENCRYPTION_KEY": self.secrets["state_encryption_key"],
            "SATOSA_FRONTEND_KEY": str(k.frontend.key_path),
            "SATOSA_FRONTEND_CERT": str(k.frontend.cert_path),
            "SATOSA_BACKEND_KEY": str(k.backend.key_path),
            "SATOSA_BACKEND_CERT": str(k.backend.cert_path),
            "SATOSA_OIDC_SIGNING_KEY": str(k.oidc.key_path),
            "SATOSA_SP_METADATA": str(self.trusted_sps_dir),
            "SATOSA_IDP_METADATA": str(self.idp_metadata),
            "SATOSA_OIDC_CLIENTS": str(self.oidc_clients_path),
            "SATOSA_OIDC_DB_URI": self.oidc_db_uri,
            "SATOSA_OIDC_SUB_HASH_SALT": self.secrets["oidc_sub_hash_salt"],
            "ORCID_ENVIRONMENT": "emulator",
            "ORCID_BASE_URL": self.emulator_url,
            "ORCID_CLIENT_ID": self.orcid_client_id,
            "ORCID_CLIENT_SECRET": self.orcid_client_secret,
            "SATOSA_ORCID_DATABASE_URL": self.database_url,
            "SATOSA_ORCID_TOKEN_KEYS": self.secrets["token_key"],
            # orcid_requesters in plugins/microservices/orcid.yaml: the emulator plays ORCID's SAML SP
            "SATOSA_ORCID_EMULATOR_SP": self.emulator_sp_entity_id,
            "ORCID_EMULATOR_ISSUER": self.emulator_url,
            "ORCID_EMULATOR_CLIENTS": json.dumps(self.emulator_clients()),
            "ORCID_EMULATOR_SIGNING_KEY": str(k.emulator.key_path),
            "ORCID_EMULATOR_SAML_ENTITY_ID": self.emulator_sp_entity_id,
            "ORCID_EMULATOR_SAML_KEY": str(k.emulator_sp.key_path),
            "ORCID_EMULATOR_SAML_CERT": str(k.emulator_sp.cert_path),
            "ORCID_EMULATOR_SAML_IDP_METADATA": str(self.proxy_frontend_metadata),
            "ORCID_EMULATOR_SAML_IDP_CLIENTS": json.dumps({self.proxy_idp_entity_id: self.orcid_client_id}),
            LAYOUT_ENV: str(self.root),
        }

    def proxy_config(self, *, micro_services: bool = True) -> dict[str, Any]:
        """The real ``proxy_conf/`` as a dict for ``SATOSAConfig``, resolved against :meth:`env`."""
        return load_proxy_config(self.proxy_conf_dir, self.env(), micro_services=micro_services)

    # --- pysaml2 configurations of the demo SP and IdP ---------------------------------
    def sp_saml_config(self, *, with_metadata: bool = True) -> dict[str, Any]:
        """pysaml2 SP config of the demo service provider (trusts the proxy's frontend)."""
        return {
            "entityid": self.sp_entity_id,
            "name": "satosa-orcid demo SP",
            "key_file": str(self.keys.sp.key_path),
            "cert_file": str(self.keys.sp.cert_path),
            "metadata": {"local": [str(self.proxy_frontend_metadata)]} if with_metadata else {},
            "accepted_time_diff": 60,
            "service": {
                "sp": {
                    "endpoints": {"assertion_consumer_service": [(self.sp_acs_url, SAML2_BINDING_HTTP_POST)]},
                    # The proxy signs assertions (and responses): insist on it.
                    "want_assertions_signed": True,
                    "signing_algorithm": SIG_RSA_SHA256,
                    "digest_algorithm": DIGEST_SHA256,
                    "want_response_signed": False,
                    "authn_requests_signed": False,
                    # The SP may run with several workers and keeps no session; the
                    # InResponseTo of the assertion is shown on the result page instead.
                    "allow_unsolicited": True,
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "name_id_policy_format": NAMEID_FORMAT_PERSISTENT,
                    "name_id_format_allow_create": True,
                    # RequestedAttributes in metadata: the proxy releases only these.
                    "optional_attributes": list(DEMO_ATTRIBUTE_NAMES) + ["eduPersonOrcid"],
                    # mdui:DisplayName: the name the proxy's interstitial shows for this service.
                    "ui_info": {"display_name": [{"text": "Demo Research Portal", "lang": "en"}]},
                }
            },
        }

    def emulator_sp_saml_config(self, *, with_metadata: bool = True) -> dict[str, Any]:
        """pysaml2 SP config of the ORCID emulator's SAML SP (trusts the proxy's frontend)."""
        from .emulator_saml_sp import saml_sp_config

        return saml_sp_config(
            issuer=self.emulator_url, entity_id=self.emulator_sp_entity_id,
            key_file=str(self.keys.emulator_sp.key_path), cert_file=str(self.keys.emulator_sp.cert_path),
            idp_metadata=[str(self.proxy_frontend_metadata)] if with_metadata else [],
        )

    def idp_saml_config(self, *, with_metadata: bool = True, name: str = "", scope: str = DEMO_SCOPE) -> dict[str, Any]:
        """pysaml2 IdP config of the demo institutional IdP (trusts the proxy's backend).

        ``name`` makes another IdP of the same deployment (tests of a proxy in front of several
        IdPs): entity ID ``<idp_base>/<name>/idp.xml``, its own endpoints, the shibmd:Scope
        ``scope``; the same key pair (the demo's keys are for loopback only)."""
        base = f"{self.idp_base}/{name}" if name else self.idp_base
        return {
            "entityid": f"{base}/idp.xml" if name else self.idp_entity_id,
            "name": "satosa-orcid demo institutional IdP",
            "key_file": str(self.keys.idp.key_path),
            "cert_file": str(self.keys.idp.cert_path),
            "metadata": {"local": [str(self.proxy_backend_metadata)]} if with_metadata else {},
            "accepted_time_diff": 60,
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            (f"{base}/sso/redirect", SAML2_BINDING_HTTP_REDIRECT),
                            (f"{base}/sso/post", SAML2_BINDING_HTTP_POST),
                        ]
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    # shibmd:Scope in the IdP's metadata: the scope of its users' ePPN and
                    # eduPersonUniqueId, which the plugin's scope check (scope_check) requires.
                    "scope": [scope],
                    "signing_algorithm": SIG_RSA_SHA256,
                    "digest_algorithm": DIGEST_SHA256,
                    # The proxy's backend signs its AuthnRequests; insist on it.
                    "want_authn_requests_signed": True,
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": 5},
                            "attribute_restrictions": None,
                            "name_form": ATTRNAME_FORMAT_URI,
                            "fail_on_missing_requested": False,
                        }
                    },
                }
            },
        }

    def write_idp_metadata(self, name: str, scope: str) -> Path:
        """Write the metadata of the IdP ``name`` (see :meth:`idp_saml_config`); its path."""
        from saml2.config import Config
        from saml2.metadata import entity_descriptor

        path = self.metadata_dir / f"idp-{name}.xml"
        _write_text(path, str(entity_descriptor(Config().load(self.idp_saml_config(with_metadata=False, name=name,
                                                                                    scope=scope)))))
        return path

    # --- writing ------------------------------------------------------------------------
    def _load_or_create_secrets(self) -> dict[str, str]:
        existing: dict[str, str] = {}
        if self.secrets_path.is_file():
            try:
                existing = json.loads(self.secrets_path.read_text())
            except ValueError:
                existing = {}
        fresh = {
            "state_encryption_key": secrets.token_urlsafe(32),
            "token_key": Fernet.generate_key().decode("ascii"),
            # ORCID client secrets are UUIDs.
            "orcid_client_secret": str(uuid.uuid4()),
            "oidc_client_secret": secrets.token_urlsafe(24),
            "oidc_db_key": secrets.token_hex(32),
            "oidc_sub_hash_salt": secrets.token_hex(16),
            "idp_persistent_id_salt": secrets.token_hex(16),
        }
        merged = {**fresh, **existing}
        if merged != existing:
            _write_text(self.secrets_path, json.dumps(merged, indent=2) + "\n", 0o600)
        return merged

    def _write_oidc_clients(self) -> None:
        _write_text(
            self.oidc_clients_path,
            json.dumps({DEMO_OIDC_CLIENT_ID: self.oidc_client}, indent=2) + "\n",
            0o600,
        )

    def _write_layout_file(self) -> None:
        info = {"ports": self.ports.named(), "proxy_conf_dir": str(self.proxy_conf_dir), "host": self.host}
        _write_text(self.layout_path, json.dumps(info, indent=2) + "\n")

    def _write_metadata(self) -> None:
        from saml2.config import Config
        from saml2.metadata import entity_descriptor

        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        for path, conf in (
            (self.sp_metadata, self.sp_saml_config(with_metadata=False)),
            (self.idp_metadata, self.idp_saml_config(with_metadata=False)),
            (self.emulator_sp_metadata, self.emulator_sp_saml_config(with_metadata=False)),
        ):
            _write_text(path, str(entity_descriptor(Config().load(conf))))

        # The proxy's own metadata comes from SATOSA itself (what satosa-saml-metadata does),
        # so it always matches proxy_conf/. It needs the SP and IdP metadata above.
        from satosa.metadata_creation.saml_metadata import create_entity_descriptors
        from satosa.satosa_config import SATOSAConfig

        frontends, backends = create_entity_descriptors(SATOSAConfig(self.proxy_config(micro_services=False)))
        _write_text(self.proxy_frontend_metadata, "".join(str(ed) for ed in frontends[FRONTEND_NAME]))
        _write_text(self.proxy_backend_metadata, "".join(str(ed) for ed in backends[BACKEND_NAME]))


def _copy_keys(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix in (".key", ".crt") and not (target / path.name).exists():
            shutil.copy2(path, target / path.name)


def _pki_paths(directory: Path) -> DemoPki:
    from .pki import KeyPair

    def pair(name: str) -> KeyPair:
        return KeyPair(directory / f"{name}.key", directory / f"{name}.crt")

    roles = ("frontend", "backend", "oidc", "idp", "sp", "tls", "emulator", "emulator_sp")
    return DemoPki(**{role: pair(role.replace("_", "-")) for role in roles})
