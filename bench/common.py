"""What every row family shares: statistics, progress lines, result rows, the deployment.

The deployment is the one the flow tests use (``tests/flows/flowkit.py``): a
:class:`DemoLayout` with free loopback ports in a temporary directory, its ``env()`` applied
to ``os.environ`` and SATOSA's real WSGI app built from the real ``proxy_conf/`` with
``make_app(SATOSAConfig("proxy_conf.yaml"))`` while the working directory is ``proxy_conf/``.
"Without the plugin" is the same configuration with the plugin's entries removed from
``MICRO_SERVICES``: the ``orcid`` hop and its companion request micro-service ``orcid_hint``
(every entry whose module is in ``satosa_orcid_plugin``). The bench is its own process, so changing ``os.environ`` and the working
directory is fine here (both are restored on exit).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

ORCID_MS_NAME = "orcid"
ORCID_ATTRIBUTE = "eduPersonOrcid"
DEMO_USERS = ("alice", "bob", "carol")
SCOPE = "demo.example.org"  # the demo IdP's scope (eduPersonPrincipalName = user@SCOPE)
JOSIAH = "0000-0002-1825-0097"  # the emulator's first demo account

_T0 = time.monotonic()


# --- progress ------------------------------------------------------------------------------
def progress(message: str) -> None:
    """One progress line on stderr (stdout stays free for the final table)."""
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- statistics ----------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Linear-interpolation percentile (p in 0..100), as numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Summary:
    n: int
    median: float
    p95: float
    p99: float
    mean: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: list[float]) -> "Summary":
        if not values:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(len(values), statistics.median(values), percentile(values, 95), percentile(values, 99),
                   statistics.fmean(values), min(values), max(values))


# --- result rows ---------------------------------------------------------------------------
@dataclass
class Row:
    """One line of ``latest.json``: ``target`` is text (e.g. "<= 1.02") or None for context
    figures; ``pass_`` is True/False against the target, None when there is no target or the
    row could not be measured (``note`` says why)."""

    name: str
    figure: float | int | str | None
    unit: str
    target: str | None = None
    pass_: bool | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        figure = self.figure
        if isinstance(figure, float):
            figure = None if math.isnan(figure) else round(figure, 4)
        out: dict[str, Any] = {"name": self.name, "figure": figure, "unit": self.unit, "target": self.target,
                               "pass": self.pass_}
        if self.note:
            out["note"] = self.note
        return out


def check(value: float | int | None, op: str, bound: float) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]


def target_row(name: str, value: float | int | None, unit: str, op: str, bound: float,
               note: str | None = None) -> Row:
    return Row(name, value, unit, f"{op} {bound:g}", check(value, op, bound), note)


# --- timing --------------------------------------------------------------------------------
def children_cpu() -> float:
    """CPU seconds of waited-for child processes (xmlsec1, which pysaml2 runs per signature)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Meter:
    """Accumulates wall time and CPU time (this thread plus reaped children) of the calls it
    times; used to time only the proxy's share of a login."""

    wall: float = 0.0
    cpu: float = 0.0
    children: float = 0.0  # of which reaped children (xmlsec1)

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        w0, t0, c0 = time.perf_counter(), time.thread_time(), children_cpu()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - w0
            children = children_cpu() - c0
            self.children += children
            self.cpu += (time.thread_time() - t0) + children


