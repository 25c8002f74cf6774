"""Row family 2: what one consent hop costs the proxy, and how many back-channel requests it makes.

Complete hops of an unlinked user through the real WSGI app and proxy_conf/, with the ORCID
emulator on loopback: IdP response -> plugin (interstitial or redirect) -> ORCID (sign-in and
consent, played by a scripted browser, not timed) -> callback (code exchange, id_token check,
store write) -> SAML response to the SP. After each hop the link is removed again.

The plugin's *own* CPU is measured with ``time.thread_time()`` (CPU of this thread only)
around the plugin's entry points (``process`` and its endpoints), minus the time spent in
what the plugin hands the login on to (SATOSA's frontend, which signs the SAML response).
The emulator answers on other threads, so its CPU is never counted; while the plugin waits
for ORCID its thread uses no CPU. For that the micro-service class is a thin subclass of
``OrcidConnect`` (``ProbedOrcidConnect`` below) that only adds the timers; everything else,
including the configuration, is the real one. The proxy's *whole* extra CPU for a hop (SATOSA
state cookie, routing and page handling of the extra requests included) is reported next to
it as the hop login's proxy CPU minus a fast-path login's, measured alternately.

Back-channel requests are counted from the emulator's request log (token, jwks, userinfo,
revoke, discovery, API). The first hop of each app also fetches the JWKS (then cached); it is
a warm-up and not in the figures.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from satosa_orcid_plugin import pages
from satosa_orcid_plugin.devstack.scripted_browser import link_with_id
from satosa_orcid_plugin.microservice import OrcidConnect

from .common import (
    JOSIAH,
    ORCID_ATTRIBUTE,
    SCOPE,
    Deployment,
    InProcessLogins,
    LoginResult,
    Row,
    Summary,
    path_and_query,
    progress,
    target_row,
)

NAME = "hop"
PROBE_MODULE = f"{__name__}.ProbedOrcidConnect"


class PluginProbe:
    """Thread CPU inside the plugin's entry points, and inside what they call downstream;
    SQL statements and commits the store's engine runs meanwhile (SQLAlchemy events)."""

    def __init__(self) -> None:
        self.inside = 0.0
        self.downstream = 0.0
        self.parts: dict[str, float] = {}
        self.statements: list[str] = []
        self.commits = 0
        self._depth = 0
        self._engines: set[int] = set()

    def reset(self) -> None:
        self.inside = self.downstream = 0.0
        self.parts = {}
        self.statements = []
        self.commits = 0

    def count_sql(self, engine: Any) -> None:
        """Count every statement sent to the driver (BEGIN included) and every commit, on
        ``engine``; the counts are reset with the timers."""
        from sqlalchemy import event

        if id(engine) in self._engines:
            return
        self._engines.add(id(engine))

        def on_execute(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            self.statements.append(" ".join(statement.split())[:60])

        def on_commit(_conn: Any) -> None:
            self.commits += 1

        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "commit", on_commit)

    def part(self, name: str, fn: Callable) -> Callable:
        """Also account ``fn``'s thread CPU under ``name`` (a breakdown of the plugin's own time)."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.parts[name] = self.parts.get(name, 0.0) + time.thread_time() - t0

        return timed

    @property
    def own(self) -> float:
        return self.inside - self.downstream

    def entry(self, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside += time.thread_time() - t0
                self._depth -= 1

        timed.__name__ = getattr(fn, "__name__", "entry")
        return timed

    def downstream_of(self, fn: Callable | None) -> Callable | None:
        if fn is None:
            return None

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.downstream += time.thread_time() - t0

        return timed


PROBE = PluginProbe()


class StateCookieProbe:
    """Thread CPU in SATOSA's state cookie: ``cookie_to_state`` on every request and
    ``state_to_cookie`` on every response (LZMA and AES), wrapped where ``satosa.base`` calls
    them. Reset per login, like the plugin's probe."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def install(self) -> None:
        import satosa.base as base

        for name in ("cookie_to_state", "state_to_cookie"):
            fn = getattr(base, name)
            if getattr(fn, "probed", False):
                continue

            def timed(*args: Any, _fn: Callable = fn, **kwargs: Any) -> Any:
                t0 = time.thread_time()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    self.cpu += time.thread_time() - t0

            timed.probed = True  # type: ignore[attr-defined]
            setattr(base, name, timed)


STATE = StateCookieProbe()


