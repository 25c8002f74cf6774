"""Typed plugin configuration, parsed once at start-up from the micro-service ``config:`` block.

Every problem raises :class:`ConfigError` with the key path (``orcid.client_id``) and
never the offending value, so a secret can't leak into a start-up log.

Example (``proxy_conf/plugins/microservices/orcid.yaml``)::

    config:
      orcid:
        environment: production          # production | sandbox | emulator
        client_id: APP-XXXXXXXXXXXXXXXX
        client_secret: !ENV ORCID_CLIENT_SECRET
        scopes: [openid]
      user_key_attribute: edupersonprincipalname
      trigger: always
      on_error: continue
      store:
        database_url: sqlite:////var/lib/satosa-orcid/links.db
        token_keys: !ENV SATOSA_ORCID_TOKEN_KEYS
        timeouts: {connect: 2, login: 2, background: 60}   # seconds (the defaults)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError

ENVIRONMENTS = {
    "production": {"base_url": "https://orcid.org", "api_base_url": "https://api.orcid.org", "sandbox": False},
    "sandbox": {"base_url": "https://sandbox.orcid.org", "api_base_url": "https://api.sandbox.orcid.org", "sandbox": True},
    "emulator": {"base_url": None, "api_base_url": None, "sandbox": False},
}
PUBLIC_SCOPES = {"openid", "/authenticate", "/read-public"}
MEMBER_SCOPES = {"/read-limited", "/activities/update", "/person/update"}
ON_ERROR = ("continue", "fail")
OIDC_CLAIM_TYPES = ("string", "array")
# Whose is a user key: the IdP's that asserted it (issuer, the default), or nobody's in
# particular (global: every IdP behind the proxy shares one identifier namespace).
USER_KEY_SCOPES = ("issuer", "global")
SCOPE_CHECKS = ("enforce", "warn", "off")
# Attributes whose values are scoped (``value@scope``): eduPersonPrincipalName and
# eduPersonUniqueId (eduPerson 2020-01), SAML subject-id and pairwise-id (OASIS SAML V2.0
# Subject Identifier Attributes Profile), by their usual internal attribute names.
SCOPED_ATTRIBUTES = frozenset({
    "edupersonprincipalname", "edupersonuniqueid", "subject-id", "subjectid", "subject_id",
    "pairwise-id", "pairwiseid", "pairwise_id",
})
MODES = ("ask", "require", "never")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# ORCID's documented SAML SP (https://info.orcid.org/documentation/integration-guide/
# sign-into-orcid-with-institutional-credentials/). ORCID publishes no sandbox entity ID, so a
# sandbox configuration has no default: it names ORCID's sandbox SP itself (check-config says so).
DEFAULT_ORCID_REQUESTERS = ("https://orcid.org/saml2/sp/1",)

# affiliations:
EMPLOYMENT, EDUCATION = "employment", "education"
KINDS = (EMPLOYMENT, EDUCATION)
DEFAULT_KINDS: dict[str, str] = {"faculty": EMPLOYMENT, "staff": EMPLOYMENT, "employee": EMPLOYMENT, "student": EDUCATION}
DEFAULT_AFFILIATION_ATTRIBUTES = ("edupersonaffiliation", "edupersonscopedaffiliation")
ON_LEAVE = ("end_date", "delete")
SOURCES = ("ROR", "RINGGOLD", "GRID", "FUNDREF", "LEI")
DEFAULT_EXTERNAL_ID_TYPE = "other-id"
# ORCID's documented member API limit, 24 requests/s with bursts of 40
# (https://info.orcid.org/ufaqs/what-are-the-api-limits/); the defaults leave room for
# requests already on the wire when several workers share the bucket.
ORCID_RATE_LIMIT, ORCID_BURST = 24.0, 40
MAX_TEXT = 4000  # orcid-model common-3.0.xsd ``long-text`` (department-name, role-title, organization name)

_ISO_COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW
""".split())
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_ROR = re.compile(r"^(?:https?://ror\.org/)?(0[0-9a-hjkmnp-tv-z]{6}[0-9]{2})$", re.IGNORECASE)
_ID_FORMATS = {
    "RINGGOLD": re.compile(r"^[0-9]{1,10}$"),
    "GRID": re.compile(r"^grid\.[0-9]+\.[0-9a-f]+$"),
    "FUNDREF": re.compile(r"^(?:https?://dx\.doi\.org/|https?://doi\.org/)?10\.13039/[0-9a-zA-Z]+$"),
    "LEI": re.compile(r"^[0-9A-Z]{18}[0-9]{2}$"),
}
_EXTERNAL_ID_TYPE = re.compile(r"^[a-z][a-z0-9_-]{1,63}$")