# --- environment ---------------------------------------------------------------------------
@contextlib.contextmanager
def applied_env(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_plugin_service(entry: dict[str, Any]) -> bool:
    """A MICRO_SERVICES entry of this plugin: the ``orcid`` hop itself, and any companion
    from the package (proxy_conf/ also loads the ``orcid_hint`` request micro-service)."""
    return entry.get("name") == ORCID_MS_NAME or str(entry.get("module", "")).startswith("satosa_orcid_plugin.")


def discard_logging(config_logging: dict[str, Any] | None) -> dict[str, Any]:
    """proxy_conf's LOGGING with the same levels and formatter, written to /dev/null: every
    log record is still formatted and written (as in production), without flooding the
    terminal. Both variants of every comparison get the same logging."""
    logging_conf = copy.deepcopy(config_logging or {"version": 1})
    logging_conf["handlers"] = {
        "stdout": {"class": "logging.FileHandler", "filename": os.devnull, "level": "INFO",
                   "formatter": "simple" if "simple" in (logging_conf.get("formatters") or {}) else None},
    }
    if logging_conf["handlers"]["stdout"]["formatter"] is None:
        del logging_conf["handlers"]["stdout"]["formatter"]
    return logging_conf


class Deployment:
    """A demo deployment in ``root`` (keys, metadata, secrets, SQLite link store) with free
    loopback ports; its environment stays applied while the object is entered."""

    def __init__(self, root: Path):
        from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

        self.root = Path(root)
        self.layout = DemoLayout(self.root / "deployment", DemoPorts.free())
        self.env = self.layout.env()
        self._stack = contextlib.ExitStack()
        self._emulator = None
        self._emulator_server = None

    def __enter__(self) -> "Deployment":
        self._stack.enter_context(applied_env(self.env))
        self._stack.enter_context(contextlib.chdir(self.layout.proxy_conf_dir))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._emulator_server is not None:
            self._emulator_server.stop()
            self._emulator_server = None
        self._stack.close()

    # --- the proxy ---------------------------------------------------------------------
    def satosa_config(self, *, plugin: bool = True, **plugin_changes: Any):
        """SATOSAConfig("proxy_conf.yaml") read from proxy_conf/ (the cwd while entered); without
        ``plugin`` the orcid entry is removed from MICRO_SERVICES; ``plugin_changes`` update
        the micro-service's config dict (as tests/flows/test_consent_hop.py::app_with does)."""
        from satosa.satosa_config import SATOSAConfig

        config = SATOSAConfig("proxy_conf.yaml")
        services = config["MICRO_SERVICES"] or []
        if plugin:
            entry = next(m for m in services if m["name"] == ORCID_MS_NAME)
            entry["config"].update(copy.deepcopy(plugin_changes))
        else:
            config["MICRO_SERVICES"] = [m for m in services if not is_plugin_service(m)]
        config["LOGGING"] = discard_logging(config.get("LOGGING"))
        return config

    def wsgi_app(self, config) -> Callable:
        from satosa.proxy_server import make_app

        return make_app(config)

    # --- the ORCID emulator --------------------------------------------------------------
    def emulator(self):
        """The ORCID emulator at layout.emulator_url, served in a thread of this process."""
        if self._emulator is None:
            from satosa_orcid_plugin.devstack import emulator as em

            app = em.Emulator(self.layout.emulator_url,
                              clients=[em.ClientRegistration(**c) for c in self.layout.emulator_clients()])
            self._emulator_server = em.serve_in_thread(app, self.layout.host, port=self.layout.ports.emulator)
            self._emulator = app
        return self._emulator

    # --- the link store --------------------------------------------------------------------
    def store(self):
        from satosa_orcid_plugin.store import Store
        from satosa_orcid_plugin.tokens import TokenCipher

        store = Store.from_url(self.env["SATOSA_ORCID_DATABASE_URL"],
                               TokenCipher.from_keys(self.env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
        store.db.upgrade()
        return store

    def link_demo_users(self, users: tuple[str, ...] = DEMO_USERS) -> dict[str, str]:
        """Give each demo user an active link (as a completed hop would) -> {user: iD}."""
        from satosa_orcid_plugin.orcid_id import OrcidId
        from satosa_orcid_plugin.tokens import TokenSet

        store = self.store()
        try:
            linked = {}
            for user in users:
                index = DEMO_USERS.index(user) if user in DEMO_USERS else len(DEMO_USERS) + users.index(user)
                orcid = OrcidId.parse(orcid_for(3_000_000_000 + index))
                tokens = TokenSet(access_token=f"bench-access-{user}", refresh_token=f"bench-refresh-{user}",
                                  expires_at=datetime.now(timezone.utc) + timedelta(days=365 * 20),
                                  scope=("openid",))
                store.links.link(f"{user}@{SCOPE}", orcid, tokens, name=user.title(),
                                 issuer=self.layout.idp_entity_id)  # the demo IdP asserts the key
                linked[user] = orcid.uri
            return linked
        finally:
            store.db.dispose()


def orcid_for(n: int) -> str:
    """A checksum-valid ORCID iD made from the integer ``n`` (distinct n, distinct iD)."""
    from satosa_orcid_plugin.orcid_id import check_digit

    base = f"{n:015d}"
    digits = base + check_digit(base)
    return "-".join(digits[i:i + 4] for i in range(0, 16, 4))


# --- driving an in-process login -----------------------------------------------------------
def path_and_query(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    """``(action, {name: value})`` of the first form of an HTML page."""
    from bs4 import BeautifulSoup

    form = BeautifulSoup(page, "html.parser").find("form")
    if form is None:
        raise AssertionError(f"no <form> in page: {page[:300]!r}")
    return form.get("action", ""), {i["name"]: i.get("value", "") for i in form.find_all("input") if i.get("name")}


@dataclass
class LoginResult:
    proxy: Meter = field(default_factory=Meter)
    total_wall: float = 0.0
    response: Any = None


class InProcessLogins:
    """Complete SAML->SAML logins through a werkzeug Client over the proxy, with the demo SP
    and IdP as in-process pysaml2 objects (what tests/flows does). Only the calls into the
    proxy are metered."""

    def __init__(self, layout):
        from satosa_orcid_plugin.devstack.demo_idp import DemoIdP
        from satosa_orcid_plugin.devstack.demo_sp import DemoSP

        self.layout = layout
        self.sp = DemoSP(layout)
        self.idp = DemoIdP(layout)

    def to_proxy_acs(self, client, user: str, result: LoginResult):
        """SP -> proxy -> IdP -> proxy ACS; returns the proxy's answer to the IdP's response."""
        from urllib.parse import parse_qs, urlsplit

        from saml2 import BINDING_HTTP_REDIRECT

        _request_id, url = self.sp.authn_request(relay_state="/protected")
        with result.proxy.timing():
            response = client.get(path_and_query(url))
        if response.status_code not in (302, 303):
            raise AssertionError(f"SSO: {response.status} {response.get_data(as_text=True)[:300]}")
        query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
        destination, fields = self.idp.respond(query["SAMLRequest"], query.get("RelayState"), BINDING_HTTP_REDIRECT,
                                               user, sigalg=query.get("SigAlg"), signature=query.get("Signature"))
        with result.proxy.timing():
            return client.post(urlsplit(destination).path, data=fields)

    def login(self, client, user: str) -> LoginResult:
        """A login that goes straight through (fast path, or no plugin)."""
        result = LoginResult()
        w0 = time.perf_counter()
        response = self.to_proxy_acs(client, user, result)
        result.total_wall = time.perf_counter() - w0
        result.response = response
        if response.status_code != 200 or b"SAMLResponse" not in response.get_data():
            raise AssertionError(f"expected the SAML response to the SP, got {response.status}: "
                                 f"{response.get_data(as_text=True)[:300]}")
        return result

    def released(self, response) -> dict[str, list[str]]:
        """What the SP receives (verifies the proxy's signature: not metered)."""
        action, fields = form_fields(response.get_data(as_text=True))
        if action != self.layout.sp_acs_url:
            raise AssertionError(f"the form posts to {action}, not the SP")
        return self.sp.parse_response(fields["SAMLResponse"]).attributes


def machine_description() -> str:
    import platform

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{os.cpu_count()} cores {cpu}{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


# --- PostgreSQL ------------------------------------------------------------------------------
@contextlib.contextmanager
def private_postgres_schema(base_url: str, prefix: str = "bench") -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh schema in the database of ``base_url``, dropped on exit. Yields the SQLAlchemy
    URL whose connections use it (``search_path``) and psycopg ``connect()`` keyword args."""
    import secrets

    import psycopg
    import sqlalchemy as sa

    base = sa.make_url(base_url)
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg")
    schema = f"{prefix}_{secrets.token_hex(6)}"
    connect = {"host": base.host or "127.0.0.1", "port": base.port or 5432, "user": base.username,
               "password": base.password, "dbname": base.database}
    url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    admin = psycopg.connect(**connect, autocommit=True)
    try:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        yield url, {**connect, "options": f"-csearch_path={schema}"}
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def postgres_unreachable(base_url: str) -> str | None:
    """None when PostgreSQL answers at ``base_url``, else a one-line reason."""
    try:
        import psycopg
        import sqlalchemy as sa

        u = sa.make_url(base_url)
        with psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
                             dbname=u.database, connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {base_url}: {type(exc).__name__}: {str(exc).strip()[:150]}"