class ProbedOrcidConnect(OrcidConnect):
    """OrcidConnect with timers around its entry points and around ``next`` (the rest of the
    chain: SATOSA's response handling and the frontend). Behaviour is unchanged."""

    @property
    def next(self) -> Callable | None:  # type: ignore[override]
        return self.__dict__.get("_probed_next")

    @next.setter
    def next(self, fn: Callable | None) -> None:
        self.__dict__["_probed_next"] = PROBE.downstream_of(fn)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        client, store = self.service.client, self.service.store
        PROBE.count_sql(store.db.engine)
        for obj, method, label in (
            (client, "exchange_code", "code exchange (HTTP client + id_token check)"),
            (client, "verify_id_token", "of which id_token check"),
            (store.links, "link", "store.links.link"),
            (store.once, "consume", "store.once.consume (replay guard)"),
            (store.decisions, "clear", "store.decisions.clear"),
            (store.links, "login_view", "store.links.login_view (link and decision)"),
            (store.revocations, "intend", "store.revocations.intend (write-ahead)"),
            (self.service.revoker, "housekeeping", "revocation housekeeping"),
        ):
            if hasattr(obj, method):  # (an older store, for an A/B against it, lacks some)
                setattr(obj, method, PROBE.part(label, getattr(obj, method)))
        if not getattr(pages.translated, "probed", False):  # the interstitial (and confirmation) page
            pages.translated = PROBE.part("pages (interstitial)", pages.translated)
            pages.translated.probed = True  # type: ignore[attr-defined]

    def process(self, context: Any, data: Any) -> Any:
        return PROBE.entry(super().process)(context, data)

    def register_endpoints(self) -> list[tuple[str, Any]]:
        return [(pattern, PROBE.entry(fn)) for pattern, fn in super().register_endpoints()]


def _probed_config(deployment: Deployment, **changes: Any):
    config = deployment.satosa_config(plugin=True, **changes)
    for entry in config["MICRO_SERVICES"]:
        if entry["name"] == "orcid":
            entry["module"] = PROBE_MODULE
    return config


def orcid_consent(layout, authorize_url: str) -> str:
    """Sign in at the emulator as its first demo account, authorize, return the callback URL."""
    from satosa_orcid_plugin.devstack.demo import orcid_sign_in
    from satosa_orcid_plugin.devstack.scripted_browser import ScriptedBrowser, has_button

    browser = ScriptedBrowser(stay_within=layout.emulator_url, timeout=10)
    response = browser.get(authorize_url)
    for _ in range(5):
        if response.is_redirect:
            return response.headers["Location"]
        if has_button(response, "Authorize access"):
            response = browser.submit_on(response, button="Authorize access")
        elif has_button(response, "Sign in"):
            response = orcid_sign_in(browser, response)
        else:
            raise AssertionError(f"unexpected emulator page {response.status_code} at {response.url}")
    raise AssertionError("the emulator did not redirect back")


def _back_channel(emulator) -> int:
    from satosa_orcid_plugin.devstack.emulator import BACK_CHANNEL

    return sum(1 for r in emulator.requests if r.endpoint in BACK_CHANNEL)


def one_hop(deployment: Deployment, logins: InProcessLogins, client, emulator, store, *,
            interstitial: bool) -> dict[str, float]:
    """alice (unlinked) logs in, connects ORCID; returns plugin CPU, proxy CPU, requests."""
    layout = deployment.layout
    result = LoginResult()
    PROBE.reset()
    STATE.cpu = 0.0
    before = _back_channel(emulator)
    response = logins.to_proxy_acs(client, "alice", result)
    if interstitial:
        if response.status_code != 200 or b"orcid/choice" not in response.get_data():
            raise AssertionError(f"expected the interstitial, got {response.status}")
        # "Connect" is a link straight to ORCID's authorize URL: pressing it costs the proxy nothing.
        authorize = link_with_id(response.get_data(as_text=True), "connect-orcid")
    else:
        authorize = response.headers.get("Location") if response.status_code == 302 else None
    if not authorize or not authorize.startswith(layout.emulator_url):
        raise AssertionError(f"expected the way to ORCID, got {response.status}")
    callback = orcid_consent(layout, authorize)  # the browser at ORCID: not timed
    with result.proxy.timing():
        response = client.get(path_and_query(callback))
    own, parts = PROBE.own, dict(PROBE.parts)
    statements, commits = list(PROBE.statements), PROBE.commits
    requests = _back_channel(emulator) - before
    released = logins.released(response)
    if released.get(ORCID_ATTRIBUTE) != [f"https://orcid.org/{JOSIAH}"]:
        raise AssertionError(f"the hop did not release the iD: {released.get(ORCID_ATTRIBUTE)}")
    # unlinked again for the next hop (not timed)
    store.links.unlink(f"alice@{SCOPE}", reason="bench", issuer=deployment.layout.idp_entity_id)
    return {"own": own, "proxy_cpu": result.proxy.cpu, "requests": requests, "parts": parts,
            "statements": statements, "commits": commits, "xmlsec1": result.proxy.children, "state": STATE.cpu}