def _secret_repr(value: str | None) -> str:
    return "<unset>" if not value else "<redacted>"


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    read: float = 10.0

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class OrcidSettings:
    environment: str
    base_url: str
    api_base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ("openid",)
    timeouts: Timeouts = Timeouts()
    prompt_login: bool = False
    lang: str | None = None
    # Outbound HTTP to ORCID ignores the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE,
    # .netrc): a deployment behind a forward proxy names it here (it may hold credentials: not in repr).
    proxy: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None

    @property
    def sandbox(self) -> bool:
        return self.environment == "sandbox"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def openid(self) -> bool:
        return "openid" in self.scopes

    def __repr__(self) -> str:
        return (
            f"OrcidSettings(environment={self.environment!r}, base_url={self.base_url!r}, "
            f"client_id={self.client_id!r}, client_secret={_secret_repr(self.client_secret)}, scopes={self.scopes!r})"
        )


@dataclass(frozen=True)
class StoreTimeouts:
    """Seconds the link store may take (``store.timeouts``): ``connect`` to open a PostgreSQL
    connection (libpq ``connect_timeout``, at least 2); ``login`` for one database call of the
    proxy (statement, lock, pool wait, SQLite busy timeout, and a client-side deadline that
    holds when the server hangs); ``background`` the same for the CLI and the sync worker."""
    connect: float = 2.0
    login: float = 2.0
    background: float = 60.0


@dataclass(frozen=True)
class StoreSettings:
    database_url: str
    token_keys: tuple[str, ...] = field(default=(), repr=False)
    user_key_secret: str | None = field(default=None, repr=False)
    auto_upgrade: bool | None = None  # None: SQLite only
    timeouts: StoreTimeouts = StoreTimeouts()

    def __repr__(self) -> str:
        url = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", self.database_url)
        return f"StoreSettings(database_url={url!r}, token_keys=<{len(self.token_keys)} keys>)"


@dataclass(frozen=True)
class DeclineSettings:
    not_now_seconds: int = 30 * 86400


DEFAULT_INSTITUTION = "Your institution"  # shown translated ("Ihre Einrichtung", ...) when not configured


@dataclass(frozen=True)
class InterstitialSettings:
    """The researcher's pages: the interstitial and every other page of the plugin.

    ``logo_url`` (https, or a ``data:image/`` URI) is shown in the page header with the
    institution's name as its text alternative; ``privacy_url`` and ``help_url`` become footer
    links; ``service_urls`` maps requester ids to the page the error pages link back to."""
    enabled: bool = True
    institution: str = DEFAULT_INSTITUTION
    templates_dir: str | None = None
    service_names: Mapping[str, str] = field(default_factory=dict)
    service_urls: Mapping[str, str] = field(default_factory=dict)
    logo_url: str | None = None
    privacy_url: str | None = None
    help_url: str | None = None


@dataclass(frozen=True)
class ConnectLimits:
    """Token buckets (in the database, shared by every instance) on ``/orcid/connect``'s code
    exchanges, before any call to ORCID. ORCID's member API allows 24 requests/s per client
    in total (https://info.orcid.org/ufaqs/what-are-the-api-limits/); a connect costs two
    token calls and a revocation, so the defaults leave most of it to logins and sync.
    ``client_*`` is per client address (a whole campus behind one NAT shares it, hence the
    burst); ``trusted_proxies`` > 0 takes the address that many hops from the right of
    ``X-Forwarded-For`` (set it only when that many proxies you run append to it)."""
    client_rate: float = 0.2     # exchanges refilled per second per client address (12/min)
    client_burst: int = 20
    total_rate: float = 4.0      # exchanges refilled per second for the whole deployment
    total_burst: int = 40
    trusted_proxies: int = 0


