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
    """Thread CPU inside the plugin's entry points, and inside what they call downstream."""

    def __init__(self) -> None:
        self.inside = 0.0
        self.downstream = 0.0
        self.parts: dict[str, float] = {}
        self._depth = 0

    def reset(self) -> None:
        self.inside = self.downstream = 0.0
        self.parts = {}

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
        for obj, method, label in (
            (client, "exchange_code", "code exchange (HTTP client + id_token check)"),
            (client, "verify_id_token", "of which id_token check"),
            (store.links, "link", "store.links.link"),
            (store.once, "consume", "store.once.consume (replay guard)"),
            (store.decisions, "clear", "store.decisions.clear"),
            (store.links, "get_active", "store.links.get_active"),
            (store.decisions, "get", "store.decisions.get"),
            (self, "_interstitial", "interstitial page"),
        ):
            setattr(obj, method, PROBE.part(label, getattr(obj, method)))

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
    requests = _back_channel(emulator) - before
    released = logins.released(response)
    if released.get(ORCID_ATTRIBUTE) != [f"https://orcid.org/{JOSIAH}"]:
        raise AssertionError(f"the hop did not release the iD: {released.get(ORCID_ATTRIBUTE)}")
    store.links.unlink(f"alice@{SCOPE}", reason="bench")  # unlinked again for the next hop (not timed)
    return {"own": own, "proxy_cpu": result.proxy.cpu, "requests": requests, "parts": parts}


def fast_login(logins: InProcessLogins, client) -> dict[str, float]:
    PROBE.reset()
    result = logins.login(client, "bob")
    return {"own": PROBE.own, "proxy_cpu": result.proxy.cpu, "parts": dict(PROBE.parts)}


def run(deployment: Deployment, *, quick: bool) -> list[Row]:
    from satosa_orcid_plugin.errors import NotFound
    from werkzeug.test import Client

    hops = 4 if quick else 16
    emulator = deployment.emulator()
    deployment.link_demo_users(("bob",))
    store = deployment.store()
    try:
        try:
            store.links.unlink(f"alice@{SCOPE}", reason="bench")
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
            target_row(f"{prefix}.backchannel_requests_per_hop", max(counts) if len(set(counts)) > 1 else counts[0],
                       "requests", "==", 1,
                       f"per hop after the first: {sorted(set(counts))}; first hop (JWKS not cached yet): {warmup[name]}"),
        ]
    rows += [
        Row("fast_path.plugin_cpu_ms.median", fast_own.median, "ms",
            note="the plugin's own thread CPU in a linked user's login (SQLite store). Median ms by part: "
                 + breakdown(fast)),
        Row("fast_path.plugin_cpu_ms.p95", fast_own.p95, "ms"),
        target_row("fast_path.backchannel_requests", fast_requests, "requests", "==", 0,
                   f"during {len(fast)} fast-path logins interleaved with the hops"),
    ]
    return rows