def fast_login(logins: InProcessLogins, client) -> dict[str, float]:
    PROBE.reset()
    STATE.cpu = 0.0
    result = logins.login(client, "bob")
    return {"own": PROBE.own, "proxy_cpu": result.proxy.cpu, "parts": dict(PROBE.parts),
            "xmlsec1": result.proxy.children, "state": STATE.cpu}


def run(deployment: Deployment, *, quick: bool) -> list[Row]:
    from satosa_orcid_plugin.errors import NotFound
    from werkzeug.test import Client

    hops = 4 if quick else 16
    STATE.install()
    emulator = deployment.emulator()
    deployment.link_demo_users(("bob",))
    store = deployment.store()
    try:
        try:
            store.links.unlink(f"alice@{SCOPE}", reason="bench", issuer=deployment.layout.idp_entity_id)
        except NotFound:
            pass
        logins = InProcessLogins(deployment.layout)
        variants = {
            "interstitial": (Client(deployment.wsgi_app(_probed_config(deployment))), True),
            "direct": (Client(deployment.wsgi_app(_probed_config(deployment, interstitial={"enabled": False}))), False),
        }
        warmup: dict[str, int] = {}
        for name, (client, interstitial) in variants.items():
            warmup[name] = one_hop(deployment, logins, client, emulator, store, interstitial=interstitial)["requests"]
            fast_login(logins, client)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        fast: list[dict[str, float]] = []
        emulator.requests.clear()
        fast_requests = 0
        for i in range(hops):
            for name in (("interstitial", "direct") if i % 2 == 0 else ("direct", "interstitial")):
                client, interstitial = variants[name]
                results[name].append(one_hop(deployment, logins, client, emulator, store, interstitial=interstitial))
                before = _back_channel(emulator)
                fast.append(fast_login(logins, client))
                fast_requests += _back_channel(emulator) - before
            progress(f"hop: {i + 1}/{hops} hops per variant; plugin CPU this hop "
                     f"{results['interstitial'][-1]['own'] * 1000:.2f} ms (interstitial), "
                     f"{results['direct'][-1]['own'] * 1000:.2f} ms (direct)")
    finally:
        store.db.dispose()

    def breakdown(samples: list[dict[str, Any]]) -> str:
        import statistics

        names = sorted({k for x in samples for k in x["parts"]},
                       key=lambda k: -statistics.median([x["parts"].get(k, 0.0) for x in samples]))
        medians = {k: statistics.median([x["parts"].get(k, 0.0) * 1000 for x in samples]) for k in names}
        counted = sum(v for k, v in medians.items() if not k.startswith("of which"))
        rest = statistics.median([x["own"] * 1000 for x in samples]) - counted
        return "; ".join([f"{k} {v:.2f}" for k, v in medians.items()] + [f"rest of the plugin's code {rest:.2f}"])

    import statistics

    rows: list[Row] = []
    fast_own = Summary.of([f["own"] * 1000 for f in fast])
    fast_proxy = Summary.of([f["proxy_cpu"] * 1000 for f in fast])
    for name, label in (("interstitial", "with the interstitial (default)"), ("direct", "interstitial disabled")):
        own = Summary.of([r["own"] * 1000 for r in results[name]])
        proxy = Summary.of([r["proxy_cpu"] * 1000 for r in results[name]])
        counts = [int(r["requests"]) for r in results[name]]
        prefix = "hop" if name == "interstitial" else "hop.direct"
        rows += [
            target_row(f"{prefix}.plugin_cpu_ms.median", own.median, "ms", "<=", 5,
                       f"{label}; {own.n} hops; thread CPU in the plugin's own code, emulator and SATOSA "
                       f"frontend excluded. Median ms by part: {breakdown(results[name])}"),
            Row(f"{prefix}.plugin_cpu_ms.p95", own.p95, "ms"),
            Row(f"{prefix}.proxy_extra_cpu_ms.median", proxy.median - fast_proxy.median, "ms",
                note=f"{label}: whole proxy CPU of a hop login ({proxy.median:.1f} ms) minus a fast-path login "
                     f"({fast_proxy.median:.1f} ms): adds SATOSA's state cookie and routing for the extra request(s)"),
            Row(f"{prefix}.sql_statements_per_hop", statistics.median_low(len(r["statements"]) for r in results[name]),
                "statements", note=f"{label}: statements the plugin's store engine sent to the driver during a hop "
                                   f"(BEGIN included; counted with SQLAlchemy's before_cursor_execute), median over "
                                   f"{own.n} hops; one hop: " + " | ".join(results[name][-1]["statements"])),
            Row(f"{prefix}.commits_per_hop", statistics.median_low(r["commits"] for r in results[name]), "commits",
                note=f"{label}: COMMITs during a hop (SQLAlchemy's commit event), median"),
            target_row(f"{prefix}.backchannel_requests_per_hop", max(counts) if len(set(counts)) > 1 else counts[0],
                       "requests", "==", 1,
                       f"per hop after the first: {sorted(set(counts))}; first hop (JWKS not cached yet): {warmup[name]}"),
        ]
    # The whole proxy's CPU of a login with a hop over a fast-path login's, both through the same
    # app, interleaved login by login; A/A: the fast-path logins of even rounds over those of odd.
    hop_proxy = Summary.of([r["proxy_cpu"] * 1000 for r in results["interstitial"]])
    even = Summary.of([f["proxy_cpu"] * 1000 for f in fast[0::2]])
    odd = Summary.of([f["proxy_cpu"] * 1000 for f in fast[1::2]])
    rows += [
        target_row("login.proxy_cpu.hop_vs_fast", hop_proxy.median / fast_proxy.median, "x", "<=", 1.10,
                   f"whole proxy CPU (its thread + xmlsec1 children) of a login with a hop (interstitial, the "
                   f"default; the browser's visit to ORCID not counted) {hop_proxy.median:.1f} ms over a fast-path "
                   f"login {fast_proxy.median:.1f} ms, medians of {hop_proxy.n} and {fast_proxy.n} logins "
                   f"interleaved; direct (no interstitial) "
                   f"{Summary.of([r['proxy_cpu'] * 1000 for r in results['direct']]).median / fast_proxy.median:.3f}"),
        Row("login.proxy_cpu.aa_ratio", even.median / odd.median, "x",
            note="A/A control: fast-path logins of even rounds over those of odd rounds (same app, same "
                 "harness); its distance from 1 is the noise floor of hop_vs_fast in this run"),
    ]
    for name, samples in (("fast", fast), ("hop", results["interstitial"]), ("hop_direct", results["direct"])):
        total = statistics.median(s["proxy_cpu"] * 1000 for s in samples)
        xmlsec = statistics.median(s["xmlsec1"] * 1000 for s in samples)
        state = statistics.median(s["state"] * 1000 for s in samples)
        plugin = statistics.median(s["own"] * 1000 for s in samples)
        rows.append(Row(f"login.cpu_ms.{name}.total", total, "ms",
                        note=f"CPU of one {name.replace('_', ' ')} login in the proxy by part (medians): xmlsec1 "
                             f"{xmlsec:.1f}, SATOSA state cookie {state:.1f}, plugin {plugin:.1f}, rest (SATOSA, "
                             f"pysaml2, werkzeug) {total - xmlsec - state - plugin:.1f} ms"))
        rows += [Row(f"login.cpu_ms.{name}.{part}", value, "ms") for part, value in
                 (("xmlsec1", xmlsec), ("state_cookie", state), ("plugin", plugin),
                  ("rest", total - xmlsec - state - plugin))]
    rows += [
        Row("fast_path.plugin_cpu_ms.median", fast_own.median, "ms",
            note="the plugin's own thread CPU in a linked user's login (SQLite store). Median ms by part: "
                 + breakdown(fast)),
        Row("fast_path.plugin_cpu_ms.p95", fast_own.p95, "ms"),
        target_row("fast_path.backchannel_requests", fast_requests, "requests", "==", 0,
                   f"during {len(fast)} fast-path logins interleaved with the hops"),
    ]
    return rows