@dataclass(frozen=True)
class ConnectSettings:
    marker_ttl_seconds: int = 900
    pending_ttl_seconds: int = 3600
    cookie_secure: bool = True   # also: the __Host- cookie prefix (RFC 6265bis section 4.1.3.2)
    limits: ConnectLimits = ConnectLimits()


@dataclass(frozen=True)
class Organization:
    name: str
    city: str
    country: str
    disambiguated_id: str
    disambiguation_source: str = "ROR"
    region: str | None = None


@dataclass(frozen=True)
class SyncSettings:
    """How the worker runs. Rate limit numbers are totals across all workers and hosts."""

    rate_per_second: float = 23.0
    burst: int = 36
    batch_size: int = 20
    poll_interval: float = 5.0
    lease_seconds: int = 30  # a crashed worker's items wait this long; a clean stop releases them at once
    max_attempts: int = 12
    backoff_base: float = 30.0
    backoff_max: float = 3600.0


@dataclass(frozen=True)
class AffiliationSettings:
    organization: Organization
    kinds: tuple[tuple[str, str], ...] = tuple(DEFAULT_KINDS.items())
    affiliation_attributes: tuple[str, ...] = DEFAULT_AFFILIATION_ATTRIBUTES
    scopes: frozenset[str] = frozenset()
    department_attribute: str | None = None
    role_attribute: str | None = None
    start_date_attribute: str | None = None
    on_leave: str = "end_date"
    external_id_type: str = DEFAULT_EXTERNAL_ID_TYPE
    sync: SyncSettings = field(default_factory=SyncSettings)

    def kind_for(self, value: str) -> str | None:
        value = value.strip().lower()
        for affiliation, kind in self.kinds:
            if affiliation == value:
                return kind
        return None


@dataclass(frozen=True)
class PluginConfig:
    orcid: OrcidSettings
    store: StoreSettings
    user_key_attribute: str
    orcid_attribute: str = "edupersonorcid"
    default_mode: str = "ask"
    requester_modes: Mapping[str, str] = field(default_factory=dict)
    on_error: str = "continue"
    prefill: Mapping[str, str] = field(default_factory=dict)
    decline: DeclineSettings = DeclineSettings()
    flow_ttl_seconds: int = 1800
    orcid_requesters: tuple[str, ...] = DEFAULT_ORCID_REQUESTERS
    redirect_base: str | None = None
    trusted_orcid_issuers: frozenset[str] = frozenset()
    interstitial: InterstitialSettings = InterstitialSettings()
    connect: ConnectSettings = ConnectSettings()
    affiliations: AffiliationSettings | None = None
    on_conflict: str = "refuse"  # an iD linked to another user: refuse (audited) or move it here
    # JSON type of the OIDC claim (``eduperson_orcid``): a string, as deployed R&E OPs send it,
    # or an array (eduPerson's multi-valued form); see docs/service-providers.md
    oidc_claim_type: str = "string"
    # Whose a user key is (see USER_KEY_SCOPES); the IdP that asserted the keys already stored
    # when the store is upgraded to issuer-bound keys; what to do when a scoped key's scope is
    # not one the asserting IdP's metadata lists (shibmd:Scope); and whether the key is scoped.
    user_key_scope: str = "issuer"
    default_issuer: str | None = None
    scope_check: str = "enforce"
    user_key_scoped: bool = True

    def key_issuer(self, idp: str | None) -> str | None:
        """The issuer a user key asserted by ``idp`` is stored under: the IdP's entity ID, ""
        with ``user_key_scope: global``, None when the IdP is unknown (no key then)."""
        if self.user_key_scope == "global":
            return ""
        return idp or None

    @property
    def existing_issuer(self) -> str | None:
        """The issuer of links stored before user keys were issuer-bound, when configured."""
        return "" if self.user_key_scope == "global" else self.default_issuer

    def mode_for(self, requester: str | None, *, requested: bool = False) -> str:
        """``ask``, ``require`` or ``never`` for this SP / OIDC client.

        An SP that asked for the attribute itself (AuthnRequest / OIDC claims, seen by the
        OrcidRequestHint request micro-service) counts as ``ask`` unless configured otherwise.
        """
        mode = self.requester_modes.get(requester or "")
        if mode:
            return mode
        if requested and self.default_mode == "never":
            return "ask"
        return self.default_mode


# --- parsing helpers ------------------------------------------------------------------
class _Section:
    """A mapping that remembers its key path and which keys were read."""

    def __init__(self, data: Any, path: str, allowed: set[str]):
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or "config", "must be a mapping")
        unknown = sorted(set(map(str, data)) - allowed)
        if unknown:
            raise ConfigError(self._key(path, unknown[0]), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        self.data, self.path = data, path

    @staticmethod
    def _key(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def key(self, key: str) -> str:
        return self._key(self.path, key)

    def has(self, key: str) -> bool:
        return self.data.get(key) not in (None, "")

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value in (None, ""):
            if required:
                raise ConfigError(self.key(key), "is required")
            return default
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(self.key(key), "must be a string")
        return str(value).strip()

    def choice(self, key: str, choices: tuple[str, ...] | list[str], default: str | None = None) -> str:
        value = self.str(key, default, required=default is None)
        if value not in choices:
            raise ConfigError(self.key(key), f"must be one of {', '.join(choices)}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        raise ConfigError(self.key(key), "must be true or false")

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.data.get(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(self.key(key), "must be a number") from None
        if number <= minimum:
            raise ConfigError(self.key(key), f"must be greater than {minimum:g}")
        return number

    def duration(self, key: str, default: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            seconds = value
        else:
            m = _DURATION.match(str(value))
            if not m:
                raise ConfigError(self.key(key), "must be a duration such as 3600, 90m, 12h or 30d")
            seconds = int(m.group(1)) * _UNITS[m.group(2)]
        if seconds < 0:
            raise ConfigError(self.key(key), "must not be negative")
        return seconds

    def list(self, key: str, default: tuple[str, ...] = (), *, skip_blank: bool = False) -> tuple[str, ...]:
        value = self.data.get(key)
        if value in (None, ""):
            return default
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if skip_blank and isinstance(value, (list, tuple)):
            value = [v for v in value if not (isinstance(v, str) and not v.strip())]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(self.key(key), "must be a list of strings")
        return tuple(v.strip() for v in value)

    def section(self, key: str, allowed: set[str]) -> "_Section":
        return _Section(self.data.get(key), self.key(key), allowed)


def _check_url(section: _Section, key: str, url: str, *, https_only: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError(section.key(key), "must be an absolute http(s) URL")
    if https_only and parts.scheme != "https":
        raise ConfigError(section.key(key), "must use https")
    return url.rstrip("/")


def _parse_orcid(root: _Section) -> OrcidSettings:
    s = root.section(
        "orcid",
        {"environment", "base_url", "api_base_url", "client_id", "client_secret", "scopes", "timeouts", "prompt_login", "lang",
         "proxy", "ca_bundle"},
    )
    env = s.choice("environment", tuple(ENVIRONMENTS), default="production")
    defaults = ENVIRONMENTS[env]
    if env == "emulator":
        base_url = _check_url(s, "base_url", s.str("base_url", required=True), https_only=False)
        api_base_url = _check_url(s, "api_base_url", s.str("api_base_url", base_url), https_only=False)
    else:
        # base_url is only meaningful for the emulator; ignore it elsewhere so one YAML serves both.
        base_url, api_base_url = defaults["base_url"], defaults["api_base_url"]
    client_id = s.str("client_id", required=True)
    if env != "emulator" and not re.fullmatch(r"APP-[0-9A-Z]{16}", client_id):
        raise ConfigError(s.key("client_id"), "must look like APP-XXXXXXXXXXXXXXXX")
    client_secret = s.str("client_secret", required=True)
    scopes = s.list("scopes", ("openid",))
    unknown = [x for x in scopes if x not in PUBLIC_SCOPES | MEMBER_SCOPES]
    if unknown:
        raise ConfigError(s.key("scopes"), f"unknown ORCID scope {unknown[0]!r}")
    if "openid" in scopes and "/authenticate" in scopes:
        raise ConfigError(s.key("scopes"), "use either openid or /authenticate, not both (ORCID advice)")
    if "/read-public" in scopes:
        raise ConfigError(s.key("scopes"), "/read-public is a client-credentials scope, not a 3-legged one")
    if not ({"openid", "/authenticate"} & set(scopes)) and not (MEMBER_SCOPES & set(scopes)):
        raise ConfigError(s.key("scopes"), "must include openid or /authenticate")
    t = s.section("timeouts", {"connect", "read"})
    timeouts = Timeouts(connect=t.number("connect", 3.0), read=t.number("read", 10.0))
    lang = s.str("lang")
    proxy = s.str("proxy")
    if proxy is not None:
        parts = urlsplit(proxy)
        if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
            raise ConfigError(s.key("proxy"), "must be a proxy URL (http://host:port, https://..., socks5://...)")
    return OrcidSettings(
        environment=env,
        base_url=base_url,
        api_base_url=api_base_url,
        client_id=client_id,
        client_secret=client_secret,
        scopes=scopes,
        timeouts=timeouts,
        prompt_login=s.bool("prompt_login", False),
        lang=lang,
        proxy=proxy,
        ca_bundle=s.str("ca_bundle"),
    )


def _parse_store(root: _Section) -> StoreSettings:
    s = root.section("store", {"database_url", "token_keys", "user_key_secret", "auto_upgrade", "timeouts"})
    url = s.str("database_url", required=True)
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", url):
        raise ConfigError(s.key("database_url"), "must be a sqlite:/// or postgresql+psycopg:// URL")
    keys = s.list("token_keys")
    if not keys:
        raise ConfigError(s.key("token_keys"), "is required: one or more Fernet keys (newest first)")
    from cryptography.fernet import Fernet

    for i, key in enumerate(keys):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise ConfigError(s.key("token_keys"), f"key #{i + 1} is not a valid Fernet key (32 url-safe base64 bytes)") from None
    auto = s.data.get("auto_upgrade")
    t = s.section("timeouts", {"connect", "login", "background"})
    defaults = StoreTimeouts()
    timeouts = StoreTimeouts(connect=t.number("connect", defaults.connect), login=t.number("login", defaults.login),
                             background=t.number("background", defaults.background))
    if timeouts.connect < 2:
        raise ConfigError(t.key("connect"), "must be at least 2 (libpq waits at least 2 seconds)")
    return StoreSettings(
        database_url=url,
        token_keys=keys,
        user_key_secret=s.str("user_key_secret"),
        auto_upgrade=None if auto is None else s.bool("auto_upgrade", False),
        timeouts=timeouts,
    )


# The keys of the micro-service's ``config:`` mapping (anything else is a typo, named as such).
PLUGIN_KEYS = frozenset({
    "orcid", "store", "user_key_attribute", "orcid_attribute", "trigger", "on_error", "prefill", "decline", "flow_ttl",
    "orcid_requesters", "redirect_base", "trusted_orcid_issuers", "policy", "interstitial", "connect", "affiliations",
    "on_conflict", "oidc_claim_type", "user_key_scope", "default_issuer", "scope_check", "user_key_scoped",
})


def parse_config(raw: Any) -> PluginConfig:
    """Parse the micro-service ``config:`` mapping; raise ConfigError naming the key on any problem."""
    root = _Section(raw, "", PLUGIN_KEYS)
    orcid = _parse_orcid(root)
    store = _parse_store(root)
    default_mode, modes = _parse_policy(root)
    prefill = root.section("prefill", {"given_names", "family_names", "email"})
    user_key_attribute = root.str("user_key_attribute", required=True).lower()
    d = root.section("decline", {"not_now"})
    return PluginConfig(
        orcid=orcid,
        store=store,
        user_key_attribute=user_key_attribute,
        orcid_attribute=root.str("orcid_attribute", "edupersonorcid").lower(),
        default_mode=default_mode,
        requester_modes=modes,
        on_error=root.choice("on_error", ON_ERROR, default="continue"),
        prefill={k: prefill.str(k).lower() for k in ("given_names", "family_names", "email") if prefill.has(k)},
        decline=DeclineSettings(not_now_seconds=d.duration("not_now", 30 * 86400)),
        flow_ttl_seconds=root.duration("flow_ttl", 1800),
        # skip_blank: an empty !ENV SATOSA_ORCID_EMULATOR_SP entry (the shipped YAML) is ignored
        orcid_requesters=root.list("orcid_requesters", () if orcid.sandbox else DEFAULT_ORCID_REQUESTERS, skip_blank=True),
        redirect_base=(
            _check_url(root, "redirect_base", root.str("redirect_base"), https_only=False)
            if root.has("redirect_base")
            else None
        ),
        trusted_orcid_issuers=frozenset(root.list("trusted_orcid_issuers")),
        interstitial=_parse_interstitial(root),
        connect=_parse_connect(root),
        affiliations=parse_affiliations(root.data.get("affiliations")),
        on_conflict=root.choice("on_conflict", ("refuse", "move"), default="refuse"),
        oidc_claim_type=root.choice("oidc_claim_type", OIDC_CLAIM_TYPES, default="string"),
        user_key_scope=root.choice("user_key_scope", USER_KEY_SCOPES, default="issuer"),
        default_issuer=_parse_entity_id(root, "default_issuer"),
        scope_check=_parse_scope_check(root),
        user_key_scoped=root.bool("user_key_scoped", user_key_attribute in SCOPED_ATTRIBUTES),
    )


def _parse_scope_check(root: _Section) -> str:
    """``enforce | warn | off``; YAML 1.1 (PyYAML, so SATOSA) reads a bare ``off`` as false."""
    if root.data.get("scope_check") is False:
        return "off"
    return root.choice("scope_check", SCOPE_CHECKS, default="enforce")


def _parse_entity_id(root: _Section, key: str) -> str | None:
    """A SAML entity ID (a URI of at most 1024 characters, SAML core 8.3.6) or None."""
    value = root.str(key)
    if value is None:
        return None
    if len(value) > 1024 or not re.fullmatch(r"[^\s]+", value) or ":" not in value:
        raise ConfigError(root.key(key), "must be the IdP's entity ID (a URI such as https://idp.example.org/idp)")
    return value


def _parse_policy(root: _Section) -> tuple[str, dict[str, str]]:
    """``trigger: always | [ids]`` (shorthand) or ``policy: {default, requesters: {id: mode}}``."""
    if "trigger" in root.data and "policy" in root.data:
        raise ConfigError("trigger", "use either trigger or policy, not both")
    if "policy" in root.data:
        p = root.section("policy", {"default", "requesters"})
        default = p.choice("default", MODES, default="ask")
        raw = p.data.get("requesters") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(p.key("requesters"), "must map requester entity IDs / client ids to ask, require or never")
        modes = {}
        for requester, mode in raw.items():
            if mode not in MODES:
                raise ConfigError(f"{p.key('requesters')}.{requester}", f"must be one of {', '.join(MODES)}")
            modes[str(requester)] = mode
        return default, modes
    trigger = root.data.get("trigger", "always")
    if trigger == "always":
        return "ask", {}
    if isinstance(trigger, (list, tuple)) and trigger and all(isinstance(x, str) and x for x in trigger):
        return "never", {str(x): "ask" for x in trigger}
    raise ConfigError("trigger", "must be 'always' or a list of requester entity IDs / client ids")


def _parse_interstitial(root: _Section) -> InterstitialSettings:
    raw = root.data.get("interstitial")
    if isinstance(raw, bool):
        return InterstitialSettings(enabled=raw)
    s = root.section("interstitial", {"enabled", "institution", "templates_dir", "service_names", "service_urls",
                                      "logo_url", "privacy_url", "help_url"})
    names = s.data.get("service_names") or {}
    if not isinstance(names, Mapping) or not all(isinstance(v, str) for v in names.values()):
        raise ConfigError(s.key("service_names"), "must map requester ids to display names")
    urls = s.data.get("service_urls") or {}
    if not isinstance(urls, Mapping) or not all(isinstance(v, str) for v in urls.values()):
        raise ConfigError(s.key("service_urls"), "must map requester ids to URLs")
    for url in urls.values():
        _check_url(s, "service_urls", url, https_only=False)  # kept as written: a trailing / may matter
    logo = s.str("logo_url")
    if logo and not logo.startswith("data:image/"):
        _check_url(s, "logo_url", logo, https_only=True)
    links = {key: s.str(key) for key in ("privacy_url", "help_url")}
    for key, url in links.items():
        if url:
            _check_url(s, key, url, https_only=False)
    templates_dir = s.str("templates_dir")
    if templates_dir and not __import__("os").path.isdir(templates_dir):
        raise ConfigError(s.key("templates_dir"), "is not a directory")
    return InterstitialSettings(
        enabled=s.bool("enabled", True),
        institution=s.str("institution", DEFAULT_INSTITUTION),
        templates_dir=templates_dir,
        service_names={str(k): v for k, v in names.items()},
        service_urls={str(k): v for k, v in urls.items()},
        logo_url=logo,
        **links,
    )


def _parse_connect(root: _Section) -> ConnectSettings:
    s = root.section("connect", {"marker_ttl", "pending_ttl", "cookie_secure", "limits"})
    lim, d = s.section("limits", {"client_rate", "client_burst", "total_rate", "total_burst", "trusted_proxies"}), \
        ConnectLimits()
    proxies = lim.data.get("trusted_proxies", d.trusted_proxies)
    if not isinstance(proxies, int) or isinstance(proxies, bool) or not 0 <= proxies <= 5:
        raise ConfigError(lim.key("trusted_proxies"), "must be a whole number from 0 to 5")
    return ConnectSettings(
        marker_ttl_seconds=s.duration("marker_ttl", 900),
        pending_ttl_seconds=s.duration("pending_ttl", 3600),
        cookie_secure=s.bool("cookie_secure", True),
        limits=ConnectLimits(
            client_rate=lim.number("client_rate", d.client_rate),
            client_burst=int(lim.number("client_burst", d.client_burst, minimum=0.999)),
            total_rate=lim.number("total_rate", d.total_rate),
            total_burst=int(lim.number("total_burst", d.total_burst, minimum=0.999)),
            trusted_proxies=proxies),
    )


# --- affiliations: -------------------------------------------------------------------
def parse_affiliations(raw: Any, path: str = "affiliations") -> AffiliationSettings | None:
    """Parse the ``affiliations:`` block; None when it is absent or ``enabled: false``::

    affiliations:
      organization:
        name: Boston University
        city: Boston
        region: Massachusetts            # optional
        country: US                      # ISO 3166-1 alpha-2
        disambiguated_id: https://ror.org/05qwgg493
        disambiguation_source: ROR       # ROR (recommended), RINGGOLD, GRID, FUNDREF, LEI
      kinds:                             # eduPersonAffiliation value -> item (defaults shown)
        faculty: employment
        staff: employment
        employee: employment
        student: education
      affiliation_attributes: [edupersonaffiliation, edupersonscopedaffiliation]
      scopes: [bu.edu]                   # optional: only these scopes of scoped affiliations
      department_attribute: ou           # optional
      role_attribute: title              # optional
      start_date_attribute: null         # optional; default: the date of the link
      on_leave: end_date                 # end_date (PUT with end-date) | delete
      sync:                              # the worker (satosa-orcid sync run)
        rate_per_second: 23              # shared by every worker; ORCID allows 24/s
        burst: 36                        # ORCID allows bursts of 40
    """
    if raw is None:
        return None
    s = _Section(raw, path, {
        "enabled", "organization", "kinds", "affiliation_attributes", "scopes", "department_attribute",
        "role_attribute", "start_date_attribute", "on_leave", "external_id_type", "sync",
    })
    if not s.bool("enabled", True):
        return None
    org = _parse_organization(s.section("organization", {
        "name", "city", "region", "country", "disambiguated_id", "disambiguation_source",
    }))
    kinds = _parse_kinds(s)
    attributes = tuple(a.lower() for a in s.list("affiliation_attributes", DEFAULT_AFFILIATION_ATTRIBUTES))
    ext_type = s.str("external_id_type", DEFAULT_EXTERNAL_ID_TYPE)
    if not _EXTERNAL_ID_TYPE.match(ext_type):
        raise ConfigError(s.key("external_id_type"), "must be an ORCID external identifier type such as other-id")

    def attribute(key: str) -> str | None:
        value = s.str(key)
        return value.lower() if value else None

    return AffiliationSettings(
        organization=org,
        kinds=kinds,
        affiliation_attributes=attributes,
        scopes=frozenset(x.lower() for x in s.list("scopes")),
        department_attribute=attribute("department_attribute"),
        role_attribute=attribute("role_attribute"),
        start_date_attribute=attribute("start_date_attribute"),
        on_leave=s.choice("on_leave", ON_LEAVE, default="end_date"),
        external_id_type=ext_type,
        sync=_parse_sync(s.section("sync", {
            "rate_per_second", "burst", "batch_size", "poll_interval", "lease", "max_attempts", "backoff_base", "backoff_max",
        })),
    )


def _parse_organization(s: _Section) -> Organization:
    name = s.str("name", required=True)
    city = s.str("city", required=True)  # ORCID: 9060 without city and country
    for key, value in (("city", city), ("region", s.str("region"))):
        if value and len(value) > MAX_TEXT:  # common-3.0.xsd long-text; ORCID: 400 9047
            raise ConfigError(s.key(key), f"must be at most {MAX_TEXT} characters (ORCID's limit)")
    country = s.str("country", required=True).upper()
    if country not in _ISO_COUNTRIES:
        raise ConfigError(s.key("country"), "must be an ISO 3166-1 alpha-2 country code such as US or DE")
    source = s.str("disambiguation_source", "ROR").upper()
    if source not in SOURCES:
        raise ConfigError(s.key("disambiguation_source"), f"must be one of {', '.join(SOURCES)} (ROR recommended)")
    ident = s.str("disambiguated_id", required=True)
    return Organization(
        name=name[:MAX_TEXT], city=city, country=country, region=s.str("region"),
        disambiguated_id=normalise_org_id(ident, source, s.key("disambiguated_id")), disambiguation_source=source,
    )


def normalise_org_id(ident: str, source: str, key: str = "disambiguated_id") -> str:
    """The identifier as ORCID stores it (ROR: the full https://ror.org/ URL, checksum verified)."""
    ident = ident.strip()
    if source == "ROR":
        m = _ROR.match(ident)
        if not m or not _ror_checksum_ok(m.group(1).lower()):
            raise ConfigError(key, "must be a ROR id such as https://ror.org/05qwgg493 (checksum verified)")
        return f"https://ror.org/{m.group(1).lower()}"
    pattern = _ID_FORMATS[source]
    if not pattern.match(ident):
        raise ConfigError(key, f"is not a {source} identifier")
    if source == "FUNDREF" and not ident.startswith("http"):
        ident = f"http://dx.doi.org/{ident}"  # as ORCID's org database holds FundRef ids
    return ident


def _ror_checksum_ok(ror: str) -> bool:
    number = 0
    for ch in ror[1:7]:
        number = number * 32 + _CROCKFORD.index(ch)
    return int(ror[7:9]) == 98 - (number * 100) % 97


def _parse_kinds(s: _Section) -> tuple[tuple[str, str], ...]:
    raw = s.data.get("kinds")
    if raw is None:
        return tuple(DEFAULT_KINDS.items())
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(s.key("kinds"), "must map affiliation values (faculty, student, ...) to employment or education")
    out = []
    for value, kind in raw.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(s.key("kinds"), "keys must be affiliation values such as faculty or student")
        if kind in (None, "none", False):
            continue  # explicitly ignored
        if kind not in KINDS:
            raise ConfigError(f"{s.key('kinds')}.{value}", "must be employment, education or none")
        out.append((value.strip().lower(), kind))
    return tuple(out)


def _parse_sync(s: _Section) -> SyncSettings:
    rate = s.number("rate_per_second", 23.0)
    if rate > ORCID_RATE_LIMIT:
        raise ConfigError(s.key("rate_per_second"), f"must not exceed ORCID's limit of {ORCID_RATE_LIMIT:g} requests/s")
    burst = int(s.number("burst", 36))
    if burst > ORCID_BURST:
        raise ConfigError(s.key("burst"), f"must not exceed ORCID's burst of {ORCID_BURST}")
    max_attempts = int(s.number("max_attempts", 12))
    base = s.number("backoff_base", 30.0)
    top = s.number("backoff_max", 3600.0)
    if top < base:
        raise ConfigError(s.key("backoff_max"), "must not be smaller than backoff_base")
    return SyncSettings(
        rate_per_second=rate, burst=max(burst, 1), batch_size=int(s.number("batch_size", 20)),
        poll_interval=s.number("poll_interval", 5.0), lease_seconds=max(s.duration("lease", 30), 1),
        max_attempts=max_attempts, backoff_base=base, backoff_max=top,
    )
